/* sakura_uring native shim (compiled by cffi in API mode against liburing 2.3).
 *
 * Threading contract (enforced by sakura_uring/ring.py, not here):
 *   - one producer of SQEs at a time: every function that writes the SQ takes the ring's
 *     sq_mu (Python also calls them under its publish lock, which is always taken first);
 *   - one reaper at a time: sk_reap and sk_map_run run under the ring's reap lock;
 *   - the reaper never touches the SQ's private tail, so the two can run at once.
 * cffi releases the GIL around every call, so a blocking sk_reap never holds it. */
#include <liburing.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
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
enum { SK_ADDR_VALUE = 0, SK_ADDR_ARENA = 1, SK_ADDR_BUFFER = 2, SK_ADDR_VALUES = 3 };
#define SK_MAX_PATH 4095
enum { SK_TIMEOUT_NONE = 0, SK_TIMEOUT_REL = 1, SK_TIMEOUT_ABS = 2 };
#define SK_OP_BIND 56            /* IORING_OP_BIND (6.11), newer than liburing 2.3 */

/* What one run of a chain was given: its slots, buffers, arena, and the values arena of
   its Params (SK_ADDR_VALUES). */
struct sk_given {
    unsigned nslots, nbufs, arena_len;
    const int32_t *slots;
    const uint64_t *buf_addr;
    const int32_t *buf_index;
    const uint32_t *buf_len;
    const char *arena;
    const char *varena;
    uint64_t varena_len;
};

struct sk_map;

