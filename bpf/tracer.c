/* tracer.c — how the kernel dispatches each io_uring request of one process
 * (sakura_uring/trace/dispatch.py compiles it with bcc; tracepoints only).
 *
 * Defined before this file by the loader, from the kernel's tracefs formats:
 *   TGID                the traced process
 *   SUBMIT_TP           replaced in the text: io_uring_submit_req (>= 5.19) or _submit_sqe
 *   KEY_<event>         how that event names a request: its address (`req`, >= 5.19 on
 *                       every event) or, before that, user_data ^ ctx
 *   HAVE_COMPLETE_REQ   io_uring_complete names the request (else found by user_data)
 *   HAVE_SQ_THREAD      the submit tracepoint has `sq_thread`
 *   HAVE_<event>        for the optional events (QUEUE_ASYNC, POLL_ARM, TASK_ADD, LINK,
 *                       FAIL_LINK, CQE_OVERFLOW), when they name requests the same way
 *   SKIP_BPF_SYSCALLS   the tracer traces its own process: its bpf() calls don't count
 * A missing field or event removes a column, never the tool.
 */
#define OPS 256
enum {                        /* columns of counts[opcode] */
    C_SUB_APP = 0,            /* submitted by an application thread */
    C_SUB_SQPOLL,             /* submitted by the SQPOLL thread (iou-sqp-*) */
    C_PUNTED,                 /* handed to an io-wq worker (iou-wrk-*) */
    C_DONE_APP,               /* completed inline, in an application thread */
    C_DONE_SQPOLL,            /* completed inline, in the SQPOLL thread */
    C_DONE_IOWQ,              /* completed by an io-wq worker */
    C_DONE_TW,                /* completed through task_work */
    C_DONE_POLL,              /* waited in poll, then completed (through task_work) */
    C_DONE,                   /* completed, all paths */
    C_BROKE,                  /* failed and broke the chain it headed or was part of */
    C_COLS,
};
enum {                        /* totals[] */
    T_SYSCALLS = 0, T_ENTERS, T_OVERFLOWS, T_CHAINS, T_CHAINS_DONE, T_CHAINS_BROKEN,
    T_LINKED, T_UNMATCHED, T_TOTALS,
};
enum { P_IOWQ = 1, P_POLL = 2, P_TW = 4 };
enum { K_APP = 0, K_SQPOLL = 1, K_IOWQ = 2 };

struct rinfo {
    u64 ts;
    u8 opcode;
    u8 path;
};
struct chain {                /* 64-bit fields: LLVM 14 in bcc has no 32-bit atomics */
    u64 left;                 /* members not completed yet */
    u64 broken;
};
struct hkey {
    u32 opcode;
    u32 slot;                 /* log2(latency in us) */
};

BPF_HASH(rings, u64, u8, 64);                                  /* ctx pointers of TGID */
BPF_TABLE("lru_hash", u64, struct rinfo, reqs, 65536);        /* req -> what we know */
BPF_TABLE("lru_hash", u64, u64, member_of, 65536);            /* req -> chain head */
BPF_TABLE("lru_hash", u64, u64, by_ud, 65536);                /* user_data ^ ctx -> req */
BPF_HASH(chains, u64, struct chain, 16384);                  /* head -> chain */
BPF_ARRAY(counts, u64, OPS * C_COLS);
BPF_ARRAY(totals, u64, T_TOTALS);
BPF_ARRAY(sysnr, u64, 512);                                   /* system calls by number */
BPF_HISTOGRAM(lat, struct hkey, OPS * 32);

