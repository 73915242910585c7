/* waits in recv(arg0) for data that may never come; echoes what it gets */
static int on_complete(struct sk_event *e)
{
    if (e->step == SK_START)
        return sk_recv(e, 1, e->r->arg[0], 0, 64, 0);
    if (e->res < 0)
        return e->res;
    return sk_finish(e, e->res, 0, e->res);
}
