/* A one-slot queue between two threads: the hand-over point of the run loop (capture -> model,
 * model -> writer). It holds at most one item, so nothing stale piles up between stages.
 *
 * The producer either waits for the slot to empty (every frame is processed) or replaces the
 * waiting item (the source's clock rules: the item it pushes out is returned as dropped).
 * Closing says "no more items": the consumer still gets the waiting one, then NULL. Cancelling
 * says "stop now": every wait returns at once. Every wait has a timeout so that callers can
 * look at other things (signals) without a second wake-up mechanism. */
#ifndef MG_CLI_SLOT_H
#define MG_CLI_SLOT_H

#include <pthread.h>

typedef enum slot_result {
    SLOT_OK = 0,
    SLOT_TIMEOUT,   /* nothing happened within the timeout */
    SLOT_CLOSED,    /* take: the producer is done and the slot is empty */
    SLOT_CANCELLED, /* the slot was cancelled: put did not put, take got nothing */
} slot_result;

typedef struct slot {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled on every change */
    void *item;
    int closed, cancelled;
} slot;

int slot_init(slot *s); /* 0 ok */
void slot_destroy(slot *s);
/* Puts item. Full slot: with replace, swaps the waiting item out into *dropped and returns at
 * once; without, waits (up to timeout_ms, < 0 forever) for the consumer to take it. */
slot_result slot_put(slot *s, void *item, int replace, void **dropped, int timeout_ms);
/* Takes the waiting item into *item, waiting up to timeout_ms (< 0: forever). */
slot_result slot_take(slot *s, void **item, int timeout_ms);
/* Takes the waiting item, if any, without waiting (NULL if none). */
void *slot_steal(slot *s);
void slot_close(slot *s);
void slot_cancel(slot *s);

#endif
