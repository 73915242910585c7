/* sendfile.c — send a whole file to a socket: read a buffer, send exactly the bytes that
 * read returned (resending the rest after a short send), until end of file.
 *
 *     kr.run(file_fd, socket_fd)  ->  HandlerResult(result=<bytes sent>)
 *
 * A link can't do this: send's length is the byte count read returned. */
#define MSG_NOSIGNAL_ 0x4000
enum { READ = 1, SEND };
/* v[0] file offset, v[1] bytes in the buffer, v[2] of them sent */

static int on_complete(struct sk_event *e)
{
    struct sk_req *r = e->r;
    int fd = r->arg[0], sock = r->arg[1];
    int n = e->res;

    switch (e->step) {
    case SK_START:
        return sk_read(e, READ, fd, 0, SK_BUF_SIZE, 0);
    case READ:
        if (n < 0)
            return n;
        if (n == 0)
            return sk_finish(e, r->v[0], 0, 0);
        r->v[1] = n;
        r->v[2] = 0;
        return sk_send(e, SEND, sock, 0, n, MSG_NOSIGNAL_);
    case SEND:
        if (n < 0)
            return n;
        r->v[2] += n;
        if (r->v[2] < r->v[1]) {
            u32 off = r->v[2], left = r->v[1] - r->v[2];
            if (off >= SK_BUF_SIZE || left > SK_BUF_SIZE)
                return -EIO;
            return sk_send(e, SEND, sock, off, left, MSG_NOSIGNAL_);
        }
        r->v[0] += r->v[1];
        return sk_read(e, READ, fd, 0, SK_BUF_SIZE, r->v[0]);
    }
    return -EINVAL;
}
