/* dispatch.c — the one tracepoint program of a KernelRing, compiled after sakura.h and the
 * handler. It keeps only this ring's completions (the ring's kernel pointer is learned from
 * the boot request: the tgid alone would also match the process's other rings), drops
 * completions of an earlier use of a request slot, and calls the handler's on_complete().
 * A request whose handler returns -errno, or leaves it with nothing in flight, is finished
 * here so that the caller is never left waiting.
 *
 * A CQE that finds the CQ full goes to the kernel's overflow list and fires
 * io_uring:io_uring_cqe_overflow instead of io_uring_complete: both are dispatched. */
static __always_inline int sk__dispatch(u64 ctx, u64 user_data, s32 res, u32 cflags,
                                        u64 kreq)
{
    u32 z = 0;
    struct sk_ctl *c = sk_ctl.lookup(&z);
    if (!c)
        return 0;
    u64 ud = user_data;
    if ((u64)ctx != c->ctx) {
        /* learn our ring from the boot request: tgid and a random token must match */
        if (c->ctx == 0 && ud == SK_BOOT_UD && (bpf_get_current_pid_tgid() >> 32) == c->tgid)
            __sync_val_compare_and_swap(&c->ctx, 0, (u64)ctx);
        else if ((bpf_get_current_pid_tgid() >> 32) == c->tgid)
            sk__count(SK_STAT_FOREIGN);
        return 0;
    }
    if (ud & SK_UD_INTERNAL)
        return 0;
    u32 req = ud & 0xffff;
    if (req >= SK_REQS)
        return 0;
    struct sk_req *r = sk_reqs.lookup(&req);
    if (!r)
        return 0;
    u64 gen = (ud >> 32) & 0x7fffffff;
    if ((r->gen & 0x7fffffff) != gen) {
        sk__count(SK_STAT_STALE);
        return 0;
    }
    if (r->state != SK_REQ_RUNNING) {
        sk__count(SK_STAT_AFTER_FINISH);
        sk__release(r);
        return 0;
    }
    struct sk_event e = {};
    e.req = req;
    e.step = (ud >> 16) & 0xffff;
    e.res = res;
    e.cflags = cflags;
    e.kreq = kreq;
    e.r = r;
    e.c = c;
    e.gen = gen;
    int rc;
    if (*(volatile u32 *)&r->cancel) {
        /* cancelled (Future.cancel, run(timeout=)): the handler pushes nothing more */
        sk__count(SK_STAT_CANCELLED);
        rc = -ECANCELED;
    } else {
        sk__count(SK_STAT_EVENTS);
        rc = on_complete(&e);
    }
    if (rc < 0 && r->state == SK_REQ_RUNNING)
        sk_finish(&e, rc, 0, 0);
    /* The event counts as in flight until here, so "zero" means nothing can follow. But
     * the moment the count is zero the request may be over for user space: a run() caller
     * collects it, frees the slot, and another thread starts the slot's next request
     * (sk_kr_start: gen, then state = RUNNING). So after the release this event may only
     * look at the slot through its generation: state first, then gen (the order
     * sk_kr_start writes them in reverse), and only a RUNNING request of *this* generation
     * was left with nothing in flight. (Reading the state alone finished the next
     * request as stalled: ~5 in 10^7 with every producer at once.) */
    if (sk__release(r)) {
        u32 st = *(volatile u32 *)&r->state;
        u64 now_gen = *(volatile u64 *)&r->gen & 0x7fffffff;
        if (st == SK_REQ_RUNNING && now_gen == gen) {
            sk__count(SK_STAT_STALLED);
            sk_finish(&e, SK_ERR_STALLED, 0, 0);
        }
    }
    return 0;
}

TRACEPOINT_PROBE(io_uring, io_uring_complete)
{
    return sk__dispatch((u64)args->ctx, args->user_data, args->res, SK_CQE_FLAGS, SK_KREQ);
}

#ifdef SK_HAVE_OVERFLOW_TP
TRACEPOINT_PROBE(io_uring, io_uring_cqe_overflow)
{
    /* a CQE parked on the overflow list names no request: sk_file_size() says -ENOSYS */
    return sk__dispatch((u64)args->ctx, args->user_data, args->res, args->cflags, 0);
}
#endif
