/* at its start, push NOPs until the ring refuses one; finish with that refusal's code
 * (-EBUSY expected) once the NOPs that did go in have completed */
static int on_complete(struct sk_event *e)
{
    struct sk_req *r = e->r;
    if (e->step == SK_START) {
        for (u32 i = 0; i < SK_ENTRIES + 1; i++) {
            int rc = sk_nop(e, 1);
            if (rc) {
                r->v[1] = -rc;
                return 0;
            }
            r->v[0]++;
        }
        return 0;
    }
    if (--r->v[0] == 0)
        return sk_finish(e, -(s64)r->v[1], 0, 0);
    return 0;
}
