/* sakura_uring native shim (compiled by cffi in API mode against liburing 2.3).
 *
 * Threading contract (enforced by sakura_uring/ring.py, not here):
 *   - one publisher at a time: sk_submit_chain, sk_cancel_pending, sk_wake, sk_lay_nops
 *     run under the ring's publish lock;
 *   - one reaper at a time: sk_reap runs under the ring's reap lock;
 *   - the reaper never touches the SQ's private tail, so the two can run at once.
 * cffi releases the GIL around every call, so a blocking sk_reap never holds it. */
#include <liburing.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "shim.h"
#include "wait.h"

#define SK_PENDING   INT32_MIN   /* result slot not yet filled by a CQE */
#define SK_UD_IGNORE 0ULL        /* internal request whose CQE is dropped */
#define SK_UD_WAKE   1ULL        /* internal NOP that makes a blocked reaper return */
#define SK_SLICE_NS  (100LL * 1000 * 1000)  /* longest single kernel wait */

enum { SK_LINK_NONE = 0, SK_LINK_SOFT = 1, SK_LINK_HARD = 2 };
enum { SK_FD_NONE = 0, SK_FD_PLAIN = 1, SK_FD_LOCAL_SLOT = 2, SK_FD_RING_SLOT = 3 };
enum { SK_ADDR_VALUE = 0, SK_ADDR_ARENA = 1, SK_ADDR_BUFFER = 2 };
enum { SK_TIMEOUT_NONE = 0, SK_TIMEOUT_REL = 1, SK_TIMEOUT_ABS = 2 };
#define SK_OP_BIND 56            /* IORING_OP_BIND (6.11), newer than liburing 2.3 */

/* What one chain was given by Ring._lay: its slots, buffers and arena. */
struct sk_given {
    unsigned nslots, nbufs, arena_len;
    const int32_t *slots;
    const uint64_t *buf_addr;
    const int32_t *buf_index;
    const uint32_t *buf_len;
};

struct sk_inflight {
    int32_t  *res;      /* NULL when this tag is not in flight */
    uint32_t  total;    /* SQEs (so CQEs) this chain posts */
    uint32_t  got;
};

struct sk_ring {
    struct io_uring ring;
    unsigned flags;
    unsigned slots, buffers, buffer_size, max_chains;
    void *buf_mem;
    size_t buf_len;
    struct sk_inflight *inflight;   /* indexed by tag, 1..max_chains */
    uint8_t *registered;            /* per slot: held by sk_register_slot */
    struct sk_stats stats;
};


