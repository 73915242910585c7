/* open the FIFO named by the input in an io-wq worker (SK_ASYNC: the open blocks there
 * until a writer comes), then close it: that close is pushed from the worker, long after
 * the SQPOLL thread went to sleep */
enum { OPEN = 1, CLOSE };
static int on_complete(struct sk_event *e)
{
    switch (e->step) {
    case SK_START:
        e->sqe_flags = SK_ASYNC;
        return sk_openat(e, OPEN, -100, 0, O_RDONLY, 0);
    case OPEN:
        if (e->res < 0)
            return e->res;
        return sk_close(e, CLOSE, e->res);
    case CLOSE:
        return sk_finish(e, e->res, 0, 0);
    }
    return -EINVAL;
}
