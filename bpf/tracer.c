/* tracer.c — how the kernel dispatches each io_uring request of a program: one process,
 * its children, or the whole system (sakura_uring/trace/dispatch.py compiles it with bcc;
 * tracepoints only).
 *
 * Defined before this file by the loader, from the kernel's tracefs formats:
 *   TGID                the traced process (0 with TRACE_ALL)
 *   TRACE_ALL           every process (each gets its row in procs on its first request)
 *   FOLLOW              children forked by a traced process are traced too
 *   COUNT_SYSCALLS      attach raw_syscalls:sys_enter (every system call on the machine
 *                       then runs this program; without it the syscall columns are empty)
 *   SUBMIT_TP           replaced in the text: io_uring_submit_req (>= 5.19) or _submit_sqe
 *   KEY_<event>         how that event names a request: its address (`req`, >= 5.19 on
 *                       every event) or, before that, user_data ^ ctx
 *   HAVE_COMPLETE_REQ   io_uring_complete names the request (else found by user_data)
 *   HAVE_CFLAGS         io_uring_complete has cflags (IORING_CQE_F_MORE: multishot)
 *   HAVE_SQ_THREAD      the submit tracepoint has `sq_thread`
 *   HAVE_<event>        for the optional events (QUEUE_ASYNC, POLL_ARM, LINK, FAIL_LINK,
 *                       CQE_OVERFLOW, CREATE), when they name requests the same way
 *   SKIP_BPF_SYSCALLS   the tracer traces its own process: its bpf() calls don't count
 *   HAVE_ATOMIC_OR      BPF atomics that return a value (5.12): the followed processes are
 *                       also kept in a bitmap, so an untraced task costs an array read
 * A missing field or event removes a column, never the tool.
 */
#define OPS 256
#define ECANCELED_ 125
#define CQE_F_MORE 2
#define LAT_SLOTS 32          /* bpf_log2l(latency in us): 1 holds 0-1 us, s 2^(s-1)..2^s-1 */
enum {                        /* columns of counts[opcode] */
    C_SUB_APP = 0,            /* submitted by an application thread */
    C_SUB_SQPOLL,             /* submitted by the SQPOLL thread (iou-sqp-*) */
    C_PUNTED,                 /* handed to an io-wq worker (io_uring_queue_async_work) */
    C_POLLED,                 /* armed a poll before completing (io_uring_poll_arm) */
    C_BY_SUBMITTER,           /* CQE posted by the thread that submitted it */
    C_BY_SQPOLL,              /* CQE posted by the SQPOLL thread */
    C_BY_IOWQ,                /* CQE posted by an io-wq worker */
    C_BY_OTHER,               /* CQE posted by another task, or in an interrupt */
    C_DONE,                   /* CQEs, all paths */
    C_ERRORS,                 /* result < 0, -ECANCELED apart */
    C_CANCELED,               /* result -ECANCELED */
    C_SHORT,                  /* result >= 0 and yet it broke its chain: a short transfer */
    C_BROKE,                  /* failed and broke the chain it was part of (once per chain) */
    C_COLS,
};
enum {                        /* totals[] */
    T_OVERFLOWS = 0, T_CHAINS, T_CHAINS_DONE, T_CHAINS_BROKEN, T_LINKS_FAILED,
    T_LINKED, T_UNMATCHED, T_TOTALS,
};
enum { P_POLL = 1 };
enum { K_APP = 0, K_SQPOLL = 1, K_IOWQ = 2 };
enum { CTL_FOLLOWING = 0, CTL_SEQ, CTL_N };

struct rinfo {
    u64 ts;
    u32 tid;                  /* the submitting thread */
    u8 opcode;
    u8 path;
};
struct member {               /* a request in a chain */
    u64 chain;                /* the chain's own id (never an address: those are reused) */
    s64 res;                  /* its result, once it completed */
    u64 done;
};
struct chain {                /* 64-bit fields: LLVM 14 in bcc has no 32-bit atomics */
    u64 left;                 /* members not completed yet */
    u64 broken;
};
struct proc {                 /* one traced process */
    u64 submitted;
    u64 done;
    u64 syscalls;
    u64 enters;
    char comm[16];            /* its name when it exited */
};