static void ns_to_ts(struct __kernel_timespec *ts, long long ns)
{
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

struct sk_ring *sk_ring_new(unsigned entries, unsigned cq_entries, unsigned flags,
                            unsigned sq_idle_ms, unsigned slots, unsigned buffers,
                            unsigned buffer_size, unsigned max_chains, int sq_cpu, int *err)
{
    struct sk_ring *r = calloc(1, sizeof *r);
    struct io_uring_params p;
    int ret;

    *err = 0;
    if (!r) { *err = -ENOMEM; return NULL; }
    /* Nice-to-have flags first (5.18/5.19); an older kernel refuses them with EINVAL. */
    unsigned optional = IORING_SETUP_SUBMIT_ALL |
                        ((flags & IORING_SETUP_SQPOLL) ? 0 : IORING_SETUP_COOP_TASKRUN);
    for (int attempt = 0; attempt < 2; attempt++) {
        memset(&p, 0, sizeof p);
        p.flags = flags | (attempt == 0 ? optional : 0);
        p.sq_thread_idle = sq_idle_ms;
        if (sq_cpu >= 0) {
            p.flags |= IORING_SETUP_SQ_AFF;
            p.sq_thread_cpu = (unsigned)sq_cpu;
        }
        if (cq_entries) {
            p.flags |= IORING_SETUP_CQSIZE;
            p.cq_entries = cq_entries;
        }
        ret = io_uring_queue_init_params(entries, &r->ring, &p);
        if (ret != -EINVAL) break;
    }
    if (ret < 0) { *err = ret; free(r); return NULL; }
    r->flags = r->ring.flags;

    if (slots) {
        ret = io_uring_register_files_sparse(&r->ring, slots);
        if (ret == -EINVAL) {   /* before 5.19: a table of -1 entries is sparse too */
            int *fds = malloc(sizeof(int) * slots);
            if (!fds) { ret = -ENOMEM; goto fail; }
            for (unsigned i = 0; i < slots; i++) fds[i] = -1;
            ret = io_uring_register_files(&r->ring, fds, slots);
            free(fds);
        }
        if (ret < 0) goto fail;
    }
    r->slots = slots;
    r->registered = calloc(slots ? slots : 1, 1);
    if (!r->registered) { ret = -ENOMEM; goto fail; }

    if (buffers) {
        r->buf_len = (size_t)buffers * buffer_size;
        r->buf_mem = mmap(NULL, r->buf_len, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r->buf_mem == MAP_FAILED) { r->buf_mem = NULL; ret = -errno; goto fail; }
        struct iovec *iov = calloc(buffers, sizeof *iov);
        if (!iov) { ret = -ENOMEM; goto fail; }
        for (unsigned i = 0; i < buffers; i++) {
            iov[i].iov_base = (char *)r->buf_mem + (size_t)i * buffer_size;
            iov[i].iov_len = buffer_size;
        }
        ret = io_uring_register_buffers(&r->ring, iov, buffers);
        free(iov);
        if (ret < 0) goto fail;
    }
    r->buffers = buffers;
    r->buffer_size = buffer_size;

    r->max_chains = max_chains;
    r->inflight = calloc(max_chains + 1, sizeof *r->inflight);
    if (!r->inflight) { ret = -ENOMEM; goto fail; }
    return r;
fail:
    *err = ret;
    sk_ring_free(r);
    return NULL;
}

void sk_ring_free(struct sk_ring *r)
{
    if (!r) return;
    io_uring_queue_exit(&r->ring);   /* also drops registered files and buffers */
    if (r->buf_mem) munmap(r->buf_mem, r->buf_len);
    free(r->inflight);
    free(r->registered);
    free(r);
}

void sk_ring_info(struct sk_ring *r, struct sk_info *o)
{
    o->sq_entries = r->ring.sq.ring_entries;
    o->cq_entries = r->ring.cq.ring_entries;
    o->features = r->ring.features;
    o->flags = r->flags;
    o->fd = r->ring.ring_fd;
    o->slots = r->slots;
    o->buffers = r->buffers;
    o->buffer_size = r->buffer_size;
}

void sk_ring_stats(struct sk_ring *r, struct sk_stats *o) { *o = r->stats; }

void *sk_buffer_addr(struct sk_ring *r, unsigned index)
{
    if (index >= r->buffers) return NULL;
    return (char *)r->buf_mem + (size_t)index * r->buffer_size;
}


/* SQEs published but not yet consumed by the kernel; reads only kernel-visible words,
 * so the reaper may call it while a publisher is laying SQEs. */
unsigned sk_sq_pending(struct sk_ring *r)
{
    return io_uring_smp_load_acquire(r->ring.sq.ktail) -
           io_uring_smp_load_acquire(r->ring.sq.khead);
}

unsigned sk_sq_flags(struct sk_ring *r) { return IO_URING_READ_ONCE(*r->ring.sq.kflags); }
unsigned sk_cq_overflow(struct sk_ring *r) { return IO_URING_READ_ONCE(*r->ring.cq.koverflow); }

static int fd_of(uint8_t kind, int32_t v, const int32_t *slots)
{
    return kind == SK_FD_LOCAL_SLOT ? slots[v] : v;
}

static void *addr_of(uint8_t kind, uint64_t v, const uint64_t *buf_addr, const char *arena)
{
    switch (kind) {
    case SK_ADDR_ARENA:  return (void *)(arena + v);
    case SK_ADDR_BUFFER: return (void *)(uintptr_t)buf_addr[v];
    default:             return (void *)(uintptr_t)v;
    }
}

/* Ops prepared with liburing's own helpers; any other opcode is prepared by number
 * (io_uring_prep_rw + the raw fields), so kernels newer than liburing 2.3 still work. */
static const uint8_t known_ops[] = {
    IORING_OP_NOP, IORING_OP_OPENAT, IORING_OP_READ, IORING_OP_WRITE, IORING_OP_CLOSE,
    IORING_OP_RECV, IORING_OP_SEND, IORING_OP_ACCEPT, IORING_OP_CONNECT, IORING_OP_SOCKET,
    IORING_OP_STATX, IORING_OP_FSYNC, IORING_OP_SPLICE,
};

int sk_known_ops(uint8_t *out, unsigned max)
{
    unsigned n = sizeof known_ops;
    if (n > max) n = max;
    memcpy(out, known_ops, n);
    return (int)n;
}

static void prep_step(struct io_uring_sqe *sqe, const struct sk_step *s, const struct sk_given *g,
                      const char *arena)
{
    const int32_t *slots = g->slots;
    const uint64_t *buf_addr = g->buf_addr;
    const int32_t *buf_index = g->buf_index;
    int fd = fd_of(s->fd_kind, s->fd, slots);
    int fixed = s->fd_kind == SK_FD_LOCAL_SLOT || s->fd_kind == SK_FD_RING_SLOT;
    void *addr = addr_of(s->addr_kind, s->addr, buf_addr, arena);
    int target = s->file_index >= 0 ? slots[s->file_index] : -1;
    int regbuf = s->addr_kind == SK_ADDR_BUFFER ? buf_index[s->addr] : -1;

    switch (s->op) {
    case IORING_OP_NOP:
        io_uring_prep_nop(sqe);
        break;
    case IORING_OP_OPENAT:
        if (target >= 0)
            io_uring_prep_openat_direct(sqe, AT_FDCWD, addr, (int)s->op_flags, s->mode, target);
        else
            io_uring_prep_openat(sqe, AT_FDCWD, addr, (int)s->op_flags, s->mode);
        break;
    case IORING_OP_READ:
        if (regbuf >= 0)
            io_uring_prep_read_fixed(sqe, fd, addr, s->len, s->off, regbuf);
        else
            io_uring_prep_read(sqe, fd, addr, s->len, s->off);
        break;
    case IORING_OP_WRITE:
        if (regbuf >= 0)
            io_uring_prep_write_fixed(sqe, fd, addr, s->len, s->off, regbuf);
        else
            io_uring_prep_write(sqe, fd, addr, s->len, s->off);
        break;
    case IORING_OP_CLOSE:
        /* close_direct names the slot in file_index and must NOT carry FIXED_FILE */
        if (fixed) io_uring_prep_close_direct(sqe, (unsigned)fd);
        else io_uring_prep_close(sqe, fd);
        fixed = 0;
        break;
    case IORING_OP_RECV:
        io_uring_prep_recv(sqe, fd, addr, s->len, (int)s->op_flags);
        break;
    case IORING_OP_SEND:
        io_uring_prep_send(sqe, fd, addr, s->len, (int)s->op_flags);
        break;
    case IORING_OP_ACCEPT:
        if (target >= 0)
            io_uring_prep_accept_direct(sqe, fd, NULL, NULL, (int)s->op_flags, target);
        else
            io_uring_prep_accept(sqe, fd, NULL, NULL, (int)s->op_flags);
        break;
    case IORING_OP_CONNECT:
        io_uring_prep_connect(sqe, fd, addr, (socklen_t)s->addr2);
        break;
    case IORING_OP_SOCKET:   /* fd = domain, op_flags = type, len = protocol */
        if (target >= 0)
            io_uring_prep_socket_direct(sqe, s->fd, (int)s->op_flags, (int)s->len, target, 0);
        else
            io_uring_prep_socket(sqe, s->fd, (int)s->op_flags, (int)s->len, 0);
        break;
    case IORING_OP_STATX:    /* addr = path, addr2 = statx buffer, len = mask */
        io_uring_prep_statx(sqe, AT_FDCWD, addr, (int)s->op_flags, s->len,
                            addr_of(s->addr2_kind, s->addr2, buf_addr, arena));
        break;
    case IORING_OP_FSYNC:
        io_uring_prep_fsync(sqe, fd, s->op_flags);
        break;
    case IORING_OP_SPLICE: { /* fd = out, fd2 = in, off = off_out, addr = off_in */
        int in = fd_of(s->fd2_kind, s->fd2, slots);
        unsigned sflags = s->op_flags;
        if (s->fd2_kind == SK_FD_LOCAL_SLOT || s->fd2_kind == SK_FD_RING_SLOT)
            sflags |= SPLICE_F_FD_IN_FIXED;
        io_uring_prep_splice(sqe, in, (int64_t)s->addr, fd, (int64_t)s->off, s->len, sflags);
        break;
    }
    default:                 /* by number */
        io_uring_prep_rw(s->op, sqe, fd, addr, s->len, s->off);
        sqe->rw_flags = (int)s->op_flags;
        if (s->addr2_kind != SK_ADDR_VALUE || s->addr2)
            sqe->addr2 = (uint64_t)(uintptr_t)addr_of(s->addr2_kind, s->addr2, buf_addr, arena);
        if (target >= 0) __io_uring_set_target_fixed_file(sqe, (unsigned)target);
        break;
    }
    if (fixed) sqe->flags |= IOSQE_FIXED_FILE;
    if (s->link == SK_LINK_SOFT) sqe->flags |= IOSQE_IO_LINK;
    else if (s->link == SK_LINK_HARD) sqe->flags |= IOSQE_IO_HARDLINK;
}

/* Defence in depth: Python checks every handle, and this checks again what the packed
 * steps index, so no bug above can make a chain read another chain's slot or buffer. */

static int fd_ok(const struct sk_ring *r, const struct sk_given *g, uint8_t kind, int32_t v)
{
    switch (kind) {
    case SK_FD_NONE:  return 1;
    case SK_FD_PLAIN: return v >= 0;
    case SK_FD_LOCAL_SLOT:
        return v >= 0 && (unsigned)v < g->nslots && g->slots[v] >= 0 &&
               (unsigned)g->slots[v] < r->slots && !r->registered[g->slots[v]];
    case SK_FD_RING_SLOT:
        return v >= 0 && (unsigned)v < r->slots && r->registered[v];
    default:          return 0;
    }
}

/* `need` bytes at addr (0: a NUL-terminated string there) */
static int addr_ok(const struct sk_ring *r, const struct sk_given *g, uint8_t kind, uint64_t v,
                   uint64_t need)
{
    switch (kind) {
    case SK_ADDR_VALUE: return 1;    /* pinned data, or a value such as an offset */
    case SK_ADDR_ARENA:
        return v <= g->arena_len && need <= g->arena_len - v;
    case SK_ADDR_BUFFER: {
        if (v >= g->nbufs || need > g->buf_len[v]) return 0;
        int32_t b = g->buf_index[v];
        if (b < 0) return 1;         /* a private buffer of buf_len[v] bytes */
        return (unsigned)b < r->buffers && g->buf_len[v] <= r->buffer_size &&
               g->buf_addr[v] == (uint64_t)(uintptr_t)r->buf_mem + (uint64_t)b * r->buffer_size;
    }
    default:            return 0;
    }
}

static int step_ok(const struct sk_ring *r, const struct sk_given *g, const struct sk_step *s,
                   const char *arena)
{
    if (!fd_ok(r, g, s->fd_kind, s->fd) || !fd_ok(r, g, s->fd2_kind, s->fd2)) return 0;
    if (s->file_index != -1 && (s->file_index < 0 || (unsigned)s->file_index >= g->nslots ||
                                !fd_ok(r, g, SK_FD_LOCAL_SLOT, s->file_index)))
        return 0;
    if (s->link > SK_LINK_HARD || s->timeout_kind > SK_TIMEOUT_ABS) return 0;
    uint64_t need = 0, need2 = 0;
    switch (s->op) {
    case IORING_OP_READ: case IORING_OP_WRITE: case IORING_OP_RECV: case IORING_OP_SEND:
        need = s->len; break;
    case IORING_OP_CONNECT: case SK_OP_BIND: need = s->addr2; break;
    case IORING_OP_STATX: need2 = 256; break;
    default:
        if (s->addr_kind == SK_ADDR_ARENA || s->addr_kind == SK_ADDR_BUFFER) need = 1;
        break;
    }
    if (s->addr_kind == SK_ADDR_ARENA && (s->op == IORING_OP_OPENAT || s->op == IORING_OP_STATX)) {
        /* a path: its NUL must be inside the arena */
        if (s->addr >= g->arena_len || !memchr(arena + s->addr, 0, g->arena_len - s->addr))
            return 0;
    } else if (!addr_ok(r, g, s->addr_kind, s->addr, need)) {
        return 0;
    }
    if (s->addr2_kind != SK_ADDR_VALUE && !addr_ok(r, g, s->addr2_kind, s->addr2, need2 ? need2 : 1))
        return 0;
    return 1;
}

static int submit_all(struct sk_ring *r)
{
    int ret;
    for (int tries = 0; tries < 8; tries++) {
        if (r->flags & IORING_SETUP_SQPOLL) {
            io_uring_smp_mb();
            if (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_NEED_WAKEUP)
                r->stats.wakeups++;
        } else {
            r->stats.submits++;
        }
        ret = io_uring_submit(&r->ring);   /* SQPOLL: enters only to wake the thread */
        if (ret >= 0 || (ret != -EAGAIN && ret != -EBUSY && ret != -EINTR)) return ret;
        io_uring_get_events(&r->ring);     /* make room: flush the CQ overflow backlog */
    }
    return ret;
}

int sk_submit_chain(struct sk_ring *r, const struct sk_step *steps, unsigned n,
                    unsigned nslots, const int32_t *slots, unsigned nbufs,
                    const uint64_t *buf_addr, const int32_t *buf_index, const uint32_t *buf_len,
                    const char *arena, unsigned arena_len, struct __kernel_timespec *ts,
                    unsigned nts_given, long long deadline_ns, uint32_t tag, unsigned total,
                    int32_t *res)
{
    if (tag == 0 || tag > r->max_chains || total > 0xffff) return -EINVAL;
    if (r->inflight[tag].res) return -EEXIST;
    struct sk_given g = { nslots, nbufs, arena_len, slots, buf_addr, buf_index, buf_len };
    unsigned want_ts = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!step_ok(r, &g, &steps[i], arena)) return -ERANGE;
        want_ts += steps[i].timeout_kind != SK_TIMEOUT_NONE;
    }
    if (want_ts != nts_given || n + want_ts != total || (want_ts && !ts)) return -ERANGE;
    /* All or nothing: never lay part of a chain. */
    if (io_uring_sq_space_left(&r->ring) < total) return -EBUSY;

    struct sk_inflight *rec = &r->inflight[tag];
    for (unsigned i = 0; i < total; i++) res[i] = SK_PENDING;
    rec->total = total;
    rec->got = 0;

    unsigned pos = 0, nts = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct sk_step *s = &steps[i];
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
        prep_step(sqe, s, &g, arena);
        sqe->user_data = ((uint64_t)tag << 16) | pos++;
        if (s->timeout_kind != SK_TIMEOUT_NONE) {
            /* A linked timeout binds to the SQE before it, which must therefore link. */
            if (!(sqe->flags & (IOSQE_IO_LINK | IOSQE_IO_HARDLINK)))
                sqe->flags |= IOSQE_IO_LINK;
            struct __kernel_timespec *t = &ts[nts++];
            ns_to_ts(t, s->timeout_kind == SK_TIMEOUT_ABS ? deadline_ns : (long long)s->timeout_ns);
            struct io_uring_sqe *tq = io_uring_get_sqe(&r->ring);
            io_uring_prep_link_timeout(tq, t, s->timeout_kind == SK_TIMEOUT_ABS ? IORING_TIMEOUT_ABS : 0);
            /* the chain goes on after the timeout exactly as it would after the step */
            if (s->link == SK_LINK_SOFT) tq->flags |= IOSQE_IO_LINK;
            else if (s->link == SK_LINK_HARD) tq->flags |= IOSQE_IO_HARDLINK;
            tq->user_data = ((uint64_t)tag << 16) | pos++;
        }
    }
    rec->res = res;      /* visible to the reaper before the kernel can post a CQE */
    io_uring_smp_mb();
    int ret = submit_all(r);
    return ret < 0 ? ret : (int)pos;
}

