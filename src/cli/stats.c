#include "cli/stats.h"

#include <stdlib.h>
#include <string.h>

void lat_add(lat_stats *s, double ms) {
    s->ms[s->n % LAT_WINDOW] = ms;
    s->n++;
    s->sum_ms += ms;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double lat_quantile(const lat_stats *s, double q) {
    long n = s->n < LAT_WINDOW ? s->n : LAT_WINDOW;
    if (n == 0) return 0;
    static _Thread_local double tmp[LAT_WINDOW];
    memcpy(tmp, s->ms, n * sizeof(double));
    qsort(tmp, n, sizeof(double), cmp_double);
    long i = (long)(q * n);
    return tmp[i < n ? i : n - 1];
}
