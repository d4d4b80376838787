/* Latency statistics over the most recent frames (a fixed window: no allocation per frame). */
#ifndef MG_CLI_STATS_H
#define MG_CLI_STATS_H

#define LAT_WINDOW 4096

typedef struct lat_stats {
    double ms[LAT_WINDOW];
    long n;            /* frames seen */
    double sum_ms;
} lat_stats;

void lat_add(lat_stats *s, double ms);
/* q-th quantile (0..1) of the window, nearest rank. */
double lat_quantile(const lat_stats *s, double q);

#endif