struct sk_inflight {
    int32_t  *res;      /* NULL when this tag is not in flight */
    uint32_t  total;    /* SQEs (so CQEs) this chain posts */
    uint32_t  got;
    struct sk_map *map; /* a run of a map: completed by map_complete, not handed to Python */
    uint32_t  wslot;    /* its place in the map's window */
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
    pthread_mutex_t sq_mu;          /* one producer of SQEs at a time */
    int mu_ready;
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
    pthread_mutex_init(&r->sq_mu, NULL);
    r->mu_ready = 1;
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
    if (r->mu_ready) pthread_mutex_destroy(&r->sq_mu);
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

static void *addr_of(uint8_t kind, uint64_t v, const struct sk_given *g)
{
    switch (kind) {
    case SK_ADDR_ARENA:  return (void *)(g->arena + v);
    case SK_ADDR_VALUES: return (void *)(g->varena + v);
    case SK_ADDR_BUFFER: return (void *)(uintptr_t)g->buf_addr[v];
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

static void prep_step(struct io_uring_sqe *sqe, const struct sk_step *s, const struct sk_given *g)
{
    const int32_t *slots = g->slots;
    const int32_t *buf_index = g->buf_index;
    int fd = fd_of(s->fd_kind, s->fd, slots);
    int fixed = s->fd_kind == SK_FD_LOCAL_SLOT || s->fd_kind == SK_FD_RING_SLOT;
    void *addr = addr_of(s->addr_kind, s->addr, g);
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
                            addr_of(s->addr2_kind, s->addr2, g));
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
            sqe->addr2 = (uint64_t)(uintptr_t)addr_of(s->addr2_kind, s->addr2, g);
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
    case SK_ADDR_VALUES:
        return v <= g->varena_len && need <= g->varena_len - v;
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

/* a path at arena[v]: its NUL inside the arena, at most SK_MAX_PATH bytes, not empty */
static int path_ok(const char *arena, uint64_t len, uint64_t v)
{
    if (v >= len) return 0;
    uint64_t room = len - v;
    const char *nul = memchr(arena + v, 0, room < SK_MAX_PATH + 1 ? room : SK_MAX_PATH + 1);
    return nul && nul != arena + v;
}

static int step_ok(const struct sk_ring *r, const struct sk_given *g, const struct sk_step *s)
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
    int path = s->op == IORING_OP_OPENAT || s->op == IORING_OP_STATX;
    if (path && s->addr_kind == SK_ADDR_ARENA) {
        if (!path_ok(g->arena, g->arena_len, s->addr)) return 0;
    } else if (path && s->addr_kind == SK_ADDR_VALUES) {
        if (!path_ok(g->varena, g->varena_len, s->addr)) return 0;
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

/* A Param's value put into a copy of its step. */
static void bind_step(struct sk_step *s, const struct sk_bind *b, const uint64_t *row)
{
    uint64_t a = row[2 * b->param], len = row[2 * b->param + 1];
    switch (b->what) {
    case SK_BIND_PATH:
        s->addr_kind = SK_ADDR_VALUES;
        s->addr = a;
        break;
    case SK_BIND_FD:
        s->fd_kind = SK_FD_PLAIN;
        s->fd = a > INT32_MAX ? -1 : (int32_t)a;   /* step_ok refuses -1 */
        break;
    case SK_BIND_OFF:
        s->off = a;
        break;
    case SK_BIND_LEN:
        s->len = a > UINT32_MAX ? UINT32_MAX : (uint32_t)a;   /* step_ok: <= its buffer */
        break;
    case SK_BIND_DATA:
        s->addr_kind = SK_ADDR_VALUES;
        s->addr = a;
        s->len = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
        break;
    default:
        s->link = 0xff;                            /* step_ok refuses it */
    }
}

/* step i of a run: the chain's step with this run's values bound in; *b walks the binds */
static const struct sk_step *bound(const struct sk_step *steps, unsigned i, const struct sk_bind **b,
                                   const struct sk_bind *end, const uint64_t *row,
                                   struct sk_step *tmp)
{
    if (*b == end || (*b)->step != i) return &steps[i];
    *tmp = steps[i];
    while (*b != end && (*b)->step == i) bind_step(tmp, (*b)++, row);
    return tmp;
}

/* Every step of one run is valid against what the run was given: 1 yes, 0 no. */
static int run_ok(const struct sk_ring *r, const struct sk_given *g, const struct sk_step *steps,
                  unsigned n, const struct sk_bind *binds, unsigned nbinds, const uint64_t *row,
                  unsigned *nts, unsigned *bad_step)
{
    const struct sk_bind *b = binds, *end = binds + nbinds;
    struct sk_step tmp;
    unsigned want = 0;
    for (unsigned i = 0; i < n; i++) {
        if (b != end && b->step < i) return 0;     /* binds must be sorted, in range */
        const struct sk_step *s = bound(steps, i, &b, end, row, &tmp);
        if (!step_ok(r, g, s)) { if (bad_step) *bad_step = i; return 0; }
        want += s->timeout_kind != SK_TIMEOUT_NONE;
    }
    if (b != end) return 0;
    *nts = want;
    return 1;
}

/* Lay one checked run into the SQ (caller holds sq_mu and made sure of the room). */
static unsigned lay_run(struct sk_ring *r, const struct sk_given *g, const struct sk_step *steps,
                        unsigned n, const struct sk_bind *binds, unsigned nbinds,
                        const uint64_t *row, struct __kernel_timespec *ts, long long deadline_ns,
                        uint32_t tag)
{
    const struct sk_bind *b = binds, *end = binds + nbinds;
    struct sk_step tmp;
    unsigned pos = 0, nts = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct sk_step *s = bound(steps, i, &b, end, row, &tmp);
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
        prep_step(sqe, s, g);
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
    return pos;
}

int sk_submit_chain(struct sk_ring *r, const struct sk_step *steps, unsigned n,
                    unsigned nslots, const int32_t *slots, unsigned nbufs,
                    const uint64_t *buf_addr, const int32_t *buf_index, const uint32_t *buf_len,
                    const char *arena, unsigned arena_len, struct __kernel_timespec *ts,
                    unsigned nts_given, long long deadline_ns, uint32_t tag, unsigned total,
                    int32_t *res, const struct sk_bind *binds, unsigned nbinds,
                    const uint64_t *vals, const char *varena, uint64_t varena_len)
{
    if (tag == 0 || tag > r->max_chains || total > 0xffff) return -EINVAL;
    if (r->inflight[tag].res) return -EEXIST;
    struct sk_given g = { nslots, nbufs, arena_len, slots, buf_addr, buf_index, buf_len,
                          arena, varena, varena_len };
    unsigned want_ts = 0;
    if (!run_ok(r, &g, steps, n, binds, nbinds, vals, &want_ts, NULL)) return -ERANGE;
    if (want_ts != nts_given || n + want_ts != total || (want_ts && !ts)) return -ERANGE;
    pthread_mutex_lock(&r->sq_mu);
    /* All or nothing: never lay part of a chain. */
    if (io_uring_sq_space_left(&r->ring) < total) {
        pthread_mutex_unlock(&r->sq_mu);
        return -EBUSY;
    }
    struct sk_inflight *rec = &r->inflight[tag];
    for (unsigned i = 0; i < total; i++) res[i] = SK_PENDING;
    rec->total = total;
    rec->got = 0;
    rec->map = NULL;
    unsigned pos = lay_run(r, &g, steps, n, binds, nbinds, vals, ts, deadline_ns, tag);
    rec->res = res;      /* visible to the reaper before the kernel can post a CQE */
    io_uring_smp_mb();
    int ret = submit_all(r);
    pthread_mutex_unlock(&r->sq_mu);
    return ret < 0 ? ret : (int)pos;
}

static void map_complete(struct sk_ring *r, struct sk_map *m, uint32_t wslot);

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
            rec->res = NULL;
            r->stats.chains++;
            if (rec->map) map_complete(r, rec->map, rec->wslot);
            else tags[(*k)++] = tag;
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

static int cancel_locked(struct sk_ring *r, uint32_t tag, unsigned total, const int32_t *res)
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

int sk_cancel_pending(struct sk_ring *r, uint32_t tag, unsigned total, const int32_t *res)
{
    pthread_mutex_lock(&r->sq_mu);
    int ret = cancel_locked(r, tag, total, res);
    pthread_mutex_unlock(&r->sq_mu);
    return ret;
}

int sk_lay_nops(struct sk_ring *r, unsigned n, uint64_t user_data)
{
    pthread_mutex_lock(&r->sq_mu);
    int ret = -EBUSY;
    if (io_uring_sq_space_left(&r->ring) >= n) {
        for (unsigned i = 0; i < n; i++) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
            io_uring_prep_nop(sqe);
            sqe->user_data = user_data;
        }
        ret = submit_all(r);
    }
    pthread_mutex_unlock(&r->sq_mu);
    return ret;
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

/* ---- a prepared chain: lay, submit and wait in one call (Ring.prepare) -------------- */

/* the other chains completed meanwhile are left in tags[0..*others) */
int sk_tag_wait(struct sk_ring *r, uint32_t own, long long slice_ns, long long spin_ns,
                uint32_t *tags, unsigned max_tags, int *others)
{
    unsigned k = 0;
    int woken = 0;
    long long now = sk_now_ns(), deadline = now + slice_ns;
    struct sk_waiter w = {
        .ctx = r, .ready = reap_ready, .overflowed = reap_overflowed, .flush = reap_flush,
        .nudge = reap_nudge, .sleep = reap_sleep,
        .spin_until = spin_ns > 0 ? now + spin_ns : 0, .deadline = deadline,
        .slice_ns = SK_SLICE_NS,
    };
    *others = 0;
    for (;;) {
        process(r, tags, max_tags, &k, &woken);
        for (unsigned i = 0; i < k; i++)
            if (tags[i] == own) {
                tags[i] = tags[--k];
                *others = (int)k;
                return 1;
            }
        if (k >= max_tags || woken) break;    /* Python delivers those first */
        if (reap_ready(r)) continue;
        if (reap_overflowed(r)) {
            reap_flush(r);
            continue;
        }
        int rc = sk_wait(&w);
        if (rc == 0 || rc == -EINTR) break;
        if (rc < 0) { *others = (int)k; return rc; }
    }
    *others = (int)k;
    return 0;
}

int sk_call_run(struct sk_ring *r, const struct sk_call *c, const uint64_t *vals,
                const char *varena, uint64_t varena_len, long long deadline_ns,
                long long slice_ns, long long spin_ns, uint32_t *tags, unsigned max_tags,
                int *others)
{
    *others = 0;
    int ret = sk_submit_chain(r, c->steps, c->n, c->nslots, c->slots, c->nbufs, c->buf_addr,
                              c->buf_index, c->buf_len, c->arena, c->arena_len, c->ts, c->nts,
                              deadline_ns, c->tag, c->total, c->res, c->binds, c->nbinds,
                              vals, varena, varena_len);
    if (ret < 0) return ret;
    return sk_tag_wait(r, c->tag, slice_ns, spin_ns, tags, max_tags, others);
}

/* ---- the map: one chain over many rows of values (Ring.map) ------------------------- */

struct sk_map {
    const struct sk_map_desc *d;
    unsigned next;                  /* the next row to lay */
    unsigned done, inflight;
    int stopped;                    /* sk_map_cancel: lay no more */
    int32_t *res;                   /* window * total: CQE results of each window place */
    struct __kernel_timespec *ts;   /* window * ntimeouts: the kernel reads them when laid */
    uint32_t *row_of;               /* window place -> the row it runs */
    uint8_t *busy;                  /* window place in flight */
    uint32_t *free_w;               /* free window places (a stack) */
    unsigned nfree;
    uint64_t *buf_addr;             /* the buffers of the row being laid */
    int32_t *no_index;              /* nbufs of -1: a map's buffers are the caller's arrays */
};

void sk_map_free(struct sk_ring *r, struct sk_map *m)
{
    if (!m) return;
    if (r && m->inflight) {         /* the caller broke the contract: never post into m */
        for (unsigned w = 0; w < m->d->window; w++)
            if (m->busy[w]) {
                r->inflight[m->d->tags[w]].map = NULL;
                r->inflight[m->d->tags[w]].res = NULL;
            }
    }
    free(m->res); free(m->ts); free(m->row_of); free(m->busy); free(m->free_w);
    free(m->buf_addr); free(m->no_index);
    free(m);
}

struct sk_map *sk_map_new(struct sk_ring *r, const struct sk_map_desc *d, int *err)
{
    *err = -ERANGE;
    /* the native layer trusts no index Python computed */
    if (!d->n || !d->window || !d->count || d->n + d->ntimeouts != d->total ||
        d->total > 0xffff || d->nparams > 255 || (d->nparams && !d->vals))
        return NULL;
    for (unsigned i = 0; i < d->nbinds; i++)
        if (d->binds[i].param >= d->nparams || d->binds[i].step >= d->n) return NULL;
    for (unsigned k = 0; k < d->nbufs; k++)
        if (d->buf_off[k] > d->stride || d->buf_len[k] > d->stride - d->buf_off[k]) return NULL;
    if (d->nbufs && !d->data_out) return NULL;
    for (unsigned k = 0; k < d->nslots; k++) {
        if (d->fill_pos[k] >= (int32_t)d->total || d->close_start[k] > d->close_start[k + 1])
            return NULL;
        for (unsigned c = d->close_start[k]; c < d->close_start[k + 1]; c++)
            if (d->close_pos[c] >= d->total) return NULL;
    }
    for (unsigned w = 0; w < d->window; w++) {
        uint32_t t = d->tags[w];
        if (t == 0 || t > r->max_chains) return NULL;
        if (r->inflight[t].res) { *err = -EEXIST; return NULL; }
        for (unsigned k = 0; k < d->nslots; k++) {
            int32_t sl = d->slots[w * d->nslots + k];
            if (sl < 0 || (unsigned)sl >= r->slots || r->registered[sl]) return NULL;
        }
    }
    *err = -ENOMEM;
    struct sk_map *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->d = d;
    m->res = calloc((size_t)d->window * d->total, sizeof *m->res);
    m->ts = calloc((size_t)d->window * (d->ntimeouts ? d->ntimeouts : 1), sizeof *m->ts);
    m->row_of = calloc(d->window, sizeof *m->row_of);
    m->busy = calloc(d->window, 1);
    m->free_w = calloc(d->window, sizeof *m->free_w);
    m->buf_addr = calloc(d->nbufs ? d->nbufs : 1, sizeof *m->buf_addr);
    m->no_index = calloc(d->nbufs ? d->nbufs : 1, sizeof *m->no_index);
    if (!m->res || !m->ts || !m->row_of || !m->busy || !m->free_w || !m->buf_addr || !m->no_index) {
        sk_map_free(NULL, m);
        return NULL;
    }
    for (unsigned k = 0; k < d->nbufs; k++) m->no_index[k] = -1;
    for (unsigned w = d->window; w-- > 0;) m->free_w[m->nfree++] = w;
    *err = 0;
    return m;
}

static void map_given(const struct sk_map *m, unsigned w, unsigned row, struct sk_given *g)
{
    const struct sk_map_desc *d = m->d;
    for (unsigned k = 0; k < d->nbufs; k++)
        m->buf_addr[k] = (uint64_t)(uintptr_t)(d->data_out + (uint64_t)row * d->stride + d->buf_off[k]);
    *g = (struct sk_given){ d->nslots, d->nbufs, d->arena_len, d->slots + (size_t)w * d->nslots,
                            m->buf_addr, m->no_index, d->buf_len, d->arena, d->varena,
                            d->varena_len };
}

int sk_map_check(struct sk_ring *r, struct sk_map *m, unsigned *bad_step)
{
    const struct sk_map_desc *d = m->d;
    struct sk_given g;
    for (unsigned row = 0; row < d->count; row++) {
        unsigned nts = 0;
        map_given(m, 0, row, &g);
        *bad_step = 0;
        if (!run_ok(r, &g, d->steps, d->n, d->binds, d->nbinds,
                    d->vals + (size_t)row * 2 * d->nparams, &nts, bad_step) ||
            nts != d->ntimeouts)
            return (int)row;
    }
    return -1;
}

/* caller holds sq_mu, and made sure of a free window place and the SQ's room */
static void map_lay(struct sk_ring *r, struct sk_map *m, unsigned w, unsigned row)
{
    const struct sk_map_desc *d = m->d;
    struct sk_given g;
    map_given(m, w, row, &g);
    uint32_t tag = d->tags[w];
    struct sk_inflight *rec = &r->inflight[tag];
    int32_t *res = m->res + (size_t)w * d->total;
    for (unsigned i = 0; i < d->total; i++) res[i] = SK_PENDING;
    rec->total = d->total;
    rec->got = 0;
    rec->map = m;
    rec->wslot = w;
    long long deadline = d->timeout_ns ? sk_now_ns() + d->timeout_ns : 0;
    lay_run(r, &g, d->steps, d->n, d->binds, d->nbinds, d->vals + (size_t)row * 2 * d->nparams,
            m->ts + (size_t)w * d->ntimeouts, deadline, tag);
    rec->res = res;
    m->row_of[w] = row;
    m->busy[w] = 1;
    m->inflight++;
}

/* from process(), under the reaper's lock: a run's last CQE arrived */
static void map_complete(struct sk_ring *r, struct sk_map *m, uint32_t w)
{
    const struct sk_map_desc *d = m->d;
    const int32_t *res = m->res + (size_t)w * d->total;
    memcpy(d->res_out + (size_t)m->row_of[w] * d->total, res, d->total * sizeof *res);
    /* slots a step filled and no step of the chain closed: empty them now */
    for (unsigned k = 0; k < d->nslots; k++) {
        int32_t fill = d->fill_pos[k];
        if (fill < 0 || res[fill] < 0) continue;
        int closed = 0;
        for (unsigned c = d->close_start[k]; c < d->close_start[k + 1]; c++)
            closed |= res[d->close_pos[c]] == 0;
        if (!closed) {
            int fd = -1;
            io_uring_register_files_update(&r->ring, (unsigned)d->slots[w * d->nslots + k], &fd, 1);
        }
    }
    m->busy[w] = 0;
    m->free_w[m->nfree++] = w;
    m->inflight--;
    m->done++;
}

int sk_map_run(struct sk_ring *r, struct sk_map *m, long long slice_ns, long long spin_ns,
               uint32_t *tags, unsigned max_tags)
{
    const struct sk_map_desc *d = m->d;
    unsigned k = 0;
    int woken = 0;
    long long deadline = sk_now_ns() + slice_ns;
    for (;;) {
        unsigned laid = 0;
        if (!m->stopped && m->nfree && m->next < d->count) {
            pthread_mutex_lock(&r->sq_mu);
            while (m->nfree && m->next < d->count &&
                   io_uring_sq_space_left(&r->ring) >= d->total) {
                map_lay(r, m, m->free_w[--m->nfree], m->next++);
                laid++;
            }
            int ret = 0;
            if (laid) {
                io_uring_smp_mb();
                ret = submit_all(r);
            }
            pthread_mutex_unlock(&r->sq_mu);
            if (ret < 0) return ret;
        }
        unsigned before = m->done;
        process(r, tags, max_tags, &k, &woken);
        if (k || woken) return (int)k;     /* other chains done: Python delivers them first */
        if (m->done == d->count || (m->stopped && !m->inflight)) return 0;
        if (m->done != before || reap_ready(r)) continue;
        if (reap_overflowed(r)) {
            reap_flush(r);
            continue;
        }
        if (laid && !(r->flags & IORING_SETUP_SQPOLL)) continue;
        long long now = sk_now_ns();
        if (now >= deadline) return 0;
        struct sk_waiter wt = {
            .ctx = r, .ready = reap_ready, .overflowed = reap_overflowed, .flush = reap_flush,
            .nudge = reap_nudge, .sleep = reap_sleep,
            .spin_until = spin_ns > 0 ? now + spin_ns : 0, .deadline = deadline,
            .slice_ns = SK_SLICE_NS,
        };
        int rc = sk_wait(&wt);
        if (rc == 0 || rc == -EINTR) return 0;
        if (rc < 0) return rc;
    }
}

unsigned sk_map_done(struct sk_map *m) { return m->done; }
unsigned sk_map_inflight(struct sk_map *m) { return m->inflight; }

int sk_map_cancel(struct sk_ring *r, struct sk_map *m)
{
    const struct sk_map_desc *d = m->d;
    int n = 0;
    pthread_mutex_lock(&r->sq_mu);
    m->stopped = 1;
    for (unsigned w = 0; w < d->window; w++)
        if (m->busy[w]) {
            int ret = cancel_locked(r, d->tags[w], d->total, m->res + (size_t)w * d->total);
            if (ret > 0) n += ret;
        }
    pthread_mutex_unlock(&r->sq_mu);
    return n;
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
