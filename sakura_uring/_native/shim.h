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

struct sk_ring;

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
                    int32_t *res);
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
