/* sakura_uring native shim: the declarations cffi sees (cdef) and the C compiles.
 * Hot paths only: lay a whole chain into the SQ from a compact description, reap a
 * batch of CQEs into per-chain result arrays. Everything else stays in Python. */

/* One step of a chain, packed by Python (sakura_uring/chain.py, STEP_STRUCT). 64 bytes. */
struct sk_step {
    uint8_t  op;          /* IORING_OP_* */
    uint8_t  link;        /* SK_LINK_*: how this step is tied to the next one */
    uint8_t  fd_kind;     /* SK_FD_*: what `fd` is */
    uint8_t  addr_kind;   /* SK_ADDR_*: what `addr` is */
    int32_t  fd;
    uint32_t len;
    uint32_t op_flags;    /* open flags, msg flags, splice flags, ... */
    uint64_t off;
    uint64_t addr;
    uint64_t addr2;
    int32_t  file_index;  /* chain-local slot this step fills (openat/accept/socket), -1 none */
    int32_t  fd2;         /* splice: the input fd */
    uint8_t  fd2_kind;
    uint8_t  addr2_kind;
    uint8_t  timeout_kind;/* SK_TIMEOUT_*: a LINK_TIMEOUT follows this step */
    uint8_t  _pad;
    uint32_t mode;
    uint64_t timeout_ns;
};

/* A value bound into a step at run time (a chain's Param). The row of values of one run
   holds two words per param: vals[2p] (an int, or the value's offset in the values arena)
   and vals[2p + 1] (its length in bytes, for paths and data). */
struct sk_bind {
    uint16_t step;        /* step index; binds are sorted by it */
    uint8_t  what;        /* SK_BIND_* */
    uint8_t  param;
};
enum {
    SK_BIND_PATH = 1,     /* addr: a NUL-terminated path in the values arena */
    SK_BIND_FD = 2,       /* fd: a plain fd */
    SK_BIND_OFF = 3,      /* off */
    SK_BIND_LEN = 4,      /* len: at most the step's buffer */
    SK_BIND_DATA = 5      /* addr + len: bytes in the values arena */
};

struct sk_ring;

/* One chain run over many rows of values (Ring.map): laid and reaped by sk_map_run with
   `window` runs in flight, each run's CQE results and bytes written straight into the
   caller's arrays. Every array stays the caller's and must outlive the map. */
struct sk_map_desc {
    const struct sk_step *steps;
    unsigned n, total, ntimeouts;
    const char *arena;
    unsigned arena_len;
    const struct sk_bind *binds;
    unsigned nbinds, nparams;
    const uint64_t *vals;        /* count rows of 2 * nparams words */
    const char *varena;
    uint64_t varena_len;
    unsigned count;
    unsigned nslots, nbufs;
    const uint32_t *buf_len;     /* local buffer -> length */
    const uint64_t *buf_off;     /* local buffer -> offset inside a run's stride of data_out */
    uint64_t stride;
    const int32_t *fill_pos;     /* local slot -> SQE position of the step filling it, -1 */
    const uint32_t *close_start; /* local slot k closes at close_pos[close_start[k]..[k+1]) */
    const uint32_t *close_pos;
    unsigned window;
    const uint32_t *tags;        /* window tags, taken from the ring's pool */
    const int32_t *slots;        /* window * nslots slots, taken from the ring's pool */
    long long timeout_ns;        /* each run's deadline from when it is laid; 0 none */
    int32_t *res_out;            /* count * total */
    char *data_out;              /* count * stride */
};
struct sk_map;

/* A chain prepared on a ring (Ring.prepare): everything sk_submit_chain takes, given once;
   its tag, slots and buffers are its own until Prepared.close(). */
struct sk_call {
    const struct sk_step *steps;
    unsigned n, nslots, nbufs, arena_len, nts, total;
    const int32_t *slots;
    const uint64_t *buf_addr;
    const int32_t *buf_index;
    const uint32_t *buf_len;
    const char *arena;
    struct __kernel_timespec *ts;
    const struct sk_bind *binds;
    unsigned nbinds;
    uint32_t tag;
    int32_t *res;
};

struct sk_info {
    uint32_t sq_entries, cq_entries, features, flags, fd;
    uint32_t slots, buffers, buffer_size;
};

struct sk_stats {
    uint64_t cqes;            /* CQEs consumed */
    uint64_t chains;          /* chains completed */
    uint64_t submits;         /* io_uring_enter calls made to submit */
    uint64_t waits;           /* io_uring_enter calls made to wait */
    uint64_t wakeups;         /* SQPOLL thread woken (IORING_ENTER_SQ_WAKEUP) */
    uint64_t overflow_flushes;/* CQ overflow backlog flushed */
};

