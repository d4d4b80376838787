/* The one-slot queue (see slot.h). Waits use CLOCK_MONOTONIC deadlines. */
#include "cli/slot.h"

#include <errno.h>
#include <time.h>

int slot_init(slot *s) {
    s->item = NULL;
    s->closed = s->cancelled = 0;
    pthread_condattr_t a;
    if (pthread_condattr_init(&a)) return -1;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int r = pthread_mutex_init(&s->mu, NULL) || pthread_cond_init(&s->cv, &a);
    pthread_condattr_destroy(&a);
    return r ? -1 : 0;
}

void slot_destroy(slot *s) {
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

static struct timespec deadline(int ms) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) t.tv_sec++, t.tv_nsec -= 1000000000L;
    return t;
}

/* Waits on the slot's condition (mutex held); 1 when the timeout passed. */
static int wait_until(slot *s, int timeout_ms, const struct timespec *dl) {
    if (timeout_ms < 0) {
        pthread_cond_wait(&s->cv, &s->mu);
        return 0;
    }
    return pthread_cond_timedwait(&s->cv, &s->mu, dl) == ETIMEDOUT;
}

slot_result slot_put(slot *s, void *item, int replace, void **dropped, int timeout_ms) {
    struct timespec dl = deadline(timeout_ms < 0 ? 0 : timeout_ms);
    slot_result r = SLOT_OK;
    if (dropped) *dropped = NULL;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->cancelled) { r = SLOT_CANCELLED; break; }
        if (!s->item) { s->item = item; break; }
        if (replace) {
            *dropped = s->item;
            s->item = item;
            break;
        }
        if (wait_until(s, timeout_ms, &dl)) { r = SLOT_TIMEOUT; break; }
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return r;
}

slot_result slot_take(slot *s, void **item, int timeout_ms) {
    struct timespec dl = deadline(timeout_ms < 0 ? 0 : timeout_ms);
    slot_result r = SLOT_OK;
    *item = NULL;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->cancelled) { r = SLOT_CANCELLED; break; }
        if (s->item) {
            *item = s->item;
            s->item = NULL;
            break;
        }
        if (s->closed) { r = SLOT_CLOSED; break; }
        if (wait_until(s, timeout_ms, &dl)) { r = SLOT_TIMEOUT; break; }
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return r;
}

void *slot_steal(slot *s) {
    pthread_mutex_lock(&s->mu);
    void *it = s->item;
    s->item = NULL;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return it;
}

void slot_close(slot *s) {
    pthread_mutex_lock(&s->mu);
    s->closed = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void slot_cancel(slot *s) {
    pthread_mutex_lock(&s->mu);
    s->cancelled = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}
