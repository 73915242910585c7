/* arg0 chains of arg1 NOPs each, in parallel; finish with arg2 when all have ended */
static int on_complete(struct sk_event *e)
{
    struct sk_req *r = e->r;
    if (e->step == SK_START) {
        for (u32 i = 0; i < 8; i++) {
            if (i >= r->arg[0])
                break;
            int rc = sk_nop(e, 1);
            if (rc)
                return rc;
        }
        return 0;
    }
    if (e->step < r->arg[1])
        return sk_nop(e, e->step + 1);
    r->v[0]++;                      /* NOP completions run one at a time (SQPOLL thread) */
    if (r->v[0] == r->arg[0])
        return sk_finish(e, r->arg[2], 0, 0);
    return 0;
}
