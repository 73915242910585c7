/* forgets to push or finish: the SDK must finish the request for it */
static int on_complete(struct sk_event *e)
{
    return 0;
}
