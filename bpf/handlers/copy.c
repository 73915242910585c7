/* copy.c — copy a file in chunks of up to 64 KiB until end of file: each write is exactly
 * the bytes the read before it returned (a short write is finished before reading on).
 *
 *     kr.run(in_fd, out_fd)  ->  HandlerResult(result=<bytes copied>)          */
#include "pump.h"

SK_NARGS(2);                   /* in_fd, out_fd */

static int on_complete(struct sk_event *e)
{
    return pump(e, e->r->arg[0], e->r->arg[1], SK_BUF_SIZE < 65536 ? SK_BUF_SIZE : 65536, 0);
}
