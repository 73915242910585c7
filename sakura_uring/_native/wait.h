/* wait.h — the one way the native side waits for the kernel (shim.c's sk_reap, kring.c's
 * sk_kr_wait and sk_kr_drain). Each caller says what it waits for and how it sleeps; the
 * order is the same for all: look; bring in a CQ overflow backlog (it posts no signal);
 * wake a SQPOLL thread that fell asleep with work queued; spin; sleep in slices until
 * the deadline. */
#ifndef SK_WAIT_H
#define SK_WAIT_H
#include <errno.h>
#include "clock.h"

struct sk_waiter {
    void *ctx;
    int  (*ready)(void *ctx);               /* what the caller waits for has happened */
    int  (*overflowed)(void *ctx);          /* CQEs wait in the kernel's overflow list */
    void (*flush)(void *ctx);               /* bring them into the CQ */
    void (*nudge)(void *ctx);               /* e.g. wake the SQPOLL thread (may be NULL) */
    int  (*sleep)(void *ctx, long long ns); /* sleep at most ns; 0, or -errno to stop */
    long long spin_until;                   /* busy-poll until then (sk_now_ns), 0: don't */
    long long deadline;                     /* give up then (sk_now_ns) */
    long long slice_ns;                     /* longest single sleep */
};

/* 1 once ready(), 0 at the deadline, or the negative errno sleep() stopped with. Static
 * inline with constant callbacks: the compiler inlines them at each caller. */
static inline int sk_wait(const struct sk_waiter *w)
{
    for (;;) {
        if (w->ready(w->ctx))
            return 1;
        if (w->overflowed(w->ctx)) {
            w->flush(w->ctx);
            continue;
        }
        if (w->nudge)
            w->nudge(w->ctx);
        long long now = sk_now_ns();
        if (now < w->spin_until) {
            while (!w->ready(w->ctx) && sk_now_ns() < w->spin_until)
                __builtin_ia32_pause();
            continue;
        }
        if (now >= w->deadline)
            return 0;
        long long slice = w->deadline - now;
        if (slice > w->slice_ns)
            slice = w->slice_ns;
        int rc = w->sleep(w->ctx, slice);
        if (rc < 0)
            return rc;
    }
}
#endif
