/* sakura.h — the kernel-handler SDK (BPF side).
 *
 * A handler is one function, `int on_complete(struct sk_event *e)`, run in kernel context
 * at every completion of its own requests (io_uring:io_uring_complete tracepoint). It reads
 * the result, looks at the request's data buffer, and pushes the next system calls into
 * the submission ring itself; the SQPOLL thread carries them out. Nothing returns to user
 * space until the handler calls sk_finish().
 *
 * sakura_uring.kernel.KernelRing compiles this file with bcc, in front of the handler,
 * after defining the layout macros below (SK_ENTRIES, SK_REQS, SK_BUF_SIZE, ...) and the
 * opcode numbers (SK_OP_*, generated from sakura_uring/ops.py). The matching C side (the
 * application's push and the drainer) is sakura_uring/_native/kring.c: keep the two
 * layouts equal.
 *
 * Every shared structure lives in a BPF_F_MMAPABLE array map that the application also
 * maps: the SQE array and the rings (handed to io_uring_setup with IORING_SETUP_NO_MMAP),
 * the control word, the per-request state and the data buffers. A handler therefore
 * writes only its own maps; the SQEs it pushes run with the process's credentials.
 */
#ifndef SK_ENTRIES
#error "sakura.h is compiled by sakura_uring.kernel.KernelRing, which defines its layout macros"
#endif

#include <uapi/linux/errno.h>
#include <uapi/linux/fcntl.h>
#include "abi.h"              /* layouts and numbers shared with kring.c and Python */

/* Handlers name their steps READ, WRITE, ...: Linux 7.x defines READ 0 and WRITE 1 in
 * linux/types.h, which every BPF program includes (before, only linux/kernel.h had them),
 * and a step named READ would silently become 0, SK_START. */
#undef READ
#undef WRITE

/* ---- layout (shared with kring.c) ------------------------------------------------ */

/* An io_uring SQE, field for field (include/uapi/linux/io_uring.h). 64 bytes. */
struct sk_sqe {
    u8  opcode;
    u8  flags;
    u16 ioprio;
    s32 fd;
    u64 off;          /* file offset; STATX: the statx buffer */
    u64 addr;         /* buffer or path */
    u32 len;
    u32 op_flags;     /* rw/open/msg/accept/statx flags */
    u64 user_data;
    u16 buf_index;
    u16 personality;
    s32 file_index;
    u64 addr3;
    u64 pad;
};

struct sk_page { u32 w[1024]; };

/* Control block. seq[] publishes SQ slots: seq[slot] = (u32)(r + 1) | (u64)glen << 32 once
 * the group of glen SQEs reserved at r is written; the tail moves over whole groups only,
 * so a linked chain becomes visible to the kernel in one step. */
struct sk_ctl {
    SK_CTL_HEAD_FIELDS        /* abi.h: reserve, ctx, bufs_uaddr, tgid, padding */
    u64 seq[SK_ENTRIES];
};
_Static_assert(__builtin_offsetof(struct sk_ctl, seq) == SK_CTL_SEQ_OFF, "sk_ctl.seq moved");
_Static_assert(sizeof(struct sk_req) == 320, "struct sk_req is 320 bytes");

/* Counters, per CPU: an event never waits for another CPU's cache line to count itself
 * (indices: enum sk_stat in abi.h). */
BPF_PERCPU_ARRAY(sk_stats, u64, SK_STATS);

/* Per-request state (struct sk_req in abi.h), 320 bytes; the application fills gen/args/in_len before the start
 * event, the handler owns v[] and fills result/out_* through sk_finish(). The first cache
 * line (read by the drainer at every completion) changes only when the request starts and
 * finishes; inflight, written at every step, lives on the next one. */

/* b[] bytes; w[] the same memory as aligned 64-bit words, which the scans load in one
 * instruction (through a cast of &b[i], clang knows only byte alignment and loads the word
 * a byte at a time: BPF has no unaligned load) */
struct sk_buf {
    union {
        u8 b[SK_BUF_SIZE];
        u64 w[SK_BUF_SIZE / 8];
    };
};