static void process(struct sk_ring *r, uint32_t *tags, unsigned max_tags, unsigned *k, int *woken)
{
    struct io_uring_cqe *cqes[256];
    unsigned room = max_tags - *k;
    if (room > 256) room = 256;
    unsigned n = io_uring_peek_batch_cqe(&r->ring, cqes, room);
    for (unsigned i = 0; i < n; i++) {
        uint64_t ud = cqes[i]->user_data;
        uint32_t tag = (uint32_t)(ud >> 16), pos = (uint32_t)(ud & 0xffff);
        if (tag == 0) {
            if (ud == SK_UD_WAKE) *woken = 1;
            continue;
        }
        if (tag > r->max_chains) continue;
        struct sk_inflight *rec = &r->inflight[tag];
        if (!rec->res || pos >= rec->total) continue;
        rec->res[pos] = cqes[i]->res;
        if (++rec->got == rec->total) {
            tags[(*k)++] = tag;
            rec->res = NULL;
            r->stats.chains++;
        }
    }
    if (n) io_uring_cq_advance(&r->ring, n);
    r->stats.cqes += n;
}

/* Consume CQEs until at least one chain completes, a wake NOP arrives or the timeout
 * passes (timeout_ns < 0: no limit; 0: don't wait). Fills tags with completed chains.
 * It never returns with CQEs ready (or an overflow backlog) while tags has room: a caller
 * woken by the eventfd has consumed the eventfd's count, and the kernel signals it again
 * only for CQEs posted later, so whatever is left behind here would wait forever (the
 * asyncio lost wakeup: one batch of 256 CQEs that completed no chain used to end it). */
