/* kring.c — the application's side of a kernel-handler ring (sakura_uring/kernel/).
 *
 * The SQ/CQ rings and the SQE array live in BPF_F_MMAPABLE array maps created by bcc;
 * io_uring_setup(IORING_SETUP_NO_MMAP) is pointed at their memory, so BPF handlers push
 * SQEs with plain map stores. The layout and the push protocol here must match
 * bpf/sakura.h: a 64-bit CAS reserves SQ slots, seq[] publishes a written group, and the
 * tail moves over whole groups with a 64-bit CAS on the {sq.head, sq.tail} word.
 *
 * Threads: any thread may push (sk_kr_start); one drainer thread calls sk_kr_drain. */
#include <errno.h>
#include <limits.h>
#include <linux/bpf.h>
#include <linux/futex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>
#include "clock.h"
#include "kring.h"
#include "wait.h"

/* setup flags newer than liburing 2.3's headers */
#define SKK_SETUP_NO_MMAP (1U << 14)
#define SKK_SETUP_NO_SQARRAY (1U << 16)


struct sk_kring {
    struct sk_kring_params p;
    int fd;                           /* the io_uring */
    uint8_t *sqes, *rings, *ctl_mem, *reqs_mem, *bufs;
    size_t sqes_len, rings_len, ctl_len, reqs_len, bufs_len;
    uint32_t *sq_head, *sq_tail, *sq_flags, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_cqe *cqes;
    __u64 *reserve, *seq;             /* in the control block (abi.h) */
    struct sk_ctl_head *ctl;
    uint64_t outstanding;             /* requests started and not yet collected */
    uint64_t async_outstanding;       /* of them, those the drainer reports */
    uint8_t *waiting;                 /* per slot: a caller sleeps in sk_kr_wait */
    uint8_t *sync;                    /* per slot: its caller collects it (sk_kr_wait) */
    int stopped;                      /* the STOP request was consumed */
    long long last_wake;              /* when the SQPOLL thread was last woken (ns) */
    uint64_t *cancel_ud;              /* per slot: the user_data last asked to cancel, 0 none */
    uint64_t cancelling;              /* slots with a cancel_ud */
    struct sk_kring_stats stats;
};


static int skk_enter(int fd, unsigned submit, unsigned min, unsigned flags, long long wait_ns)
{
    struct __kernel_timespec ts;
    struct io_uring_getevents_arg arg;
    memset(&arg, 0, sizeof(arg));
    if (wait_ns >= 0) {
        ts.tv_sec = wait_ns / 1000000000LL;
        ts.tv_nsec = wait_ns % 1000000000LL;
        arg.ts = (uint64_t)(uintptr_t)&ts;
        flags |= IORING_ENTER_EXT_ARG;
        long rc = syscall(__NR_io_uring_enter, fd, submit, min, flags, &arg, sizeof(arg));
        return rc < 0 ? -errno : (int)rc;
    }
    long rc = syscall(__NR_io_uring_enter, fd, submit, min, flags, NULL, 0);
    return rc < 0 ? -errno : (int)rc;
}