BPF_F_TABLE("array", u32, struct sk_sqe, sk_sqes, SK_ENTRIES, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct sk_page, sk_rings, SK_RING_PAGES, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct sk_ctl, sk_ctl, 1, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct sk_req, sk_reqs, SK_REQS, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct sk_buf, sk_bufs, SK_REQS, BPF_F_MMAPABLE);

static __always_inline void sk__count(u32 which)
{
    u64 *n = sk_stats.lookup(&which);
    if (n)
        (*n)++;
}

/* user_data: bits 0-15 request slot, 16-31 step, 32-62 generation, 63 internal */
#define SK_UD(req, step, gen) ((u64)(req) | ((u64)((step) & SK_UD_STEP_MASK) << SK_UD_STEP_SHIFT) | \
                               ((u64)((gen) & SK_UD_GEN_MASK) << SK_UD_GEN_SHIFT))

/* ---- the event handed to on_complete ---------------------------------------------- */

struct sk_event {
    u32 req;                  /* request slot */
    u32 step;                 /* the step id given when the SQE was pushed; 0 = start */
    s32 res;                  /* the CQE's result: bytes, an fd, or -errno */
    u32 cflags;               /* the CQE's flags */
    u64 kreq;                 /* the kernel's struct io_kiocb of that CQE, 0 unknown (only
                                 sk_file_size() reads through it) */
    struct sk_req *r;         /* this request's state (args, v[], ...) */
    struct sk_ctl *c;
    u64 gen;
    u64 batch_r;              /* sk_link(): the reserved group, */
    u32 batch_n;              /*   its size, */
    u32 batch_i;              /*   and how many of it are written */
    u32 sqe_flags;            /* IOSQE_* flags for the pushes of this event, e.g. SK_ASYNC */
    u32 personality;          /* io_uring personality for the pushes of this event (0: the
                                 ring creator's credentials), e.g. for an openat2 that must
                                 check an unprivileged user's permissions */
};

/* e->sqe_flags = SK_ASYNC: the next pushes go straight to an io-wq worker (IOSQE_ASYNC),
 * for calls that would block the SQPOLL thread. Their completions then run the handler
 * in the worker, and its pushes may find the SQPOLL thread asleep: the drainer wakes it. */
#define SK_ASYNC 0x10

#define SK_START 0            /* the step of the event that starts a request */

/* recv/send flags (a handler sees no libc headers) */
#define SK_MSG_PEEK      0x2
#define SK_MSG_DONTWAIT  0x40
#define SK_MSG_WAITALL   0x100
#define SK_MSG_NOSIGNAL  0x4000
#define SK_MSG_MORE      0x8000

/* SK_NARGS(n); at file scope: the handler takes exactly n arguments (r->arg[0..n-1]), and
 * KernelRing.run()/call()/map() refuse a request with another count (TypeError) instead
 * of handing the handler zeros for the missing ones. */
#define SK_NARGS(n) _Static_assert((n) >= 0 && (n) <= SK_ARGS, "SK_NARGS: 0 to 6 arguments")

/* ---- pushing SQEs ------------------------------------------------------------------ */

static __always_inline struct sk_page *sk__rings(void)
{
    u32 z = 0;
    return sk_rings.lookup(&z);
}

/* Bounds of the two loops of a push. Each push site costs the verifier both loops, so
 * they stay short; a tail left behind is moved by the next push or by the drainer. */
#ifndef SK_RESERVE_TRIES
#define SK_RESERVE_TRIES 8
#endif
#ifndef SK_ADVANCE_GROUPS
#define SK_ADVANCE_GROUPS 4
#endif

/* Reserve n contiguous SQ slots. Returns 0 and the reservation in *out, -EBUSY when the
 * ring has no room, -EAGAIN when other producers won the race too often. */
