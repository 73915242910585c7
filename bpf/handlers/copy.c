/* copy.c — copy a file in chunks of up to 64 KiB until end of file: each write is exactly
 * the bytes the read before it returned (a short write is finished before reading on).
 *
 *     kr.run(in_fd, out_fd)  ->  HandlerResult(result=<bytes copied>)          */
#define CHUNK (SK_BUF_SIZE < 65536 ? SK_BUF_SIZE : 65536)
enum { READ = 1, WRITE };
/* v[0] offset of the chunk, v[1] its length, v[2] of it written */

static int on_complete(struct sk_event *e)
{
    struct sk_req *r = e->r;
    int in = r->arg[0], out = r->arg[1];
    int n = e->res;

    switch (e->step) {
    case SK_START:
        return sk_read(e, READ, in, 0, CHUNK, 0);
    case READ:
        if (n < 0)
            return n;
        if (n == 0)
            return sk_finish(e, r->v[0], 0, 0);
        r->v[1] = n;
        r->v[2] = 0;
        return sk_write(e, WRITE, out, 0, n, r->v[0]);
    case WRITE:
        if (n < 0)
            return n;
        if (n == 0)
            return -EIO;
        r->v[2] += n;
        if (r->v[2] < r->v[1]) {
            u32 off = r->v[2], left = r->v[1] - r->v[2];
            if (off >= CHUNK || left > CHUNK)
                return -EIO;
            return sk_write(e, WRITE, out, off, left, r->v[0] + off);
        }
        r->v[0] += r->v[1];
        return sk_read(e, READ, in, 0, CHUNK, r->v[0]);
    }
    return -EINVAL;
}