static void *skk_map(int map_fd, size_t len, int *err)
{
    void *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
    if (a == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    return a;
}

static size_t skk_pages(size_t n)
{
    return (n + 4095) & ~(size_t)4095;
}

void sk_kr_free(struct sk_kring *k)
{
    if (!k)
        return;
    if (k->fd >= 0)
        close(k->fd);
    if (k->sqes) munmap(k->sqes, k->sqes_len);
    if (k->rings) munmap(k->rings, k->rings_len);
    if (k->ctl_mem) munmap(k->ctl_mem, k->ctl_len);
    if (k->reqs_mem) munmap(k->reqs_mem, k->reqs_len);
    if (k->bufs) munmap(k->bufs, k->bufs_len);
    free(k->waiting);
    free(k->sync);
    free(k->cancel_ud);
    free(k);
}

/* Map the five maps and set the ring up on their memory. On failure *err is -errno and
 * *stage says which step failed (1 mmap, 2 io_uring_setup, 3 unexpected layout). */
struct sk_kring *sk_kr_new(const struct sk_kring_params *p, int *err, int *stage)
{
    struct sk_kring *k = calloc(1, sizeof(*k));
    if (!k) {
        *err = -ENOMEM;
        *stage = 0;
        return NULL;
    }
    k->p = *p;
    k->fd = -1;
    k->waiting = calloc(p->reqs, 1);
    k->sync = calloc(p->reqs, 1);
    k->cancel_ud = calloc(p->reqs, sizeof(uint64_t));
    if (!k->waiting || !k->sync || !k->cancel_ud) {
        free(k->waiting);
        free(k->sync);
        free(k->cancel_ud);
        free(k);
        *err = -ENOMEM;
        *stage = 0;
        return NULL;
    }
    k->sqes_len = skk_pages((size_t)p->entries * 64);
    k->rings_len = (size_t)p->ring_pages * 4096;
    k->ctl_len = skk_pages(SK_CTL_SEQ_OFF + 8 * (size_t)p->entries);
    k->reqs_len = skk_pages((size_t)p->reqs * sizeof(struct sk_req));
    k->bufs_len = skk_pages((size_t)p->reqs * p->buf_size);
    *err = 0;
    *stage = 1;
    if (!(k->sqes = skk_map(p->fd_sqes, k->sqes_len, err)) ||
        !(k->rings = skk_map(p->fd_rings, k->rings_len, err)) ||
        !(k->ctl_mem = skk_map(p->fd_ctl, k->ctl_len, err)) ||
        !(k->reqs_mem = skk_map(p->fd_reqs, k->reqs_len, err)) ||
        !(k->bufs = skk_map(p->fd_bufs, k->bufs_len, err))) {
        sk_kr_free(k);
        return NULL;
    }
    k->ctl = (struct sk_ctl_head *)k->ctl_mem;
    k->reserve = &k->ctl->reserve;
    k->seq = (__u64 *)(k->ctl_mem + SK_CTL_SEQ_OFF);
    k->ctl->bufs_uaddr = (uint64_t)(uintptr_t)k->bufs;
    k->ctl->tgid = (uint64_t)getpid();

    struct io_uring_params ip;
    memset(&ip, 0, sizeof(ip));
    ip.flags = SKK_SETUP_NO_MMAP | SKK_SETUP_NO_SQARRAY | IORING_SETUP_SQPOLL | IORING_SETUP_CQSIZE;
    ip.sq_thread_idle = p->sq_idle_ms;
    ip.cq_entries = p->cq_entries;
    if (p->sq_cpu >= 0) {
        ip.flags |= IORING_SETUP_SQ_AFF;
        ip.sq_thread_cpu = (unsigned)p->sq_cpu;
    }
    ip.sq_off.resv2 = (uint64_t)(uintptr_t)k->sqes;   /* sq_off.user_addr in newer headers */
    ip.cq_off.resv2 = (uint64_t)(uintptr_t)k->rings;  /* cq_off.user_addr */
    *stage = 2;
    long fd = syscall(__NR_io_uring_setup, p->entries, &ip);
    if (fd < 0) {
        *err = -errno;
        sk_kr_free(k);
        return NULL;
    }
    k->fd = (int)fd;
    *stage = 3;
    /* the push protocol CASes {head, tail} as one word: they must be adjacent at 0 */
    if (ip.sq_off.head != 0 || ip.sq_off.tail != 4 || ip.sq_entries != p->entries ||
        ip.cq_off.cqes + (size_t)ip.cq_entries * 16 > k->rings_len) {
        *err = -EPROTO;
        sk_kr_free(k);
        return NULL;
    }
    k->sq_head = (uint32_t *)(k->rings + ip.sq_off.head);
    k->sq_tail = (uint32_t *)(k->rings + ip.sq_off.tail);
    k->sq_flags = (uint32_t *)(k->rings + ip.sq_off.flags);
    k->cq_head = (uint32_t *)(k->rings + ip.cq_off.head);
    k->cq_tail = (uint32_t *)(k->rings + ip.cq_off.tail);
    k->cq_mask = (uint32_t *)(k->rings + ip.cq_off.ring_mask);
    k->cqes = (struct io_uring_cqe *)(k->rings + ip.cq_off.cqes);
    *stage = 0;
    return k;
}

int sk_kr_fd(struct sk_kring *k) { return k->fd; }
struct sk_req *sk_kr_req(struct sk_kring *k, unsigned i) { return (struct sk_req *)k->reqs_mem + i; }
uint8_t *sk_kr_buf(struct sk_kring *k, unsigned i) { return k->bufs + (size_t)i * k->p.buf_size; }
void sk_kr_stats(struct sk_kring *k, struct sk_kring_stats *out) { *out = k->stats; }
uint64_t sk_kr_outstanding(struct sk_kring *k) { return __atomic_load_n(&k->outstanding, __ATOMIC_ACQUIRE); }

/* Move the tail over every published group (no bound here, unlike BPF). */
static void skk_advance(struct sk_kring *k)
{
    uint64_t *ht = (uint64_t *)k->rings;
    for (;;) {
        uint64_t cur = __atomic_load_n(ht, __ATOMIC_ACQUIRE);
        uint32_t t = cur >> 32;
        uint64_t s = __atomic_load_n(&k->seq[t & (k->p.entries - 1)], __ATOMIC_ACQUIRE);
        if ((uint32_t)s != t + 1)
            return;
        uint64_t nw = (cur & 0xffffffffULL) | ((uint64_t)(t + (uint32_t)(s >> 32)) << 32);
        __atomic_compare_exchange_n(ht, &cur, nw, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
}

/* The flag stays set for the few microseconds the thread takes to wake up: one wakeup per
 * SKK_WAKE_GAP_NS is enough, more would only be system calls. */
#define SKK_WAKE_GAP_NS 50000LL
static void skk_wake_if_asleep(struct sk_kring *k)
{
    if (!(__atomic_load_n(k->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_NEED_WAKEUP))
        return;
    long long now = sk_now_ns(), last = __atomic_load_n(&k->last_wake, __ATOMIC_RELAXED);
    if (now - last < SKK_WAKE_GAP_NS ||
        !__atomic_compare_exchange_n(&k->last_wake, &last, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return;
    skk_enter(k->fd, 0, 0, IORING_ENTER_SQ_WAKEUP, -1);
    __atomic_fetch_add(&k->stats.wakeups, 1, __ATOMIC_RELAXED);
}

/* Push one SQE through the shared protocol. -EBUSY when the SQ is full. */
static int skk_push_sqe(struct sk_kring *k, uint8_t op, uint64_t user_data, uint64_t addr,
                        uint32_t op_flags)
{
    uint64_t r = __atomic_load_n(k->reserve, __ATOMIC_ACQUIRE);
    for (;;) {
        uint32_t head = __atomic_load_n(k->sq_head, __ATOMIC_ACQUIRE);
        if ((uint32_t)r + 1 - head > k->p.entries)
            return -EBUSY;
        if (__atomic_compare_exchange_n(k->reserve, &r, r + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
            break;
    }
    struct io_uring_sqe *s = (struct io_uring_sqe *)(k->sqes + (r & (k->p.entries - 1)) * 64);
    memset(s, 0, 64);
    s->opcode = op;
    s->fd = -1;
    s->addr = addr;
    s->cancel_flags = op_flags;       /* (the union of every op's flags) */
    s->user_data = user_data;
    __atomic_exchange_n(&k->seq[r & (k->p.entries - 1)], (uint64_t)(uint32_t)(r + 1) | (1ULL << 32),
                        __ATOMIC_SEQ_CST);
    skk_advance(k);
    skk_wake_if_asleep(k);
    return 0;
}

static int skk_push(struct sk_kring *k, uint8_t op, uint64_t user_data)
{
    return skk_push_sqe(k, op, user_data, 0, 0);
}

/* Ask the kernel to cancel the push group headed by `head` (ASYNC_CANCEL, every match) and
 * note it in cancel_ud[req] in place of `asked`; true when the note was made. A push the
 * full SQ refused is noted with bit 63 (never set in a handler's user_data, outside the
 * generation bits), so that the watchdog sees a head not yet asked for and asks again. */
static int skk_ask_cancel(struct sk_kring *k, unsigned req, uint64_t asked, uint64_t head)
{
    int pushed = skk_push_sqe(k, IORING_OP_ASYNC_CANCEL, SK_UD_CANCEL, head,
                              IORING_ASYNC_CANCEL_ALL) == 0;
    return __atomic_compare_exchange_n(&k->cancel_ud[req], &asked,
                                       pushed ? head : head | SK_UD_INTERNAL, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* A cancelled request whose latest push group changed since the last ASYNC_CANCEL gets
 * another (its handler was running when the cancel came and pushed once more, or the SQ
 * was full); one that is over leaves the books. Called by the watchdog, from any waiting
 * thread. */
static void skk_recancel(struct sk_kring *k)
{
    if (!__atomic_load_n(&k->cancelling, __ATOMIC_ACQUIRE))
        return;
    for (unsigned i = 0; i < k->p.reqs; i++) {
        uint64_t asked = __atomic_load_n(&k->cancel_ud[i], __ATOMIC_ACQUIRE);
        if (!asked)
            continue;
        struct sk_req *r = sk_kr_req(k, i);
        if (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) != SK_REQ_RUNNING ||
            ((r->gen & SK_UD_GEN_MASK) != ((asked >> SK_UD_GEN_SHIFT) & SK_UD_GEN_MASK))) {
            if (__atomic_compare_exchange_n(&k->cancel_ud[i], &asked, 0, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
                __atomic_fetch_sub(&k->cancelling, 1, __ATOMIC_RELAXED);
            continue;
        }
        uint64_t head = __atomic_load_n(&r->head_ud, __ATOMIC_ACQUIRE);
        if (!head)                    /* only the start NOP so far */
            head = (uint64_t)i | (r->gen & SK_UD_GEN_MASK) << SK_UD_GEN_SHIFT;
        if (head != asked)
            skk_ask_cancel(k, i, asked, head);
    }
}

/* Cancel the request in slot `req` if it is still the one of generation `gen` and
 * running: the dispatcher gives its events to no handler from now on (so it pushes
 * nothing more and is finished with -ECANCELED at its next completion), and the kernel is
 * asked to cancel its latest push group (a recv that would wait for ever). 1 when it was
 * running, 0 when it had finished already. */
int sk_kr_cancel(struct sk_kring *k, unsigned req, uint64_t gen)
{
    if (req >= k->p.reqs)
        return 0;
    struct sk_req *r = sk_kr_req(k, req);
    if ((r->gen & SK_UD_GEN_MASK) != (gen & SK_UD_GEN_MASK) ||
        __atomic_load_n(&r->state, __ATOMIC_ACQUIRE) != SK_REQ_RUNNING)
        return 0;
    __atomic_store_n(&r->cancel, 1, __ATOMIC_SEQ_CST);
    uint64_t head = __atomic_load_n(&r->head_ud, __ATOMIC_SEQ_CST);
    if (!head)                        /* only the start NOP so far */
        head = (uint64_t)req | ((gen & SK_UD_GEN_MASK) << SK_UD_GEN_SHIFT);
    if (skk_ask_cancel(k, req, 0, head))
        __atomic_fetch_add(&k->cancelling, 1, __ATOMIC_RELAXED);
    return 1;
}

/* The boot request: a NOP whose completion teaches the dispatch program which ring is
 * ours (its ctx pointer). Waits up to timeout_ns for the program to record it. */
int sk_kr_boot(struct sk_kring *k, uint64_t boot_ud, long long timeout_ns)
{
    int rc = skk_push(k, IORING_OP_NOP, boot_ud);
    if (rc)
        return rc;
    long long end = sk_now_ns() + timeout_ns;
    while (!__atomic_load_n(&k->ctl->ctx, __ATOMIC_ACQUIRE)) {
        if (sk_now_ns() > end)
            return -ETIMEDOUT;
        skk_wake_if_asleep(k);
        skk_enter(k->fd, 0, 1, IORING_ENTER_GETEVENTS, 1000000);
    }
    return 0;
}

/* Start request slot `req`: input written, generation bumped, then a NOP whose completion
 * is the handler's SK_START event. Returns the generation, or -EBUSY (SQ full). */
long long sk_kr_start(struct sk_kring *k, unsigned req, const uint64_t *args, unsigned nargs,
                      const uint8_t *data, unsigned len, int sync)
{
    struct sk_req *r = sk_kr_req(k, req);
    uint64_t gen = (r->gen + 1) & SK_UD_GEN_MASK;
    if (!gen)
        gen = 1;
    uint64_t asked = __atomic_exchange_n(&k->cancel_ud[req], 0, __ATOMIC_ACQ_REL);
    if (asked)                        /* the slot's last request was cancelled */
        __atomic_fetch_sub(&k->cancelling, 1, __ATOMIC_RELAXED);
    memset(r, 0, sizeof(*r));
    for (unsigned i = 0; i < nargs && i < 6; i++)
        r->arg[i] = args[i];
    if (len)
        memcpy(sk_kr_buf(k, req), data, len);
    r->in_len = len;
    r->inflight = 1;                  /* the start NOP */
    r->gen = gen;
    __atomic_store_n(&k->sync[req], sync ? 1 : 0, __ATOMIC_RELAXED);
    __atomic_store_n(&r->state, SK_REQ_RUNNING, __ATOMIC_RELEASE);
    __atomic_fetch_add(&k->outstanding, 1, __ATOMIC_RELAXED);
    if (!sync)
        __atomic_fetch_add(&k->async_outstanding, 1, __ATOMIC_RELAXED);
    int rc = skk_push(k, IORING_OP_NOP, (uint64_t)req | ((uint64_t)gen << 32));
    if (rc) {
        __atomic_store_n(&r->state, 0, __ATOMIC_RELEASE);
        __atomic_fetch_sub(&k->outstanding, 1, __ATOMIC_RELAXED);
        if (!sync)
            __atomic_fetch_sub(&k->async_outstanding, 1, __ATOMIC_RELAXED);
        return rc;
    }
    __atomic_fetch_add(&k->stats.started, 1, __ATOMIC_RELAXED);
    return (long long)gen;
}

/* Wait until run()'s request in slot `req` has finished: the handler called sk_finish and
 * nothing it pushed is in flight, as shared memory shows before any CQE is read, so no
 * other thread has to hand the result over. Spins spin_ns, then sleeps on a futex on the
 * state word (the drainer wakes it when it reads the final CQE), in slices of at most
 * 1 ms in which this caller also does the watchdog's work. 0 when finished, -ETIMEDOUT
 * after timeout_ns. */
static int skk_finished(struct sk_req *r, uint32_t *st)
{
    *st = __atomic_load_n(&r->state, __ATOMIC_ACQUIRE);
    return *st == SK_REQ_DONE && __atomic_load_n(&r->inflight, __ATOMIC_ACQUIRE) == 0;
}

/* Take a finished request to report it: the drainer and a timed-out run() may both try;
 * the CAS on the state word lets exactly one of them have it. */
static int skk_claim(struct sk_req *r)
{
    uint32_t done = SK_REQ_DONE;
    return __atomic_compare_exchange_n(&r->state, &done, SK_REQ_REPORTED, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static void skk_watchdog(struct sk_kring *k)
{
    if (__atomic_load_n(k->sq_tail, __ATOMIC_ACQUIRE) != __atomic_load_n(k->reserve, __ATOMIC_ACQUIRE))
        skk_advance(k);
    skk_recancel(k);
    if (__atomic_load_n(k->sq_tail, __ATOMIC_ACQUIRE) != __atomic_load_n(k->sq_head, __ATOMIC_ACQUIRE))
        skk_wake_if_asleep(k);
}

/* sk_kr_wait: a run() caller waiting for its own request to end, in shared memory. */
struct skk_req_wait {
    struct sk_kring *k;
    unsigned req;
    struct sk_req *r;
    uint32_t st;                      /* the state ready() saw: the futex waits on it */
    long long next_watch;
};

static int kr_req_ready(void *p)
{
    struct skk_req_wait *c = p;
    return skk_finished(c->r, &c->st);
}

static int kr_never(void *p) { return 0; }
static void kr_nothing(void *p) {}

/* every 1 ms: handler pushes the SQPOLL thread sleeps on, a tail left behind */
static void kr_req_nudge(void *p)
{
    struct skk_req_wait *c = p;
    long long now = sk_now_ns();
    if (now >= c->next_watch) {
        skk_watchdog(c->k);
        c->next_watch = now + 1000000LL;
    }
}

static int kr_req_sleep(void *p, long long ns)
{
    struct skk_req_wait *c = p;
    __atomic_store_n(&c->k->waiting[c->req], 1, __ATOMIC_SEQ_CST);
    struct timespec ts = { 0, ns };
    if (!skk_finished(c->r, &c->st))      /* the drainer wakes us only once it sees the flag */
        syscall(__NR_futex, &c->r->state, FUTEX_WAIT, c->st, &ts, NULL, 0);
    __atomic_store_n(&c->k->waiting[c->req], 0, __ATOMIC_RELEASE);
    return 0;
}

int sk_kr_wait(struct sk_kring *k, unsigned req, long long spin_ns, long long timeout_ns)
{
    long long now = sk_now_ns();
    struct skk_req_wait c = { k, req, sk_kr_req(k, req), 0, now + 1000000LL };
    struct sk_waiter w = {
        .ctx = &c, .ready = kr_req_ready, .overflowed = kr_never, .flush = kr_nothing,
        .nudge = kr_req_nudge, .sleep = kr_req_sleep,
        .spin_until = now + (spin_ns < timeout_ns ? spin_ns : timeout_ns),
        .deadline = now + timeout_ns,
        .slice_ns = 1000000LL,            /* so the watchdog runs every 1 ms */
    };
    return sk_wait(&w) == 1 ? 0 : -ETIMEDOUT;
}

/* run() collected slot `req` (after sk_kr_wait): it is free again. */
void sk_kr_release(struct sk_kring *k, unsigned req)
{
    __atomic_store_n(&sk_kr_req(k, req)->state, 0, __ATOMIC_RELEASE);
    __atomic_fetch_sub(&k->outstanding, 1, __ATOMIC_RELAXED);
}

/* A run() gave up waiting: the drainer reports the request from now on. 1 when it has
 * already finished (the caller collects it after all), 0 when the drainer will. */
int sk_kr_abandon(struct sk_kring *k, unsigned req)
{
    struct sk_req *r = sk_kr_req(k, req);
    __atomic_fetch_add(&k->async_outstanding, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&k->sync[req], 0, __ATOMIC_SEQ_CST);
    uint32_t st;
    if (!skk_finished(r, &st))
        return 0;
    /* finished: the drainer may have skipped its final CQE while the slot was still ours,
     * or may be reporting it right now */
    if (skk_claim(r)) {
        __atomic_fetch_sub(&k->async_outstanding, 1, __ATOMIC_RELAXED);
        return 1;
    }
    return 0;
}

/* Ask the drainer to return (close()). */
int sk_kr_stop(struct sk_kring *k)
{
    return skk_push(k, IORING_OP_NOP, SK_UD_STOP);
}

/* Consume CQEs; write the slots of requests that finished into out[] (each exactly once).
 * Spins spin_ns, then sleeps in io_uring_enter; gives up after wait_ns (-1: never, so an
 * idle drainer never comes back for the GIL). Returns the count, 0 on timeout,
 * -ESHUTDOWN after sk_kr_stop(). Also the watchdog: finishes tail moves a BPF producer left (its
 * advance loop is bounded), wakes a sleeping SQPOLL thread that has work, flushes a CQ
 * overflow backlog. */
/* sk_kr_drain: the drainer waiting for CQEs of the rings in BPF map memory. */
static int kr_cq_ready(void *p)
{
    struct sk_kring *k = p;
    return __atomic_load_n(k->cq_tail, __ATOMIC_ACQUIRE) != *k->cq_head;
}

static int kr_cq_overflowed(void *p)
{
    struct sk_kring *k = p;
    return (__atomic_load_n(k->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_CQ_OVERFLOW) != 0;
}

static void kr_cq_flush(void *p)
{
    struct sk_kring *k = p;
    skk_enter(k->fd, 0, 0, IORING_ENTER_GETEVENTS, -1);
    k->stats.overflow_flushes++;
}

static void kr_cq_nudge(void *p)
{
    skk_watchdog(p);
}

/* Only run() callers' requests out (they see the end in shared memory): lazy, sleep until
 * half the CQ has filled or 1 ms passed, so that their CQEs neither wake this thread nor
 * take its CPU (an async request started meanwhile waits that 1 ms at most). */
static int kr_lazy(struct sk_kring *k)
{
    return sk_kr_outstanding(k) && !__atomic_load_n(&k->async_outstanding, __ATOMIC_ACQUIRE);
}

static int kr_cq_sleep(void *p, long long ns)
{
    struct sk_kring *k = p;
    /* 1 ms slices while requests are out, so the watchdog runs */
    if (sk_kr_outstanding(k) && ns > 1000000LL)
        ns = 1000000LL;
    k->stats.waits++;
    int rc = skk_enter(k->fd, 0, kr_lazy(k) ? k->p.cq_entries / 2 : 1, IORING_ENTER_GETEVENTS, ns);
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN)
        return rc;
    return 0;
}

int sk_kr_drain(struct sk_kring *k, uint32_t *out, unsigned max, long long wait_ns,
                long long spin_ns)
{
    long long start = sk_now_ns();
    struct sk_waiter w = {
        .ctx = k, .ready = kr_cq_ready, .overflowed = kr_cq_overflowed, .flush = kr_cq_flush,
        .nudge = kr_cq_nudge, .sleep = kr_cq_sleep,
        .deadline = wait_ns >= 0 ? start + wait_ns : LLONG_MAX, .slice_ns = 100000000LL,
    };
    for (;;) {
        unsigned n = 0;
        uint32_t head = *k->cq_head, mask = *k->cq_mask;
        uint32_t tail = __atomic_load_n(k->cq_tail, __ATOMIC_ACQUIRE);
        while (head != tail && n < max) {
            struct io_uring_cqe *cqe = &k->cqes[head & mask];
            uint64_t ud = cqe->user_data;
            head++;
            k->stats.cqes++;
            if (ud & SK_UD_INTERNAL) {
                k->stopped |= ud == SK_UD_STOP;   /* sticky: this batch may report first */
                continue;
            }
            uint32_t req = ud & SK_UD_REQ_MASK;
            if (req >= k->p.reqs)
                continue;
            struct sk_req *r = sk_kr_req(k, req);
            if ((r->gen & SK_UD_GEN_MASK) != ((ud >> SK_UD_GEN_SHIFT) & SK_UD_GEN_MASK))
                continue;
            uint32_t st;
            if (!skk_finished(r, &st))
                continue;
            if (__atomic_load_n(&k->sync[req], __ATOMIC_ACQUIRE)) {
                /* its caller collects it; wake the caller if it sleeps */
                if (__atomic_load_n(&k->waiting[req], __ATOMIC_ACQUIRE))
                    syscall(__NR_futex, &r->state, FUTEX_WAKE, 1, NULL, NULL, 0);
                continue;
            }
            if (!skk_claim(r))
                continue;
            out[n++] = req;
            __atomic_fetch_sub(&k->outstanding, 1, __ATOMIC_RELAXED);
            __atomic_fetch_sub(&k->async_outstanding, 1, __ATOMIC_RELAXED);
        }
        __atomic_store_n(k->cq_head, head, __ATOMIC_RELEASE);
        if (n) {
            k->stats.finished += n;
            return (int)n;
        }
        if (k->stopped)
            return -ESHUTDOWN;
        if (head != tail)
            continue;
        skk_watchdog(k);              /* even while CQEs keep coming, none of them reported */
        /* progress, or the first look: spin afresh before sleeping (not when lazy) */
        w.spin_until = kr_lazy(k) ? 0 : sk_now_ns() + spin_ns;
        int rc = sk_wait(&w);
        if (rc <= 0)
            return rc;                /* 0: the wait is over; or an error */
    }
}

/* Can this kernel put a ring in BPF map memory? Creates a 2-page mmapable array map (its
 * pages are not physically contiguous) and asks for a NO_MMAP | NO_SQARRAY | SQPOLL ring
 * on it. 0 = yes; else -errno, *stage 1 = map create, 2 = mmap, 3 = io_uring_setup. */
int sk_kr_probe(int *stage)
{
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_type = BPF_MAP_TYPE_ARRAY;
    a.key_size = 4;
    a.value_size = 4096;
    a.max_entries = 5;
    a.map_flags = BPF_F_MMAPABLE;
    *stage = 1;
    int mfd = (int)syscall(__NR_bpf, BPF_MAP_CREATE, &a, sizeof(a));
    if (mfd < 0)
        return -errno;
    *stage = 2;
    uint8_t *mem = mmap(NULL, 5 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (mem == MAP_FAILED) {
        int e = -errno;
        close(mfd);
        return e;
    }
    struct io_uring_params ip;
    memset(&ip, 0, sizeof(ip));
    ip.flags = SKK_SETUP_NO_MMAP | SKK_SETUP_NO_SQARRAY | IORING_SETUP_SQPOLL;
    ip.sq_thread_idle = 1;
    ip.flags |= IORING_SETUP_CQSIZE;
    ip.cq_entries = 256;
    ip.sq_off.resv2 = (uint64_t)(uintptr_t)mem;              /* 128 SQEs: pages 0-1 */
    ip.cq_off.resv2 = (uint64_t)(uintptr_t)(mem + 2 * 4096); /* rings: pages 2-4 */
    *stage = 3;
    long fd = syscall(__NR_io_uring_setup, 128, &ip);
    int e = fd < 0 ? -errno : 0;
    if (fd >= 0)
        close((int)fd);
    munmap(mem, 5 * 4096);
    close(mfd);
    if (!e)
        *stage = 0;
    return e;
}