static __always_inline int sk__reserve(struct sk_ctl *c, u32 n, u64 *out)
{
    struct sk_page *pg = sk__rings();
    if (!pg)
        return -EFAULT;
    /* a loop, not SK_RESERVE_TRIES copies: unrolled at every push site it made bpf/handlers/
     * http.c too long for the 16-bit jumps of a BPF program */
#pragma clang loop unroll(disable)
    for (int i = 0; i < SK_RESERVE_TRIES; i++) {
        u64 r = c->reserve;
        u32 head = *(volatile u32 *)&pg->w[0];      /* sq.head, written by the kernel */
        if ((u32)r + n - head > SK_ENTRIES) {
            sk__count(SK_STAT_PUSH_FULL);
            return -EBUSY;
        }
        if (__sync_val_compare_and_swap(&c->reserve, r, r + n) == r) {
            *out = r;
            return 0;
        }
    }
    sk__count(SK_STAT_PUSH_CONTENDED);
    return -EAGAIN;
}

/* Move the kernel-visible SQ tail over every complete group. The {sq.head, sq.tail} pair
 * is one 64-bit word at offset 0 of the rings, so one CAS both checks and moves it. */
static __always_inline void sk__advance(struct sk_ctl *c)
{
    struct sk_page *pg = sk__rings();
    if (!pg)
        return;
    u64 *ht = (u64 *)&pg->w[0];
    for (int i = 0; i < SK_ADVANCE_GROUPS; i++) {
        u64 cur = *(volatile u64 *)ht;
        u32 t = cur >> 32;
        u64 s = c->seq[t & (SK_ENTRIES - 1)];
        if ((u32)s != t + 1)
            return;
        u32 glen = s >> 32;
        __sync_val_compare_and_swap(ht, cur, (cur & 0xffffffffULL) | ((u64)(t + glen) << 32));
    }
}

static __always_inline void sk__publish(struct sk_ctl *c, u64 r, u32 n)
{
    u64 *seq = &c->seq[r & (SK_ENTRIES - 1)];
    u64 old = *seq;
    /* a CAS, not a store: the full barrier makes every producer see every publish */
    __sync_val_compare_and_swap(seq, old, (u64)(u32)(r + 1) | ((u64)n << 32));
    sk__advance(c);
}

/* Reserve the next n pushes as one linked chain (IOSQE_IO_LINK between them): the kernel
 * sees all n at once and runs them in order, a failure cancelling the rest. */
static __always_inline int sk_link(struct sk_event *e, u32 n)
{
    if (n < 1 || n > SK_ENTRIES || e->batch_i < e->batch_n)
        return -EINVAL;
    int err = sk__reserve(e->c, n, &e->batch_r);
    if (err)
        return err;
    e->batch_n = n;
    e->batch_i = 0;
    return 0;
}

/* Push one SQE for this request, any opcode (the emitters below are this with the
 * arguments in place): the next slot of an sk_link() group, or a fresh slot. `step` comes
 * back as e->step at its completion. 0, -EBUSY (ring full) or -EAGAIN (contention). */
static __always_inline int sk_push(struct sk_event *e, u32 step, u8 op, s32 fd, u64 off,
                                    u64 addr, u32 len, u32 op_flags)
{
    struct sk_ctl *c = e->c;
    u64 r, ud = SK_UD(e->req, step, e->gen);
    u32 n = 1, last = 1;
    if (e->batch_i < e->batch_n) {
        r = e->batch_r + e->batch_i;
        if (e->batch_i == 0)
            e->r->head_ud = ud;          /* a cancel of the head cancels the linked rest */
        e->batch_i++;
        last = e->batch_i == e->batch_n;
    } else {
        int err = sk__reserve(c, 1, &r);
        if (err)
            return err;
        e->r->head_ud = ud;
    }
    u32 idx = r & (SK_ENTRIES - 1);
    struct sk_sqe *s = sk_sqes.lookup(&idx);
    if (!s)
        return -EFAULT;
    s->opcode = op;
    s->flags = (last ? 0 : 4) | e->sqe_flags;      /* 4: IOSQE_IO_LINK */
    s->ioprio = 0;
    s->fd = fd;
    s->off = off;
    s->addr = addr;
    s->len = len;
    s->op_flags = op_flags;
    s->user_data = ud;
    s->buf_index = 0;
    s->personality = e->personality;
    s->file_index = 0;
    s->addr3 = 0;
    s->pad = 0;
    __sync_fetch_and_add(&e->r->inflight, 1);
    sk__count(SK_STAT_PUSHED);
    if (last) {
        if (e->batch_n) {
            n = e->batch_n;
            r = e->batch_r;
            e->batch_n = 0;
            e->batch_i = 0;
        }
        sk__publish(c, r, n);
    }
    return 0;
}

