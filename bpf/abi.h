/* abi.h — what the BPF side (sakura.h, dispatch.c), the native side (kring.c) and Python
 * share, written once: request and control-block layouts, request states, user_data,
 * stat counters, special results. bcc compiles it into every handler; the cffi build
 * reads it through the C preprocessor (its #defines become constants of the module), so
 * Python gets each number and offset from the compiler (ffi.offsetof, lib.SK_*).
 * Plain C only: __u64/__u32/__s64 come from <linux/types.h> or the includer. */
#ifndef SK_ABI_H
#define SK_ABI_H

#define SK_ARGS 6                 /* integer arguments of a request (KernelRing.call) */
#define SK_VARS 21                /* the handler's own variables, r->v[] */

struct sk_req {
    __u64 gen;                    /* generation of this slot's current request */
    __s64 result;
    __u32 state;                  /* SK_REQ_* */
    __u32 in_len;                 /* bytes of input at the start of the data buffer */
    __u32 out_off;
    __u32 out_len;
    __u64 arg[SK_ARGS];           /* the integers given to KernelRing.call() */
    __u64 inflight;               /* SQEs pushed and not yet completed, + events running */
    __u64 v[SK_VARS];             /* the handler's own variables */
    /* the fifth cache line: written once per request, or once per push group */
    __u32 cancel;                 /* set by the application: dispatch calls no handler */
    __u32 value;                  /* set by sk_finish_value(): result is a value, not -errno */
    __u64 head_ud;                /* user_data of the latest push group's first SQE: what a
                                     cancel asks the kernel to cancel */
    __u64 _pad[6];
};

/* A request slot's life: the application starts it (RUNNING), the handler finishes it
 * (DONE), the application reports it (REPORTED) and frees it (FREE). */
enum sk_req_state { SK_REQ_FREE = 0, SK_REQ_RUNNING = 1, SK_REQ_DONE = 2, SK_REQ_REPORTED = 3 };

/* The control block's head; seq[] (one word per SQ entry) follows on its own cache line,
 * at SK_CTL_SEQ_OFF. sakura.h's struct sk_ctl is these fields and then seq[]. */
#define SK_CTL_HEAD_FIELDS                                                              \
    __u64 reserve;                /* next SQ reservation (64-bit: no 32-bit atomics) */ \
    __u64 ctx;                    /* this ring's struct io_ring_ctx *, from the boot CQE */ \
    __u64 bufs_uaddr;             /* user address of sk_bufs[0] */                      \
    __u64 tgid;                                                                         \
    __u64 _pad[12];
struct sk_ctl_head { SK_CTL_HEAD_FIELDS };
#define SK_CTL_SEQ_OFF 128

/* user_data of a handler's SQE: bits 0-15 request slot, 16-31 step, 32-62 generation;
 * bit 63 marks the library's own requests (the boot NOP, the stop NOP) */
#define SK_UD_STEP_SHIFT 16
#define SK_UD_GEN_SHIFT 32
#define SK_UD_REQ_MASK 0xffff
#define SK_UD_STEP_MASK 0xffff
#define SK_UD_GEN_MASK 0x7fffffff
#define SK_UD_INTERNAL (1ULL << 63)
#define SK_UD_STOP (SK_UD_INTERNAL | 2)
#define SK_UD_CANCEL (SK_UD_INTERNAL | 3)   /* the application's ASYNC_CANCEL */

/* per-CPU counters, indices of sk_stats (KernelRing.stats() names them in lower case) */
enum sk_stat {
    SK_STAT_EVENTS = 0,           /* completions dispatched to on_complete */
    SK_STAT_PUSHED,               /* SQEs pushed by handlers */
    SK_STAT_PUSH_FULL,            /* pushes refused: ring full */
    SK_STAT_PUSH_CONTENDED,       /* pushes refused: reservation lost too often */
    SK_STAT_STALE,                /* completions of an earlier use of a request slot */
    SK_STAT_STALLED,              /* requests a handler left with nothing in flight */
    SK_STAT_FINISHED,             /* requests finished */
    SK_STAT_AFTER_FINISH,         /* completions that arrived after sk_finish */
    SK_STAT_FOREIGN,              /* completions of other rings seen by this program */
    SK_STAT_CANCELLED,            /* events of cancelled requests, given to no handler */
    SK_STAT_COUNT
};
#define SK_STATS 12               /* room in sk_stats (>= SK_STAT_COUNT) */

/* the result of a request its handler left with nothing in flight and unfinished */
#define SK_ERR_STALLED (-0x1000)

#endif