static int reap_ready(void *p)
{
    return io_uring_cq_ready(&((struct sk_ring *)p)->ring) != 0;
}

static int reap_overflowed(void *p)
{
    struct sk_ring *r = p;
    return (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW) != 0;
}

/* NODROP kept completions in the kernel's backlog, which posts no eventfd signal */
static void reap_flush(void *p)
{
    struct sk_ring *r = p;
    io_uring_get_events(&r->ring);
    r->stats.overflow_flushes++;
}

/* the SQPOLL thread fell asleep with work in the SQ */
static void reap_nudge(void *p)
{
    struct sk_ring *r = p;
    if ((r->flags & IORING_SETUP_SQPOLL) && sk_sq_pending(r) &&
        (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_NEED_WAKEUP)) {
        io_uring_enter(r->ring.ring_fd, 0, 0, IORING_ENTER_SQ_WAKEUP, NULL);
        r->stats.wakeups++;
    }
}

static int reap_sleep(void *p, long long ns)
{
    struct sk_ring *r = p;
    struct __kernel_timespec ts;
    struct io_uring_cqe *cqe;
    ns_to_ts(&ts, ns);
    r->stats.waits++;
    int ret = io_uring_wait_cqes(&r->ring, &cqe, 1, &ts, NULL);
    if (ret == -EINTR || ret == -ETIME || ret == -EAGAIN || ret == -EBUSY)
        return ret == -EINTR ? -EINTR : 0;
    return ret < 0 ? ret : 0;
}