/* ---- the data buffer ---------------------------------------------------------------- */

/* This request's data buffer (SK_BUF_SIZE bytes; the input is at offset 0). */
static __always_inline struct sk_buf *sk_buf(struct sk_event *e)
{
    u32 k = e->req;
    return sk_bufs.lookup(&k);
}

/* The user address of byte `off` of this request's buffer, for an SQE. */
static __always_inline u64 sk_buf_uaddr(struct sk_event *e, u32 off)
{
    return e->c->bufs_uaddr + (u64)e->req * SK_BUF_SIZE + off;
}

/* An offset the verifier can see is inside the buffer. The empty asm keeps the compiler
 * from dropping the mask after an earlier range check (it would, and the verifier, which
 * tracks bounds less precisely, then refuses the access as "unbounded"). */
static __always_inline u32 sk_off(u64 off)
{
    u32 v = off;
    asm volatile("" : "+r"(v));
    return v & (SK_BUF_SIZE - 1);
}

/* Byte `off` of the buffer, or -1 when off is outside it. */
static __always_inline int sk_getc(struct sk_buf *b, u64 off)
{
    if (off >= SK_BUF_SIZE)
        return -1;
    return b->b[sk_off(off)];
}

/* Store byte v at `off`; -EINVAL outside the buffer. */
static __always_inline int sk_putc(struct sk_buf *b, u64 off, u8 v)
{
    if (off >= SK_BUF_SIZE)
        return -EINVAL;
    b->b[sk_off(off)] = v;
    return 0;
}

/* Byte `off` of the buffer, wrapping around at SK_BUF_SIZE: no range check, so a loop
 * over it stays cheap for the verifier (sk_getc's check and barrier make every iteration a
 * new state). Use it where the offset is known to be in range. */
#define SK_BYTE(b, off) ((b)->b[sk_off(off)])

#define SK_RANGE_OK(off, len) ((u64)(off) + (u64)(len) <= SK_BUF_SIZE)

/* ---- emitters: one system call each; `step` comes back as e->step at its completion --- */

static __always_inline int sk_nop(struct sk_event *e, u32 step)
{
    return sk_push(e, step, SK_OP_NOP, -1, 0, 0, 0, 0);
}

/* openat(dirfd, path at buffer offset path_off (NUL-terminated), flags, mode) */
static __always_inline int sk_openat(struct sk_event *e, u32 step, int dirfd, u32 path_off,
                                     u32 flags, u32 mode)
{
    if (path_off >= SK_BUF_SIZE)
        return -EINVAL;
    return sk_push(e, step, SK_OP_OPENAT, dirfd, 0, sk_buf_uaddr(e, path_off), mode, flags);
}

/* openat2(dirfd, path at path_off, struct open_how at how_off): resolve = RESOLVE_BENEATH
 * keeps a path (`..`, absolute, symlinks) from leaving dirfd's tree */
struct sk_open_how { u64 flags; u64 mode; u64 resolve; };
#define SK_RESOLVE_NO_MAGICLINKS 0x02
#define SK_RESOLVE_BENEATH       0x08
static __always_inline int sk_openat2(struct sk_event *e, u32 step, int dirfd, u32 path_off,
                                      u32 how_off)
{
    if (path_off >= SK_BUF_SIZE || !SK_RANGE_OK(how_off, sizeof(struct sk_open_how)))
        return -EINVAL;
    return sk_push(e, step, SK_OP_OPENAT2, dirfd, sk_buf_uaddr(e, how_off),
                    sk_buf_uaddr(e, path_off), sizeof(struct sk_open_how), 0);
}

/* A file's length from its inode (struct file * -> f_inode -> i_size, i_mode), read with
 * bpf_probe_read_kernel at offsets KernelRing takes from the running kernel's BTF
 * (sakura_uring/kernel/btf.py): no system call, no io-wq hand-off (a statx always has one).
 * -EINVAL: not a regular file (a FIFO, a device, a directory, a socket); -ENOSYS: this
 * kernel can't tell -- ask statx then. */