struct sk_ring *sk_ring_new(unsigned entries, unsigned cq_entries, unsigned flags,
                            unsigned sq_idle_ms, unsigned slots, unsigned buffers,
                            unsigned buffer_size, unsigned max_chains, int sq_cpu, int *err);
void sk_ring_free(struct sk_ring *r);
void sk_ring_info(struct sk_ring *r, struct sk_info *out);
void sk_ring_stats(struct sk_ring *r, struct sk_stats *out);
void *sk_buffer_addr(struct sk_ring *r, unsigned index);
unsigned sk_sq_pending(struct sk_ring *r);
unsigned sk_sq_flags(struct sk_ring *r);
unsigned sk_cq_overflow(struct sk_ring *r);

/* Lay one chain, all of it or nothing. Every index a step carries is checked first
   against what the chain was given (nslots local slots, nbufs buffers of buf_len bytes,
   arena_len bytes of arena, nts timespecs) and ring slots against the registered ones:
   -ERANGE and nothing laid if one is out of range. */
int sk_submit_chain(struct sk_ring *r, const struct sk_step *steps, unsigned n,
                    unsigned nslots, const int32_t *slots, unsigned nbufs,
                    const uint64_t *buf_addr, const int32_t *buf_index, const uint32_t *buf_len,
                    const char *arena, unsigned arena_len, struct __kernel_timespec *ts,
                    unsigned nts, long long deadline_ns, uint32_t tag, unsigned total,
                    int32_t *res, const struct sk_bind *binds, unsigned nbinds,
                    const uint64_t *vals, const char *varena, uint64_t varena_len);
/* The map: sk_map_new checks the description (NULL and *err = -ERANGE/-EEXIST/-ENOMEM if
   it is unusable); sk_map_check checks every row against every step before anything is
   laid: -1 all good, else the first bad row (*bad_step its step). sk_map_run (under the
   reaper's lock) lays runs as room allows and reaps for at most slice_ns: returns the
   number of other chains it completed into tags (>= 0), or -errno. sk_map_cancel stops
   laying and cancels what is in flight; free only once sk_map_inflight is 0. */
/* Lay a prepared chain with one run's values, submit it and reap (under the reaper's
   lock) until it completes or slice_ns pass: 1 done, 0 not yet (call sk_call_wait), or
   -errno (-EBUSY/-ERANGE/-EEXIST: nothing was laid). *others: chains of other callers
   completed into tags, for Python to deliver. */
int sk_call_run(struct sk_ring *r, const struct sk_call *c, const uint64_t *vals,
                const char *varena, uint64_t varena_len, long long deadline_ns,
                long long slice_ns, long long spin_ns, uint32_t *tags, unsigned max_tags,
                int *others);
/* Reap (under the reaper's lock) until chain `tag` completes: 1, or 0 when slice_ns passed */
int sk_tag_wait(struct sk_ring *r, uint32_t tag, long long slice_ns, long long spin_ns,
                uint32_t *tags, unsigned max_tags, int *others);
struct sk_map *sk_map_new(struct sk_ring *r, const struct sk_map_desc *d, int *err);
int sk_map_check(struct sk_ring *r, struct sk_map *m, unsigned *bad_step);
int sk_map_run(struct sk_ring *r, struct sk_map *m, long long slice_ns, long long spin_ns,
               uint32_t *tags, unsigned max_tags);
unsigned sk_map_done(struct sk_map *m);
unsigned sk_map_inflight(struct sk_map *m);
int sk_map_cancel(struct sk_ring *r, struct sk_map *m);
void sk_map_free(struct sk_ring *r, struct sk_map *m);
int sk_reap(struct sk_ring *r, long long timeout_ns, long long spin_ns,
            uint32_t *tags, unsigned max_tags);
int sk_cancel_pending(struct sk_ring *r, uint32_t tag, unsigned total, const int32_t *res);
int sk_wake(struct sk_ring *r);
/* SQPOLL: wake the thread if it sleeps (IORING_SQ_NEED_WAKEUP); 1 woken, 0 not needed */
int sk_sq_wakeup(struct sk_ring *r);
int sk_release_slots(struct sk_ring *r, const int32_t *slots, unsigned n);
int sk_register_slot(struct sk_ring *r, unsigned slot, int fd);
int sk_unregister_slot(struct sk_ring *r, unsigned slot);
int sk_register_eventfd(struct sk_ring *r, int fd);
int sk_probe(uint8_t *supported, unsigned max_ops, int *last_op);
int sk_probe_direct(void);
int sk_lay_nops(struct sk_ring *r, unsigned n, uint64_t user_data);
int sk_known_ops(uint8_t *out, unsigned max);
/* openat2(dirfd, path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, RESOLVE_BENEATH |
   RESOLVE_NO_MAGICLINKS) and fstat in one call: the fd of a regular file with *size its
   size, -ENXIO (closed) for anything else, or -errno */
int sk_open_beneath(int dirfd, const char *path, long long *size);