int sk_reap(struct sk_ring *r, long long timeout_ns, long long spin_ns,
            uint32_t *tags, unsigned max_tags)
{
    unsigned k = 0;
    int woken = 0;
    long long start = (timeout_ns != 0 || spin_ns > 0) ? sk_now_ns() : 0;
    struct sk_waiter w = {
        .ctx = r, .ready = reap_ready, .overflowed = reap_overflowed, .flush = reap_flush,
        .nudge = reap_nudge, .sleep = reap_sleep,
        /* busy-poll: a chain's CQEs arrive one by one, keep going until one whole chain
         * is done or the spin budget is spent */
        .spin_until = spin_ns > 0 ? start + spin_ns : 0,
        .deadline = timeout_ns > 0 ? start + timeout_ns : LLONG_MAX,
        .slice_ns = SK_SLICE_NS,
    };

    for (;;) {
        process(r, tags, max_tags, &k, &woken);
        if (k >= max_tags || woken) return (int)k;
        if (reap_ready(r)) continue;
        if (reap_overflowed(r)) {
            reap_flush(r);
            continue;
        }
        if (k || timeout_ns == 0) return (int)k;
        int rc = sk_wait(&w);
        if (rc == 0 || rc == -EINTR) return 0;   /* the deadline; or let Python run its
                                                    signal handlers */
        if (rc < 0) return rc;
    }
}