BPF_HASH(procs, u32, struct proc, 16384);                     /* traced tgids */
BPF_TABLE("lru_hash", u64, u32, rings, 8192);                 /* ctx -> owner tgid */
BPF_TABLE("lru_hash", u64, struct rinfo, reqs, 65536);        /* req -> what we know */
BPF_TABLE("lru_hash", u64, struct member, member_of, 65536);  /* req -> its chain */
BPF_TABLE("lru_hash", u64, u64, by_ud, 65536);                /* user_data ^ ctx -> req */
BPF_HASH(chains, u64, struct chain, 16384);                  /* chain id -> chain */
BPF_ARRAY(ctl, u64, CTL_N);
#ifdef HAVE_ATOMIC_OR
#define PID_WORDS 65536       /* 2^22 pids (PID_MAX_LIMIT on 64-bit), a bit each */
BPF_ARRAY(tracked, u64, PID_WORDS);
#endif
BPF_ARRAY(counts, u64, OPS * C_COLS);
BPF_ARRAY(totals, u64, T_TOTALS);
BPF_ARRAY(sysnr, u64, 512);                                   /* system calls by number */
BPF_ARRAY(lat, u64, OPS * LAT_SLOTS);                         /* [opcode][log2 slot] */

static __always_inline void add(u64 *v)
{
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline void bump(u32 opcode, u32 col)
{
    u32 k = (opcode & (OPS - 1)) * C_COLS + col;
    add(counts.lookup(&k));
}

static __always_inline void total(u32 which)
{
    add(totals.lookup(&which));
}

/* The traced process `tgid` belongs to, or 0. Untraced tasks cost one compare while the
 * tracer follows no child (the common case for raw_syscalls, which fires machine-wide). */
static __always_inline struct proc *traced(u32 tgid)
{
#ifndef TRACE_ALL
    if (tgid != TGID) {
        u32 k = CTL_FOLLOWING;
        u64 *following = ctl.lookup(&k);
        if (!following || !*following)
            return 0;
#ifdef HAVE_ATOMIC_OR
        u32 w = tgid / 64;
        u64 *word = tracked.lookup(&w);
        if (!word || !(*word & (1ULL << (tgid % 64))))
            return 0;
#endif
    }
#endif
    return procs.lookup(&tgid);
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

static __always_inline u32 *ours(u64 ctx)
{
    return rings.lookup(&ctx);
}

static __always_inline void mark(u64 req, u8 path)
{
    struct rinfo *ri = reqs.lookup(&req);
    if (ri)
        ri->path |= path;
}

TRACEPOINT_PROBE(io_uring, SUBMIT_TP)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
#ifdef TRACE_ALL
    struct proc zero = {};
    struct proc *p = procs.lookup_or_try_init(&tgid, &zero);
#else
    struct proc *p = traced(tgid);
#endif
    if (!p)
        return 0;
    add(&p->submitted);
    u64 ctx = (u64)args->ctx;
    u32 *owner = rings.lookup(&ctx);
    if (!owner || *owner != tgid)              /* a lookup costs less than an update */
        rings.update(&ctx, &tgid);
    u32 op = args->opcode;
#ifdef HAVE_SQ_THREAD
    int k = args->sq_thread ? K_SQPOLL : kind();
#else
    int k = kind();
#endif
    bump(op, k == K_SQPOLL ? C_SUB_SQPOLL : C_SUB_APP);
    u64 req = KEY_SUBMIT;
    struct rinfo ri = { .ts = bpf_ktime_get_ns(), .tid = (u32)id, .opcode = op, .path = 0 };
    reqs.update(&req, &ri);
    u64 ud = args->user_data ^ ctx;          /* io_uring_cqe_overflow names no req */
    by_ud.update(&ud, &req);
    return 0;
}

#ifdef HAVE_CREATE
/* A new ring may sit at a freed ring's address: forget the old one's owner. */
TRACEPOINT_PROBE(io_uring, io_uring_create)
{
    u64 ctx = (u64)args->ctx;
    rings.delete(&ctx);
    return 0;
}
#endif

#ifdef HAVE_QUEUE_ASYNC
TRACEPOINT_PROBE(io_uring, io_uring_queue_async_work)
{
    if (!ours((u64)args->ctx))
        return 0;
    u64 req = KEY_QUEUE_ASYNC;
    struct rinfo *ri = reqs.lookup(&req);      /* its opcode as submitted (5.10 has none) */
    bump(ri ? ri->opcode : OPS - 1, C_PUNTED);
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

#ifdef HAVE_LINK
TRACEPOINT_PROBE(io_uring, io_uring_link)
{
    if (!ours((u64)args->ctx))
        return 0;
    /* target_req is the request linked before this one (the chain's last so far) */
    u64 req = (u64)args->req, prev = (u64)args->target_req;
    total(T_LINKED);
    /* a member that posted its CQE is an earlier request at this address: stale */
    struct member *pm = member_of.lookup(&prev);
    u64 id;
    if (pm && !pm->done) {
        id = pm->chain;
    } else {                                   /* the second member: a chain begins */
        u32 k = CTL_SEQ;
        u64 *seq = ctl.lookup(&k);
        if (!seq)
            return 0;
        id = __sync_fetch_and_add(seq, 1) + 1;
        struct chain fresh = { .left = 1, .broken = 0 };
        chains.update(&id, &fresh);
        struct member head = { .chain = id };
        member_of.update(&prev, &head);
        total(T_CHAINS);
    }
    struct chain *c = chains.lookup(&id);
    if (!c)
        return 0;
    __sync_fetch_and_add(&c->left, 1);
    struct member m = { .chain = id };
    member_of.update(&req, &m);
    return 0;
}
#endif

#ifdef HAVE_FAIL_LINK
TRACEPOINT_PROBE(io_uring, io_uring_fail_link)
{
    if (!ours((u64)args->ctx))
        return 0;
    /* fires once for each member `link` that the failure of `req` cancels */
    total(T_LINKS_FAILED);
    u64 link = (u64)args->link, req = (u64)args->req;
    struct member *m = member_of.lookup(&link);
    if (!m)
        return 0;
    u64 id = m->chain;
    struct chain *c = chains.lookup(&id);
    if (c && __sync_val_compare_and_swap(&c->broken, 0, 1) == 0) {
        total(T_CHAINS_BROKEN);
        bump(args->opcode, C_BROKE);
        /* the failing request posted its CQE before its links are failed: a result that
         * is not an error means the kernel judged the transfer short */
        struct member *f = member_of.lookup(&req);
        if (f && f->done && f->res >= 0)
            bump(args->opcode, C_SHORT);
    }
    return 0;
}
#endif

/* A CQE: its opcode, path and latency from what the submission recorded. */
static __always_inline void done(u64 req, int known, u32 owner, s64 res, u32 cflags)
{
    int k = kind();
    u32 op = OPS - 1;                          /* unknown */
    u8 path = 0;
    u32 col = k == K_SQPOLL ? C_BY_SQPOLL : k == K_IOWQ ? C_BY_IOWQ : C_BY_OTHER;
    int more = (cflags & CQE_F_MORE) != 0;    /* a multishot request posts more */
    struct rinfo *ri = known ? reqs.lookup(&req) : 0;
    if (ri) {
        op = ri->opcode;
        path = ri->path;
        if (col == C_BY_OTHER && ri->tid == (u32)bpf_get_current_pid_tgid())
            col = C_BY_SUBMITTER;
        u64 now = bpf_ktime_get_ns();
        u32 slot = bpf_log2l((now - ri->ts) / 1000);
        u32 at = (op & (OPS - 1)) * LAT_SLOTS + (slot < LAT_SLOTS ? slot : LAT_SLOTS - 1);
        add(lat.lookup(&at));
        if (more)
            ri->ts = now;                      /* its next CQE: time since this one */
        else
            reqs.delete(&req);
    } else {
        total(T_UNMATCHED);
    }
    struct proc *p = procs.lookup(&owner);
    if (p)
        add(&p->done);
#ifdef HAVE_LINK   /* chains need io_uring_link; fetching atomics need 5.12 anyway */
    struct member *m = known && !more ? member_of.lookup(&req) : 0;
    if (m && !m->done) {
        m->res = res;                          /* kept for io_uring_fail_link */
        m->done = 1;
        u64 id = m->chain;
        struct chain *c = chains.lookup(&id);
        if (c && __sync_fetch_and_add(&c->left, -1) == 1) {
            total(T_CHAINS_DONE);
            chains.delete(&id);
        }
    }
#endif
    if (path & P_POLL)
        bump(op, C_POLLED);
    if (res == -ECANCELED_)
        bump(op, C_CANCELED);
    else if (res < 0)
        bump(op, C_ERRORS);
    bump(op, col);
    bump(op, C_DONE);
}

TRACEPOINT_PROBE(io_uring, io_uring_complete)
{
    u64 ctx = (u64)args->ctx;
    u32 *owner = ours(ctx);
    if (!owner)
        return 0;
#ifdef HAVE_CFLAGS
    u32 cflags = args->cflags;
#else
    u32 cflags = 0;
#endif
#ifdef HAVE_COMPLETE_REQ
    done((u64)args->req, 1, *owner, args->res, cflags);
#else
    u64 ud = args->user_data ^ ctx;
    u64 *req = by_ud.lookup(&ud);
    done(req ? *req : 0, req != 0, *owner, args->res, cflags);
#endif
    return 0;
}

#ifdef HAVE_CQE_OVERFLOW
/* A CQE that finds the CQ full goes to the overflow list and fires this instead of
 * io_uring_complete (it becomes visible when the list is flushed). */
TRACEPOINT_PROBE(io_uring, io_uring_cqe_overflow)
{
    u64 ctx = (u64)args->ctx;
    u32 *owner = ours(ctx);
    if (!owner)
        return 0;
    total(T_OVERFLOWS);
    u64 ud = args->user_data ^ ctx;
    u64 *req = by_ud.lookup(&ud);
    done(req ? *req : 0, req != 0, *owner, args->res, args->cflags);
    return 0;
}
#endif

#ifdef FOLLOW
/* A traced process's fork or clone: the child is traced from its first instruction. A
 * thread's id gets a row too, harmlessly: no process has that id while the thread lives,
 * and a later process given it by an untraced parent loses the row here. */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 parent = bpf_get_current_pid_tgid() >> 32, child = args->child_pid;
    u32 w = child / 64;
    if (traced(parent)) {
        struct proc zero = {};
        procs.update(&child, &zero);
#ifdef HAVE_ATOMIC_OR
        u64 *word = tracked.lookup(&w);
        if (word)
            __sync_fetch_and_or(word, 1ULL << (child % 64));
#endif
        u32 k = CTL_FOLLOWING;
        u64 *following = ctl.lookup(&k);
        if (following)
            *following = 1;
    } else if (procs.lookup(&child)) {
        procs.delete(&child);
#ifdef HAVE_ATOMIC_OR
        u64 *word = tracked.lookup(&w);
        if (word)
            __sync_fetch_and_and(word, ~(1ULL << (child % 64)));
#endif
    }
    return 0;
}
#endif

/* A traced process's name as it ends (a row outlives its /proc entry). */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    if ((u32)id != id >> 32)
        return 0;
    struct proc *p = traced(id >> 32);
    if (p)
        bpf_get_current_comm(&p->comm, sizeof(p->comm));
    return 0;
}

#ifdef COUNT_SYSCALLS
/* A raw tracepoint: every system call on the machine runs this, and the raw form skips
 * the perf tracepoint's copy of the arguments into a buffer first (args[1]: the number). */
RAW_TRACEPOINT_PROBE(sys_enter)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct proc *p = traced(tgid);
    if (!p)
        return 0;
    u64 id = ctx->args[1];
#ifdef SKIP_BPF_SYSCALLS
    if (id == 321 && tgid == TGID)             /* bpf(): the tracer reading its maps */
        return 0;
#endif
    add(&p->syscalls);
    if (id == 426)                             /* io_uring_enter */
        add(&p->enters);
    u32 nr = id < 512 ? id : 511;
    add(sysnr.lookup(&nr));
    return 0;
}
#endif
