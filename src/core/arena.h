/* One arena per lifetime: a layout function is run twice, first with base == NULL to
 * measure, then over the one allocation to hand out pointers. Nothing is allocated later. */
#ifndef MG_CORE_ARENA_H
#define MG_CORE_ARENA_H

#include <stddef.h>

/* Returns base + *off (or NULL while measuring) and advances *off by n floats, keeping
 * every block 64-byte aligned. */
static inline float *arena_take(float *base, size_t *off, size_t n) {
    float *p = base ? base + *off : NULL;
    *off += (n + 15) & ~(size_t)15;
    return p;
}

#endif