#define SK_S_IFMT  0170000
#define SK_S_IFREG 0100000
static __always_inline s64 sk__inode_size(u64 file)
{
#ifdef SK_KOFF_FILE_INODE
    u64 inode = 0;
    s64 size = 0;
    u16 mode = 0;
    if (!file
        || bpf_probe_read_kernel(&inode, sizeof(inode), (void *)(file + SK_KOFF_FILE_INODE))
        || !inode
        || bpf_probe_read_kernel(&mode, sizeof(mode), (void *)(inode + SK_KOFF_INODE_MODE))
        || bpf_probe_read_kernel(&size, sizeof(size), (void *)(inode + SK_KOFF_INODE_SIZE)))
        return -ENOSYS;
    if ((mode & SK_S_IFMT) != SK_S_IFREG)
        return -EINVAL;
    return size < 0 ? -EINVAL : size;
#else
    return -ENOSYS;
#endif
}

/* The length of the regular file that this completion's request (a read, a write, an
 * fadvise) used, as its inode says now; -ENOSYS also for a request without a file or a CQE
 * from the overflow list (it names no request). */
static __always_inline s64 sk_file_size(struct sk_event *e)
{
#ifdef SK_KOFF_REQ_FILE
    u64 file = 0;
    if (!e->kreq
        || bpf_probe_read_kernel(&file, sizeof(file), (void *)(e->kreq + SK_KOFF_REQ_FILE)))
        return -ENOSYS;
    return sk__inode_size(file);
#else
    return -ENOSYS;
#endif
}

/* The length of the regular file open as fd in this process (e.g. the fd an openat just
 * returned: e->res), from the file table of the task that posted the completion -- the
 * SQPOLL thread or an io-wq worker, which share the process's table. -ENOSYS where the
 * kernel can't tell (no BTF, fd not open). */
static __always_inline s64 sk_fd_size(struct sk_event *e, s32 fd)
{
#ifdef SK_KOFF_TASK_FILES
    u64 task = bpf_get_current_task(), files = 0, fdt = 0, arr = 0, file = 0;
    u32 max = 0;
    if (fd < 0
        || bpf_probe_read_kernel(&files, sizeof(files), (void *)(task + SK_KOFF_TASK_FILES))
        || !files
        || bpf_probe_read_kernel(&fdt, sizeof(fdt), (void *)(files + SK_KOFF_FILES_FDT))
        || !fdt
        || bpf_probe_read_kernel(&max, sizeof(max), (void *)(fdt + SK_KOFF_FDT_MAX))
        || (u32)fd >= max
        || bpf_probe_read_kernel(&arr, sizeof(arr), (void *)(fdt + SK_KOFF_FDT_FD))
        || !arr
        || bpf_probe_read_kernel(&file, sizeof(file), (void *)(arr + 8 * (u64)(u32)fd)))
        return -ENOSYS;
    return file ? sk__inode_size(file) : -ENOSYS;
#else
    return -ENOSYS;
#endif
}

/* read len bytes at file_off (-1: the file position) into the buffer at buf_off */
static __always_inline int sk_read(struct sk_event *e, u32 step, int fd, u32 buf_off,
                                   u32 len, u64 file_off)
{
    if (!SK_RANGE_OK(buf_off, len))
        return -EINVAL;
    return sk_push(e, step, SK_OP_READ, fd, file_off, sk_buf_uaddr(e, buf_off), len, 0);
}

static __always_inline int sk_write(struct sk_event *e, u32 step, int fd, u32 buf_off,
                                    u32 len, u64 file_off)
{
    if (!SK_RANGE_OK(buf_off, len))
        return -EINVAL;
    return sk_push(e, step, SK_OP_WRITE, fd, file_off, sk_buf_uaddr(e, buf_off), len, 0);
}

static __always_inline int sk_recv(struct sk_event *e, u32 step, int fd, u32 buf_off,
                                   u32 len, u32 msg_flags)
{
    if (!SK_RANGE_OK(buf_off, len))
        return -EINVAL;
    return sk_push(e, step, SK_OP_RECV, fd, 0, sk_buf_uaddr(e, buf_off), len, msg_flags);
}