int sk_cancel_pending(struct sk_ring *r, uint32_t tag, unsigned total, const int32_t *res)
{
    unsigned n = 0;
    for (unsigned pos = 0; pos < total; pos++) {
        if (res[pos] != SK_PENDING) continue;
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
        if (!sqe) break;
        io_uring_prep_cancel64(sqe, ((uint64_t)tag << 16) | pos, 0);
        sqe->user_data = SK_UD_IGNORE;
        n++;
    }
    if (!n) return 0;
    int ret = submit_all(r);
    return ret < 0 ? ret : (int)n;
}

int sk_lay_nops(struct sk_ring *r, unsigned n, uint64_t user_data)
{
    if (io_uring_sq_space_left(&r->ring) < n) return -EBUSY;
    for (unsigned i = 0; i < n; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
        io_uring_prep_nop(sqe);
        sqe->user_data = user_data;
    }
    return submit_all(r);
}

int sk_wake(struct sk_ring *r) { return sk_lay_nops(r, 1, SK_UD_WAKE); }

int sk_sq_wakeup(struct sk_ring *r)
{
    if (!(r->flags & IORING_SETUP_SQPOLL)) return 0;
    io_uring_smp_mb();
    if (!(IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_NEED_WAKEUP)) return 0;
    r->stats.wakeups++;
    int ret = io_uring_enter(r->ring.ring_fd, 0, 0, IORING_ENTER_SQ_WAKEUP, NULL);
    return ret < 0 ? ret : 1;
}

