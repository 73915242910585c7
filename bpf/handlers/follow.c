/* follow.c — follow a path, all in kernel: open and read a small file that names another
 * file, then open and read that file and return its bytes (up to the buffer size).
 *
 *     kr.run(data=b"/path/to/pointer\0")  ->  HandlerResult(result=n, data=<n bytes>)
 *
 * A chain of links can't do this: the second open needs the *content* of the first read. */
#define AT_FDCWD_ (-100)
SK_NARGS(0);
enum { OPEN_PTR = 1, READ_PTR, CLOSE_PTR, OPEN_TARGET, READ_TARGET, CLOSE_TARGET };

static int on_complete(struct sk_event *e)
{
    struct sk_req *r = e->r;
    struct sk_buf *b;
    int n = e->res;

    switch (e->step) {
    case SK_START:                               /* the input is the pointer file's path */
        if (r->in_len == 0)
            return -EINVAL;
        return sk_openat(e, OPEN_PTR, AT_FDCWD_, 0, O_RDONLY, 0);
    case OPEN_PTR:
        if (n < 0)
            return n;
        r->v[0] = n;
        return sk_read(e, READ_PTR, n, 0, 4095, 0);
    case READ_PTR:
        sk_close(e, CLOSE_PTR, r->v[0]);
        if (n < 0)
            return n;
        b = sk_buf(e);
        if (!b || n <= 0 || n > 4095)
            return -ENOENT;
        /* the path is the content, without a trailing newline, NUL-terminated */
        sk_putc(b, n, 0);
        if (sk_getc(b, n - 1) == '\n')
            sk_putc(b, n - 1, 0);
        return sk_openat(e, OPEN_TARGET, AT_FDCWD_, 0, O_RDONLY, 0);
    case CLOSE_PTR:
    case CLOSE_TARGET:
        return 0;
    case OPEN_TARGET:
        if (n < 0)
            return n;
        r->v[1] = n;
        return sk_read(e, READ_TARGET, n, 0, SK_BUF_SIZE, 0);
    case READ_TARGET:
        sk_close(e, CLOSE_TARGET, r->v[1]);
        if (n < 0)
            return n;
        return sk_finish(e, n, 0, n);
    }
    return -EINVAL;
}