static __always_inline int sk_send(struct sk_event *e, u32 step, int fd, u32 buf_off,
                                   u32 len, u32 msg_flags)
{
    if (!SK_RANGE_OK(buf_off, len))
        return -EINVAL;
    return sk_push(e, step, SK_OP_SEND, fd, 0, sk_buf_uaddr(e, buf_off), len, msg_flags);
}

static __always_inline int sk_accept(struct sk_event *e, u32 step, int fd, u32 flags)
{
    return sk_push(e, step, SK_OP_ACCEPT, fd, 0, 0, 0, flags);
}

/* shutdown(fd, how): 0 SHUT_RD, 1 SHUT_WR, 2 SHUT_RDWR */
static __always_inline int sk_shutdown(struct sk_event *e, u32 step, int fd, u32 how)
{
    return sk_push(e, step, SK_OP_SHUTDOWN, fd, 0, 0, how, 0);
}

/* posix_fadvise(fd, off, len, advice); NORMAL, RANDOM and SEQUENTIAL run inline (the others
 * in an io-wq worker). On a FIFO it fails with -ESPIPE without touching it. */
static __always_inline int sk_fadvise(struct sk_event *e, u32 step, int fd, u64 off, u32 len,
                                      u32 advice)
{
    return sk_push(e, step, SK_OP_FADVISE, fd, off, 0, len, advice);
}

static __always_inline int sk_close(struct sk_event *e, u32 step, int fd)
{
    return sk_push(e, step, SK_OP_CLOSE, fd, 0, 0, 0, 0);
}

/* statx(dirfd, path at path_off, flags, mask) into the buffer at stx_off (256 bytes) */
static __always_inline int sk_statx(struct sk_event *e, u32 step, int dirfd, u32 path_off,
                                    u32 flags, u32 mask, u32 stx_off)
{
    if (path_off >= SK_BUF_SIZE || !SK_RANGE_OK(stx_off, 256))
        return -EINVAL;
    return sk_push(e, step, SK_OP_STATX, dirfd, sk_buf_uaddr(e, stx_off),
                    sk_buf_uaddr(e, path_off), mask, flags);
}

/* ---- word-at-a-time scans (8 bytes per step) ----------------------------------------- */

/* A scan covers at most SK_SCAN_MAX bytes per call (-E2BIG past it): each word costs the
 * verifier one pending branch (two for find and compare), and it gives up at 8,192 of
 * them. For more, scan in slices (sk_nop(e, STEP) to go on at the next completion). */
#define SK_SCAN_MAX 16384
#define SK_SCAN_WORDS (SK_SCAN_MAX / 8 + 1)
#define SK__ONES  0x0101010101010101ULL
#define SK__HIGHS 0x8080808080808080ULL
#define SK__LOWS  0x7f7f7f7f7f7f7f7fULL
/* Hide from the compiler what it knows of x (it emits nothing). */
#define SK__OPAQUE(x) asm volatile("" : "+r"(x))

/* The aligned word of the buffer that holds byte `off` (the mask keeps it in the buffer,
 * and the compiler may not drop it). */
static __always_inline u64 sk__word(struct sk_buf *b, u64 off)
{
    SK__OPAQUE(off);
    return b->w[(off & (SK_BUF_SIZE - 1)) >> 3];
}

/* The high bit of every byte of w that is zero, and no other bit (exact, no carries). */
static __always_inline u64 sk__zero_bytes(u64 w)
{
    return ~(((w & SK__LOWS) + SK__LOWS) | w | SK__LOWS);
}

/* The index of the lowest byte of a non-zero word whose high bit is set: (t & -t) >> 7 is
 * 1 << 8k, and 8k ones below it, one 0x01 per byte, add up to k. */
static __always_inline u32 sk__first_byte(u64 t)
{
    u64 low = (t & -t) >> 7;
    return (((low - 1) & SK__ONES) * SK__ONES) >> 56;
}

