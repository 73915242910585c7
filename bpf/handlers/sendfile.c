/* sendfile.c — send a whole file to a socket: read a buffer, send exactly the bytes that
 * read returned (resending the rest after a short send), until end of file.
 *
 *     kr.run(file_fd, socket_fd)  ->  HandlerResult(result=<bytes sent>)
 *
 * A link can't do this: send's length is the byte count read returned. */
#include "pump.h"

SK_NARGS(2);                   /* file_fd, socket_fd */

static int on_complete(struct sk_event *e)
{
    return pump(e, e->r->arg[0], e->r->arg[1], SK_BUF_SIZE, 1);
}
