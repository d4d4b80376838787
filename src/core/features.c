#include "mirage.h"

#ifndef MG_FEATURES
#define MG_FEATURES ""
#endif

const char *mg_build_features(void) { return MG_FEATURES[0] ? MG_FEATURES : "no optional features"; }