/* The aligned words that cover [off, off+len), as the scans walk them: `first` of them,
 * `words` of them. (In the loops, SK__OPAQUE(words) keeps clang from folding the test
 * against words and the loop's constant bound into one count, which the verifier cannot
 * bound.) Bytes of the first word before off are masked with sk__head(off); those of the
 * last word past the end are dealt with by each scan. */
#define SK__WORDS(off, len, first, words)                                               \
    u64 first = (off) & ~7u, words = ((((u64)(off) + (len) + 7) & ~7ULL) - first) / 8

/* A scan's start: its buffer b, -EINVAL for a range outside it, -E2BIG past SK_SCAN_MAX,
 * and the words that cover the range. */
#define SK__SCAN_START(off, len)                                                        \
    struct sk_buf *b = sk_buf(e);                                                       \
    if (!b || !SK_RANGE_OK(off, len))                                                   \
        return -EINVAL;                                                                 \
    if ((len) > SK_SCAN_MAX)                                                            \
        return -E2BIG;                                                                  \
    SK__WORDS(off, len, first, words)

/* The mask of the bytes of the first word at or after off (little-endian: low bytes first). */
#define sk__head(off) (~0ULL << (8 * ((off) & 7)))

/* How many bytes of a word sk__zero_bytes() marked: one 0x01 per marked byte, added up. */
static __always_inline u64 sk__count_marked(u64 t)
{
    return ((t >> 7) * SK__ONES) >> 56;
}

/* The high bit of every byte of the scan's word i that equals the pattern's bytes (none of
 * the first word's bytes before off). i is a constant to the verifier at every iteration,
 * so `i == 0` is no branch it has to keep. */
static __always_inline u64 sk__matches(struct sk_buf *b, u64 first, u64 i, u64 pat, u32 off)
{
    u64 t = sk__zero_bytes(sk__word(b, first + i * 8) ^ pat);
    if (i == 0)
        t &= sk__head(off);
    return t;
}

/* How many bytes of [off, off+len) equal c; -EINVAL outside the buffer, -E2BIG past
 * SK_SCAN_MAX. One data-dependent branch per word: the loop's end. */
static __always_inline s64 sk_count_byte(struct sk_event *e, u32 off, u32 len, u8 c)
{
    SK__SCAN_START(off, len);
    u64 pat = SK__ONES * c, n = 0;
#pragma clang loop unroll(disable)
    for (u64 i = 0; i < SK_SCAN_WORDS; i++) {
        SK__OPAQUE(words);
        if (i >= words)
            break;
        n += sk__count_marked(sk__matches(b, first, i, pat, off));
    }
    u32 end = off + len;
    if (words && (end & 7)) {         /* the last word's bytes from end on were counted too */
        u64 t = sk__zero_bytes(sk__word(b, end) ^ pat) & sk__head(end);
        if (words == 1)
            t &= sk__head(off);
        n -= sk__count_marked(t);
    }
    return n;
}

/* The offset of the first byte equal to c in [off, off+len), or -1 when there is none;
 * -EINVAL outside the buffer, -E2BIG past SK_SCAN_MAX. */
static __always_inline s64 sk_find_byte(struct sk_event *e, u32 off, u32 len, u8 c)
{
    SK__SCAN_START(off, len);
    u64 pat = SK__ONES * c;
#pragma clang loop unroll(disable)
    for (u64 i = 0; i < SK_SCAN_WORDS; i++) {
        SK__OPAQUE(words);
        if (i >= words)
            break;
        u64 t = sk__matches(b, first, i, pat, off);
        if (t) {
            u32 at = first + i * 8 + sk__first_byte(t);
            return at < off + len ? (s64)at : -1;
        }
    }
    return -1;
}

/* Compare [a, a+len) with [b_off, b_off+len) of the buffer as memcmp does: 0 when equal,
 * else the difference of the first differing bytes (a's minus b's, in [-255, 255]); -EINVAL
 * outside the buffer, -E2BIG past SK_SCAN_MAX (negative too: check for them first). a's
 * words are aligned; each of b's is put together from the two aligned words it spans. */