static __always_inline void bump(u32 opcode, u32 col)
{
    u32 k = (opcode & (OPS - 1)) * C_COLS + col;
    u64 *v = counts.lookup(&k);
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline void total(u32 which)
{
    u64 *v = totals.lookup(&which);
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline int kind(void)
{
    char comm[16] = {};
    bpf_get_current_comm(&comm, sizeof(comm));
    u64 head = *(u64 *)comm;
    if (head == 0x2d7071732d756f69ULL)       /* "iou-sqp-" */
        return K_SQPOLL;
    if (head == 0x2d6b72772d756f69ULL)       /* "iou-wrk-" */
        return K_IOWQ;
    return K_APP;
}

static __always_inline int ours(u64 ctx)
{
    return rings.lookup(&ctx) != 0;
}

static __always_inline void mark(u64 req, u8 path)
{
    struct rinfo *ri = reqs.lookup(&req);
    if (ri)
        ri->path |= path;
}

TRACEPOINT_PROBE(io_uring, SUBMIT_TP)
{
    if ((bpf_get_current_pid_tgid() >> 32) != TGID)
        return 0;
    u64 ctx = (u64)args->ctx;
    u8 one = 1;
    rings.update(&ctx, &one);
    u32 op = args->opcode;
#ifdef HAVE_SQ_THREAD
    int k = args->sq_thread ? K_SQPOLL : kind();
#else
    int k = kind();
#endif
    bump(op, k == K_SQPOLL ? C_SUB_SQPOLL : C_SUB_APP);
    u64 req = KEY_SUBMIT;
    struct rinfo ri = { .ts = bpf_ktime_get_ns(), .opcode = op, .path = 0 };
    reqs.update(&req, &ri);
    u64 ud = args->user_data ^ ctx;          /* io_uring_cqe_overflow names no req */
    by_ud.update(&ud, &req);
    return 0;
}

#ifdef HAVE_QUEUE_ASYNC
TRACEPOINT_PROBE(io_uring, io_uring_queue_async_work)
{
    if (!ours((u64)args->ctx))
        return 0;
    u64 req = KEY_QUEUE_ASYNC;
    struct rinfo *ri = reqs.lookup(&req);      /* its opcode as submitted (5.10 has none) */
    bump(ri ? ri->opcode : OPS - 1, C_PUNTED);
    mark(req, P_IOWQ);
    return 0;
}
#endif

#ifdef HAVE_POLL_ARM
TRACEPOINT_PROBE(io_uring, io_uring_poll_arm)
{
    if (ours((u64)args->ctx))
        mark(KEY_POLL_ARM, P_POLL);
    return 0;
}
#endif

#ifdef HAVE_TASK_ADD
TRACEPOINT_PROBE(io_uring, io_uring_task_add)
{
    if (ours((u64)args->ctx))
        mark(KEY_TASK_ADD, P_TW);
    return 0;
}
#endif

#ifdef HAVE_LINK
TRACEPOINT_PROBE(io_uring, io_uring_link)
{
    if (!ours((u64)args->ctx))
        return 0;
    /* target_req is the request linked before this one (the chain's last so far) */
    u64 req = (u64)args->req, head = (u64)args->target_req;
    u64 *h = member_of.lookup(&head);
    if (h)
        head = *h;
    total(T_LINKED);
    struct chain *c = chains.lookup(&head);
    if (!c) {                                  /* the second member: a chain begins */
        struct chain fresh = { .left = 1, .broken = 0 };
        chains.update(&head, &fresh);
        member_of.update(&head, &head);
        total(T_CHAINS);
        c = chains.lookup(&head);
        if (!c)
            return 0;
    }
    __sync_fetch_and_add(&c->left, 1);
    member_of.update(&req, &head);
    return 0;
}
#endif

#ifdef HAVE_FAIL_LINK
TRACEPOINT_PROBE(io_uring, io_uring_fail_link)
{
    if (!ours((u64)args->ctx))
        return 0;
    /* the failing request has completed (and left member_of) already: find the chain
     * through `link`, the member this event cancels */
    u64 link = (u64)args->link;
    u64 *head = member_of.lookup(&link);
    if (!head)
        return 0;
    u64 h = *head;
    struct chain *c = chains.lookup(&h);
    /* fires once per member it cancels: count the chain, and its failing op, once */
    if (c && __sync_val_compare_and_swap(&c->broken, 0, 1) == 0) {
        total(T_CHAINS_BROKEN);
        bump(args->opcode, C_BROKE);
    }
    return 0;
}
#endif

/* A completion: its opcode, path and latency from what the submission recorded. */
static __always_inline void done(u64 req, int known)
{
    int k = kind();
    u32 op = OPS - 1;                          /* unknown */
    u8 path = 0;
    struct rinfo *ri = known ? reqs.lookup(&req) : 0;
    if (ri) {
        op = ri->opcode;
        path = ri->path;
        u64 us = (bpf_ktime_get_ns() - ri->ts) / 1000;
        struct hkey hk = { .opcode = op, .slot = bpf_log2l(us) };
        lat.increment(hk);
        reqs.delete(&req);
    } else {
        total(T_UNMATCHED);
    }
#ifdef HAVE_LINK   /* chains need io_uring_link; fetching atomics need 5.12 anyway */
    u64 *head = known ? member_of.lookup(&req) : 0;
    if (head) {
        u64 h = *head;
        struct chain *c = chains.lookup(&h);
        if (c && __sync_fetch_and_add(&c->left, -1) == 1) {
            total(T_CHAINS_DONE);
            chains.delete(&h);
        }
        member_of.delete(&req);
    }
#endif
    u32 col;
    if (path & P_POLL)
        col = C_DONE_POLL;
    else if (path & P_IOWQ || k == K_IOWQ)
        col = C_DONE_IOWQ;
    else if (path & P_TW)
        col = C_DONE_TW;
    else
        col = k == K_SQPOLL ? C_DONE_SQPOLL : C_DONE_APP;
    bump(op, col);
    bump(op, C_DONE);
}

TRACEPOINT_PROBE(io_uring, io_uring_complete)
{
    if (!ours((u64)args->ctx))
        return 0;
#ifdef HAVE_COMPLETE_REQ
    done((u64)args->req, 1);
#else
    u64 ud = args->user_data ^ (u64)args->ctx;
    u64 *req = by_ud.lookup(&ud);
    done(req ? *req : 0, req != 0);
#endif
    return 0;
}

#ifdef HAVE_CQE_OVERFLOW
/* A CQE that finds the CQ full goes to the overflow list and fires this instead of
 * io_uring_complete (it becomes visible when the list is flushed). */
TRACEPOINT_PROBE(io_uring, io_uring_cqe_overflow)
{
    u64 ctx = (u64)args->ctx;
    if (!ours(ctx))
        return 0;
    total(T_OVERFLOWS);
    u64 ud = args->user_data ^ ctx;
    u64 *req = by_ud.lookup(&ud);
    done(req ? *req : 0, req != 0);
    return 0;
}
#endif

TRACEPOINT_PROBE(raw_syscalls, sys_enter)
{
    if ((bpf_get_current_pid_tgid() >> 32) != TGID)
        return 0;
#ifdef SKIP_BPF_SYSCALLS
    if (args->id == 321)                       /* bpf(): the tracer reading its maps */
        return 0;
#endif
    total(T_SYSCALLS);
    if (args->id == 426)                       /* io_uring_enter */
        total(T_ENTERS);
    u32 nr = args->id < 512 ? args->id : 511;
    u64 *v = sysnr.lookup(&nr);
    if (v)
        __sync_fetch_and_add(v, 1);
    return 0;
}
