#ifndef MG_CORE_TIMING_H
#define MG_CORE_TIMING_H
/* Monotonic wall clock in milliseconds. */
double mg_now_ms(void);
#endif