int sk_release_slots(struct sk_ring *r, const int32_t *slots, unsigned n)
{
    int fd = -1, err = 0;
    for (unsigned i = 0; i < n; i++) {
        if (slots[i] < 0 || (unsigned)slots[i] >= r->slots || r->registered[slots[i]]) {
            if (!err) err = -ERANGE;   /* never empty a slot register_file holds */
            continue;
        }
        int ret = io_uring_register_files_update(&r->ring, (unsigned)slots[i], &fd, 1);
        if (ret < 0 && !err) err = ret;
    }
    return err;
}

int sk_register_slot(struct sk_ring *r, unsigned slot, int fd)
{
    if (slot >= r->slots) return -ERANGE;
    int ret = io_uring_register_files_update(&r->ring, slot, &fd, 1);
    if (ret < 0) return ret;
    r->registered[slot] = 1;
    return 0;
}

int sk_unregister_slot(struct sk_ring *r, unsigned slot)
{
    if (slot >= r->slots || !r->registered[slot]) return -ERANGE;
    int fd = -1;
    r->registered[slot] = 0;
    int ret = io_uring_register_files_update(&r->ring, slot, &fd, 1);
    return ret < 0 ? ret : 0;
}

int sk_register_eventfd(struct sk_ring *r, int fd)
{
    return fd >= 0 ? io_uring_register_eventfd(&r->ring, fd) : io_uring_unregister_eventfd(&r->ring);
}

/* Which opcodes this kernel supports (IORING_REGISTER_PROBE) and its feature bits. */
int sk_probe(uint8_t *supported, unsigned max_ops, int *last_op)
{
    struct io_uring ring;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int ret = io_uring_queue_init_params(2, &ring, &p);
    if (ret < 0) return ret;
    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
    if (!probe) { io_uring_queue_exit(&ring); return -EOPNOTSUPP; }
    *last_op = probe->last_op;
    memset(supported, 0, max_ops);
    for (unsigned i = 0; i < probe->ops_len && i < max_ops; i++)
        supported[probe->ops[i].op] = !!(probe->ops[i].flags & IO_URING_OP_SUPPORTED);
    io_uring_free_probe(probe);
    io_uring_queue_exit(&ring);
    return (int)p.features;
}

/* Whether openat can put its file straight into a fixed slot (direct descriptors,
 * Linux 5.15): no feature bit says so, so open "/" into a one-slot table and see.
 * 1 yes, 0 no, < 0 the probe itself failed. */
int sk_probe_direct(void)
{
    if (fcntl(0, F_GETFD) < 0) return -EBADF;
    struct io_uring ring;
    struct io_uring_cqe *cqe;
    int fd = -1, ret = io_uring_queue_init(2, &ring, 0);
    if (ret < 0) return ret;
    ret = io_uring_register_files(&ring, &fd, 1);
    if (ret == 0) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_openat_direct(sqe, AT_FDCWD, "/", O_RDONLY | O_DIRECTORY, 0, 0);
        ret = io_uring_submit_and_wait(&ring, 1);
        if (ret >= 0 && (ret = io_uring_wait_cqe(&ring, &cqe)) == 0) {
            /* before 5.15 the slot index is ignored and a plain fd comes back: never 0
             * while fd 0 is open, which the caller makes sure of */
            if (cqe->res > 0) close(cqe->res);
            ret = cqe->res == 0;
            io_uring_cqe_seen(&ring, cqe);
        }
    }
    io_uring_queue_exit(&ring);
    return ret;
}

/* ---- the HTTP models' open (sakura_uring/httpd/site.py) ------------------------------ */

#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>

int sk_open_beneath(int dirfd, const char *path, long long *size)
{
    struct open_how how = {
        .flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return -ENXIO;
    }
    *size = st.st_size;
    return fd;
}