static __always_inline s64 sk_compare(struct sk_event *e, u32 a, u32 b_off, u32 len)
{
    if (!SK_RANGE_OK(b_off, len))
        return -EINVAL;
    SK__SCAN_START(a, len);
    u32 q = b_off - (a & 7);          /* b's byte under the first word's byte 0 (may wrap) */
    u32 sh = (q & 7) * 8;
    q &= ~7u;
    u64 lo = sk__word(b, q);          /* b's word under a's, and the one after it: hi */
#pragma clang loop unroll(disable)
    for (u64 i = 0; i < SK_SCAN_WORDS; i++) {
        SK__OPAQUE(words);
        if (i >= words)
            break;
        u64 wa = sk__word(b, first + i * 8), hi = sk__word(b, q + i * 8 + 8);
        u64 wb = (lo >> sh) | ((hi << 1) << (63 - sh));   /* sh = 0: no shift by 64 */
        lo = hi;
        u64 x = wa ^ wb;
        if (i == 0)
            x &= sk__head(a);
        if (x) {                      /* the first byte that differs */
            u32 k = sk__first_byte(((x & SK__LOWS) + SK__LOWS | x) & SK__HIGHS);
            if (first + i * 8 + k >= a + len)
                return 0;
            return (s64)((wa >> (8 * k)) & 0xff) - (s64)((wb >> (8 * k)) & 0xff);
        }
    }
    return 0;
}

/* The little-endian 8 bytes at off, any alignment; 0 when they leave the buffer. */
static __always_inline u64 sk_load_u64(struct sk_event *e, u32 off)
{
    struct sk_buf *b = sk_buf(e);
    if (!b || !SK_RANGE_OK(off, 8))
        return 0;
    u64 v = 0;
    for (u32 k = 0; k < 8; k++)
        v |= (u64)SK_BYTE(b, off + k) << (8 * k);
    return v;
}

/* Store v as 8 little-endian bytes at off; -EINVAL when they leave the buffer. */
static __always_inline int sk_store_u64(struct sk_event *e, u32 off, u64 v)
{
    struct sk_buf *b = sk_buf(e);
    if (!b || !SK_RANGE_OK(off, 8))
        return -EINVAL;
    for (u32 k = 0; k < 8; k++)
        SK_BYTE(b, off + k) = v >> (8 * k);
    return 0;
}

/* Write a struct sk_open_how {flags, mode, resolve} at how_off, for sk_openat2(). */
static __always_inline int sk_open_how(struct sk_event *e, u32 how_off, u64 flags, u64 mode,
                                       u64 resolve)
{
    if (!SK_RANGE_OK(how_off, sizeof(struct sk_open_how)))
        return -EINVAL;
    sk_store_u64(e, how_off, flags);
    sk_store_u64(e, how_off + 8, mode);
    return sk_store_u64(e, how_off + 16, resolve);
}

/* ---- finishing ------------------------------------------------------------------------ */

/* End the request: `result` (>= 0, or -errno) and out_len bytes of the buffer from out_off
 * reach the caller's Future once every SQE this request pushed has completed. */
static __always_inline int sk_finish(struct sk_event *e, s64 result, u32 out_off, u32 out_len)
{
    if (!SK_RANGE_OK(out_off, out_len)) {
        result = -EINVAL;
        out_off = 0;
        out_len = 0;
    }
    struct sk_req *r = e->r;
    r->result = result;
    r->out_off = out_off;
    r->out_len = out_len;
    r->state = SK_REQ_DONE;
    sk__count(SK_STAT_FINISHED);
    return 0;
}

/* End the request with a value that may be negative and is never an error
 * (HandlerResult.signed is True, .error None): a difference, an offset, a comparison. */
static __always_inline int sk_finish_value(struct sk_event *e, s64 value, u32 out_off, u32 out_len)
{
    e->r->value = 1;
    return sk_finish(e, value, out_off, out_len);
}

/* ---- dispatch ------------------------------------------------------------------------- */

static int on_complete(struct sk_event *e);

/* Drop one count of r->inflight; true when it reached zero. */
static __always_inline int sk__release(struct sk_req *r)
{
    return __sync_fetch_and_add(&r->inflight, -1) == 1;
}

/* The dispatch program that calls on_complete is bpf/dispatch.c, compiled after the handler. */
