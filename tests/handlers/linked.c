/* a linked chain read(arg0) -> nop -> nop; the result has bit k set when step k+1 saw
 * what a working link promises: a read result >= 0 or the failure of a bad fd (-EBADF),
 * the rest 0, or -ECANCELED after a failure. The order of completions goes in v[]. */
static int on_complete(struct sk_event *e)
{
    struct sk_req *r = e->r;
    if (e->step == SK_START) {
        int rc = sk_link(e, 3);
        if (rc)
            return rc;
        sk_read(e, 1, r->arg[0], 0, 16, 0);
        sk_nop(e, 2);
        return sk_nop(e, 3);
    }
    if (e->step > 3)
        return -EINVAL;
    u64 n = r->v[0]++;
    if (n < 3)
        r->v[1 + n] = e->step;
    int ok;
    if (e->step == 1)
        ok = e->res >= 0 || e->res == -EBADF;
    else
        ok = e->res == 0 || e->res == -ECANCELED;
    if (ok)
        r->v[4] |= 1 << (e->step - 1);
    if (e->res == -ECANCELED)
        r->v[5]++;
    if (r->v[0] < 3)
        return 0;
    /* out: the completion order and the cancelled count, one byte each */
    struct sk_buf *b = sk_buf(e);
    if (!b)
        return -EFAULT;
    b->b[0] = r->v[1];
    b->b[1] = r->v[2];
    b->b[2] = r->v[3];
    b->b[3] = r->v[5];
    return sk_finish(e, r->v[4], 0, 4);
}
