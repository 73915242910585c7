/* explode.c — a loop whose every path is a verifier state of its own: 2^30 of them. The
 * verifier gives up at a million instructions walked (test_kernel_handlers). */
static int on_complete(struct sk_event *e)
{
    struct sk_buf *b = sk_buf(e);
    if (!b)
        return 0;
    u32 seen = 0;
    for (u32 k = 0; k < 30; k++)            /* 2^30 paths: each a state of its own */
        if (SK_BYTE(b, k) == 'x')
            seen |= 1u << k;
    SK_BYTE(b, seen) = 1;                   /* the offset makes `seen` precise */
    return sk_finish(e, 0, 0, 0);
}
