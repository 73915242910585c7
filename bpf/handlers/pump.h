/* pump.h — move a file through the request's buffer: read a chunk, hand exactly the bytes
 * the read returned to `out` (written at the same file offset, or sent), finish a short
 * write or send before reading on, until end of file; the result is the bytes moved.
 * Shared by copy.c and sendfile.c (handlers may #include files from bpf/handlers/).
 * v[0] offset of the chunk, v[1] its length, v[2] of it written. */
#define MSG_NOSIGNAL_ 0x4000
enum { PUMP_READ = 1, PUMP_OUT };

static __always_inline int pump_out(struct sk_event *e, int out, u32 off, u32 len, int send)
{
    if (send)
        return sk_send(e, PUMP_OUT, out, off, len, MSG_NOSIGNAL_);
    return sk_write(e, PUMP_OUT, out, off, len, e->r->v[0] + off);
}

static __always_inline int pump(struct sk_event *e, int in, int out, u32 chunk, int send)
{
    struct sk_req *r = e->r;
    int n = e->res;

    switch (e->step) {
    case SK_START:
        return sk_read(e, PUMP_READ, in, 0, chunk, 0);
    case PUMP_READ:
        if (n < 0)
            return n;
        if (n == 0)
            return sk_finish(e, r->v[0], 0, 0);
        r->v[1] = n;
        r->v[2] = 0;
        return pump_out(e, out, 0, n, send);
    case PUMP_OUT:
        if (n < 0)
            return n;
        if (n == 0)
            return -EIO;
        r->v[2] += n;
        if (r->v[2] < r->v[1]) {
            u32 off = r->v[2], left = r->v[1] - r->v[2];
            if (off >= chunk || left > chunk)
                return -EIO;
            return pump_out(e, out, off, left, send);
        }
        r->v[0] += r->v[1];
        return sk_read(e, PUMP_READ, in, 0, chunk, r->v[0]);
    }
    return -EINVAL;
}
