/* kring.h — declarations of kring.c (the kernel-handler ring), seen by cffi and the C.
 * struct sk_req, struct sk_ctl_head and the numbers they share with the BPF side are in
 * bpf/abi.h (the build feeds it to cffi first). */
#include <linux/types.h>
#include <stdint.h>
#include "abi.h"
struct sk_kring_params {
    unsigned entries, cq_entries, reqs, buf_size, ring_pages, sq_idle_ms;
    int sq_cpu;
    int fd_sqes, fd_rings, fd_ctl, fd_reqs, fd_bufs;   /* the bcc maps */
};

struct sk_kring_stats {
    uint64_t started;         /* requests started by the application */
    uint64_t finished;        /* requests reported finished */
    uint64_t cqes;            /* CQEs consumed */
    uint64_t waits;           /* io_uring_enter calls made to sleep */
    uint64_t wakeups;         /* SQPOLL thread woken */
    uint64_t overflow_flushes;
};

struct sk_kring;
struct sk_kring *sk_kr_new(const struct sk_kring_params *p, int *err, int *stage);
void sk_kr_free(struct sk_kring *k);
int sk_kr_fd(struct sk_kring *k);
struct sk_req *sk_kr_req(struct sk_kring *k, unsigned i);
uint8_t *sk_kr_buf(struct sk_kring *k, unsigned i);
void sk_kr_stats(struct sk_kring *k, struct sk_kring_stats *out);
uint64_t sk_kr_outstanding(struct sk_kring *k);
int sk_kr_boot(struct sk_kring *k, uint64_t boot_ud, long long timeout_ns);
long long sk_kr_start(struct sk_kring *k, unsigned req, const uint64_t *args, unsigned nargs,
                      const uint8_t *data, unsigned len, int sync);
int sk_kr_stop(struct sk_kring *k);
int sk_kr_wait(struct sk_kring *k, unsigned req, long long spin_ns, long long timeout_ns);
void sk_kr_release(struct sk_kring *k, unsigned req);
int sk_kr_abandon(struct sk_kring *k, unsigned req);
int sk_kr_cancel(struct sk_kring *k, unsigned req, uint64_t gen);
int sk_kr_drain(struct sk_kring *k, uint32_t *out, unsigned max, long long wait_ns,
                long long spin_ns);
int sk_kr_probe(int *stage);
