/* uring_work.c — io_uring workloads written against liburing alone (nothing of ours), for
 * checking the tracer against a program's own counts. Built by tests/test_trace_programs.py.
 *
 *   uring_work copy SRC DST BS QD BROKEN SHORT
 *       link-cp's scheme: SRC copied to DST as read -> write chains of BS bytes, QD chains
 *       in flight, each finished chain's buffer reused for the next; then BROKEN chains
 *       whose read fails (-EBADF) and SHORT chains whose read is short (at the end of
 *       SRC): the kernel cancels their writes.
 *   uring_work timeouts N US
 *       N timeouts of US microseconds, one at a time, each also timed from here.
 *
 * Prints one JSON line of what it submitted and what its CQEs said.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define READ_TAG  1
#define WRITE_TAG 2

static void die(const char *what, int err)
{
    fprintf(stderr, "uring_work: %s: %s\n", what, strerror(err < 0 ? -err : err));
    exit(1);
}

struct counts {
    long chains, reads, writes, read_ok, read_short, read_err, write_ok, write_canceled,
         write_err;
};

static void queue_chain(struct io_uring *ring, int in, int out, char *buf, unsigned bs,
                        off_t off, unsigned slot, struct counts *c)
{
    struct io_uring_sqe *r = io_uring_get_sqe(ring), *w = io_uring_get_sqe(ring);
    if (!r || !w)
        die("no SQE", EBUSY);
    io_uring_prep_read(r, in, buf, bs, off);
    r->flags |= IOSQE_IO_LINK;
    io_uring_sqe_set_data64(r, ((unsigned long long)slot << 8) | READ_TAG);
    io_uring_prep_write(w, out, buf, bs, off);
    io_uring_sqe_set_data64(w, ((unsigned long long)slot << 8) | WRITE_TAG);
    c->chains++;
    c->reads++;
    c->writes++;
}

/* one CQE into the counts; returns the slot when a chain's write (its last CQE) is in */
static int reap(struct io_uring *ring, unsigned bs, struct counts *c)
{
    struct io_uring_cqe *cqe;
    int ret = io_uring_wait_cqe(ring, &cqe);
    if (ret < 0)
        die("wait_cqe", ret);
    unsigned long long ud = io_uring_cqe_get_data64(cqe);
    int res = cqe->res, slot = -1;
    io_uring_cqe_seen(ring, cqe);
    if ((ud & 0xff) == READ_TAG) {
        if (res < 0)
            c->read_err++;
        else if ((unsigned)res < bs)
            c->read_short++;
        else
            c->read_ok++;
    } else {
        if (res == -ECANCELED)
            c->write_canceled++;
        else if (res < 0)
            c->write_err++;
        else
            c->write_ok++;
        slot = (int)(ud >> 8);
    }
    return slot;
}

static int copy(int argc, char **argv)
{
    if (argc != 8)
        return fprintf(stderr, "usage: uring_work copy SRC DST BS QD BROKEN SHORT\n"), 2;
    unsigned bs = atoi(argv[4]), qd = atoi(argv[5]);
    long broken = atol(argv[6]), shorts = atol(argv[7]);
    int in = open(argv[2], O_RDONLY), out = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0)
        die("open", errno);
    struct stat st;
    fstat(in, &st);
    struct io_uring ring;
    int ret = io_uring_queue_init(2 * qd, &ring, 0);
    if (ret < 0)
        die("queue_init", ret);
    char **bufs = calloc(qd, sizeof(*bufs));
    for (unsigned i = 0; i < qd; i++)
        bufs[i] = aligned_alloc(4096, bs);
    struct counts c = {0};
    off_t off = 0;
    long inflight = 0, extra = broken + shorts;
    int bad = open("/dev/null", O_RDONLY);
    close(bad);                               /* a closed fd: its reads fail -EBADF */
    for (unsigned i = 0; i < qd && off < st.st_size; i++, off += bs, inflight++)
        queue_chain(&ring, in, out, bufs[i], bs, off, i, &c);
    io_uring_submit(&ring);
    while (inflight) {
        int slot = reap(&ring, bs, &c);
        if (slot < 0)
            continue;
        inflight--;
        if (off < st.st_size) {
            queue_chain(&ring, in, out, bufs[slot], bs, off, slot, &c);
            off += bs;
            inflight++;
        } else if (extra > 0) {
            /* the broken ones first, then reads of the last 100 bytes (short) */
            int fd = extra > shorts ? bad : in;
            off_t at = extra > shorts ? 0 : st.st_size - 100;
            queue_chain(&ring, fd, out, bufs[slot], bs, at, slot, &c);
            extra--;
            inflight++;
        }
        io_uring_submit(&ring);
    }
    io_uring_queue_exit(&ring);
    printf("{\"chains\": %ld, \"reads\": %ld, \"writes\": %ld, \"read_ok\": %ld, "
           "\"read_short\": %ld, \"read_err\": %ld, \"write_ok\": %ld, "
           "\"write_canceled\": %ld, \"write_err\": %ld}\n", c.chains, c.reads, c.writes,
           c.read_ok, c.read_short, c.read_err, c.write_ok, c.write_canceled, c.write_err);
    return 0;
}

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int timeouts(int argc, char **argv)
{
    if (argc != 4)
        return fprintf(stderr, "usage: uring_work timeouts N US\n"), 2;
    long n = atol(argv[2]), us = atol(argv[3]);
    struct io_uring ring;
    int ret = io_uring_queue_init(8, &ring, 0);
    if (ret < 0)
        die("queue_init", ret);
    struct __kernel_timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };
    double least = 1e18, most = 0;
    long etime = 0;
    for (long i = 0; i < n; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_timeout(sqe, &ts, 0, 0);
        double t0 = now_us();
        io_uring_submit(&ring);
        struct io_uring_cqe *cqe;
        if ((ret = io_uring_wait_cqe(&ring, &cqe)) < 0)
            die("wait_cqe", ret);
        double took = now_us() - t0;
        etime += cqe->res == -ETIME;
        io_uring_cqe_seen(&ring, cqe);
        least = took < least ? took : least;
        most = took > most ? took : most;
    }
    io_uring_queue_exit(&ring);
    printf("{\"timeouts\": %ld, \"etime\": %ld, \"least_us\": %.1f, \"most_us\": %.1f}\n",
           n, etime, least, most);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "copy"))
        return copy(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "timeouts"))
        return timeouts(argc, argv);
    fprintf(stderr, "usage: uring_work copy ... | timeouts ...\n");
    return 2;
}
