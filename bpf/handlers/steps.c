/* steps.c — the benchmark's chain: arg0 steps, each pushed by the handler when the one
 * before it completes. arg1 = 0: NOPs; arg1 = 1: read 4 KiB of fd arg2 at offset 0.
 * Finishes with the number of steps run; a failed step ends the request with its error.
 * The step count lives in v[0] (user_data carries only 16 bits of step id). */
SK_NARGS(3);                   /* steps, kind, fd */

static int on_complete(struct sk_event *e)
{
    struct sk_req *r = e->r;
    if (e->step != SK_START) {
        if (e->res < 0)
            return e->res;
        r->v[0]++;
    }
    if (r->v[0] < r->arg[0]) {
        if (r->arg[1])
            return sk_read(e, 1, r->arg[2], 0, 4096, 0);
        return sk_nop(e, 1);
    }
    return sk_finish(e, r->v[0], 0, 0);
}
