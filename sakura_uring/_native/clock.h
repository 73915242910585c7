/* clock.h — the one clock of the native side (shim.c and kring.c). */
#ifndef SK_CLOCK_H
#define SK_CLOCK_H
#include <time.h>

static inline long long sk_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}
#endif
