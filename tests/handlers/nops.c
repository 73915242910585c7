/* arg0 NOP steps one after another, then finish with arg1 (the caller's request id) */
static int on_complete(struct sk_event *e)
{
    if (e->step < e->r->arg[0])
        return sk_nop(e, e->step + 1);
    return sk_finish(e, e->r->arg[1], 0, 0);
}
