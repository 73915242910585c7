/* http.c — an HTTP/1.1 static-file request handler, all in kernel: recv, parse the request
 * line, open (beneath the root), statx, read, send headers and body, then keep-alive
 * (recv again) or close. One request of the KernelRing is one connection.
 *
 *     kr.call(conn_fd, root_dir_fd)  ->  HandlerResult(result=<responses sent>)
 *
 * GET and HEAD; 200, 400 (malformed), 404 (missing, not a regular file, or outside the
 * root), 405 (other methods), 414 (target over 1 KiB), 431 (header over 4 KiB).
 * openat2(RESOLVE_BENEATH) refuses any path that would leave the root, whatever `..`,
 * %2e%2e, absolute path or symlink it uses: the kernel checks, not a parser.
 * Pipelined requests are served in order: bytes after one request's header are scanned as
 * the next request before anything more is received. */
#if SK_BUF_SIZE < 16384
#error "http.c needs KernelRing(buffer_size >= 16384)"
#endif

#define MSG_NOSIGNAL_  0x4000
#define AT_EMPTY_PATH_ 0x1000
#define REQ_MAX   4096             /* receive area [0, 4096) */
#define PATH_OFF  4096             /* decoded path, NUL-terminated */
#define URI_MAX   1024
#define HOW_OFF   5376             /* struct sk_open_how */
#define EMPTY_OFF 5400             /* "" for statx(fd, "", AT_EMPTY_PATH) */
#define STX_OFF   5632             /* struct statx */
#define BODY_OFF  8192             /* headers end here, the body starts here */
#define CHUNK     (SK_BUF_SIZE - BODY_OFF)

/* SCAN and PARSE are NOPs the handler pushes to itself: the verifier walks a bounded loop
 * one iteration at a time and gives up past ~8,000 pending branches, so long work is cut
 * into slices of SCAN_STEP / PARSE_STEP bytes, one completion each. */
enum { RECV = 1, SCAN, PARSE, OPEN, STATX, READ, SEND, CLOSE_FILE, CLOSE_SOCK, SHUTDOWN, DRAIN };
#define SCAN_STEP  64
#define PARSE_STEP 32
enum { F_KEEP = 1, F_HEAD = 2, F_HDR_PENDING = 4, F_CONN_CLOSE = 8, F_CONN_KEEP = 16,
       F_HDR_DONE = 32, /* the blank line ending the header was seen */
       F_LINGER = 64    /* an error ends the connection: drain what the client still sends */ };
/* v[]: */
#define SERVED  v[0]
#define RCVD    v[1]
#define SCANNED v[2]     /* bytes of the receive area scanned */
#define WIN     v[3]     /* the last 8 bytes scanned */
#define FILEFD  v[4]     /* open file + 1; 0 none */
#define SIZE    v[5]
#define FOFF    v[6]     /* file bytes read so far */
#define SLEN    v[7]     /* bytes of the current send */
#define SDONE   v[8]     /* of them sent */
#define SSTART  v[9]     /* buffer offset of the current send */
#define FLAGS   v[10]
#define HLEN    v[11]
#define LWIN    v[12]    /* the same, lowercased */
#define DSTATE  v[13]    /* while parsing: 1 after '?' or '#' */
#define DT      v[14]    /* while parsing: next byte of the target; 0 = not started */
#define DO      v[15]    /* while parsing: bytes of decoded path */
#define BASE    v[16]    /* where the current request starts in the receive area */

#define PUT_LIT(b, off, lit) ({                                                 \
    const char __s[] = lit;                                                     \
    u32 __o = (off);                                                            \
    _Pragma("unroll") for (u32 __i = 0; __i < sizeof(__s) - 1; __i++)           \
        SK_BYTE(b, __o + __i) = __s[__i];                                       \
    __o + (u32)sizeof(__s) - 1; })

/* Write the status line and headers so that they end at BODY_OFF; returns their length. */
static __always_inline u32 put_header(struct sk_buf *b, int status, u64 len, int keep)
{
    u32 nd = 1;
    u64 t = len;
#pragma unroll
    for (int i = 0; i < 19; i++) {
        if (t >= 10) {
            t /= 10;
            nd++;
        }
    }
    u32 sl;
    switch (status) {
    case 200: sl = 17; break;
    case 400: sl = 26; break;
    case 404: sl = 24; break;
    case 405: sl = 51; break;
    case 414: sl = 27; break;
    default:  sl = 47; break;          /* 431 */
    }
    u32 hlen = sl + 16 + nd + 2 + (keep ? 26 : 21);
    u32 o = BODY_OFF - hlen;
    switch (status) {
    case 200: o = PUT_LIT(b, o, "HTTP/1.1 200 OK\r\n"); break;
    case 400: o = PUT_LIT(b, o, "HTTP/1.1 400 Bad Request\r\n"); break;
    case 404: o = PUT_LIT(b, o, "HTTP/1.1 404 Not Found\r\n"); break;
    case 405: o = PUT_LIT(b, o, "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n"); break;
    case 414: o = PUT_LIT(b, o, "HTTP/1.1 414 URI Too Long\r\n"); break;
    default:  o = PUT_LIT(b, o, "HTTP/1.1 431 Request Header Fields Too Large\r\n"); break;
    }
    o = PUT_LIT(b, o, "Content-Length: ");
    t = len;
#pragma unroll
    for (int i = 0; i < 20; i++) {
        if (i < nd) {
            SK_BYTE(b, o + nd - 1 - i) = '0' + t % 10;
            t /= 10;
        }
    }
    o += nd;
    if (keep)
        PUT_LIT(b, o, "\r\nConnection: keep-alive\r\n\r\n");
    else
        PUT_LIT(b, o, "\r\nConnection: close\r\n\r\n");
    return hlen;
}

static __always_inline int start_send(struct sk_event *e, u32 start, u32 len)
{
    struct sk_req *r = e->r;
    r->SSTART = start;
    r->SLEN = len;
    r->SDONE = 0;
    return sk_send(e, SEND, r->arg[0], start, len, MSG_NOSIGNAL_);
}

/* A response without a body; 400, 414 and 431 also end the connection. */
static __always_inline int respond(struct sk_event *e, struct sk_buf *b, int status)
{
    struct sk_req *r = e->r;
    if (status == 400 || status == 414 || status == 431) {
        r->FLAGS &= ~(u64)F_KEEP;
        r->FLAGS |= F_LINGER;
    }
    r->FLAGS |= F_HEAD;               /* no body follows */
    r->SIZE = 0;
    r->FOFF = 0;
    u32 hlen = put_header(b, status, 0, r->FLAGS & F_KEEP);
    return start_send(e, BODY_OFF - hlen, hlen);
}

static __always_inline int scanned(struct sk_event *e, struct sk_buf *b);

/* Wait for the next request; bytes already received after the last one (pipelining) are
 * scanned first. */
static __always_inline int recv_request(struct sk_event *e)
{
    struct sk_req *r = e->r;
    r->WIN = r->LWIN = 0;
    r->FLAGS = r->FILEFD = r->SIZE = r->FOFF = r->HLEN = 0;
    if (r->SCANNED < r->RCVD) {
        r->BASE = r->SCANNED;
        return sk_nop(e, SCAN);
    }
    r->RCVD = r->SCANNED = r->BASE = 0;
    return sk_recv(e, RECV, r->arg[0], 0, REQ_MAX, 0);
}

static __always_inline int close_connection(struct sk_event *e)
{
    struct sk_req *r = e->r;
    if (r->FILEFD) {
        sk_close(e, CLOSE_FILE, r->FILEFD - 1);
        r->FILEFD = 0;
    }
    return sk_close(e, CLOSE_SOCK, r->arg[0]);
}

static __always_inline int response_done(struct sk_event *e)
{
    struct sk_req *r = e->r;
    r->SERVED++;
    if (r->FILEFD) {
        sk_close(e, CLOSE_FILE, r->FILEFD - 1);
        r->FILEFD = 0;
    }
    if (r->FLAGS & F_KEEP)
        return recv_request(e);
    if (r->FLAGS & F_LINGER) {
        /* closing with unread bytes would send a reset that can overtake the response:
         * end our side, read until the client closes (at most 16 x 4 KiB), then close */
        r->RCVD = 0;
        return sk_shutdown(e, SHUTDOWN, r->arg[0], 1);
    }
    return sk_close(e, CLOSE_SOCK, r->arg[0]);
}

static __always_inline int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Scan up to SCAN_STEP new bytes for the blank line that ends the header and for a
 * Connection value. Two rolling 8-byte windows of the last bytes (raw, and lowercased)
 * stand in for state machines: compared with constants, they never become values the
 * verifier has to track precisely, so the loop stays cheap to verify. */
#define END_OF_HEADER 0x0d0a0d0aU              /* "\r\n\r\n" */
#define CONN_CLOSE    0x6e3a20636c6f7365ULL    /* "n: close" */
#define CONN_KEEP     0x6e3a206b6565702dULL    /* "n: keep-" */
static __always_inline void scan(struct sk_req *r, struct sk_buf *b)
{
    /* What the loop carries lives in the request's map memory, read and written through
     * volatile: the verifier then sees unknown values at the top of every iteration, and
     * every path through one iteration ends in the same state (kept in registers, each
     * combination of flags is a state of its own; Linux 7.x's verifier no longer prunes
     * them, and the loop alone exceeds its million-instruction budget). */
    volatile u64 *w = &r->WIN, *lw = &r->LWIN, *fl = &r->FLAGS, *i = &r->SCANNED;
    u32 end = r->RCVD;
    for (u32 k = 0; k < SCAN_STEP; k++) {
        u32 at = *i;
        if (at >= end)
            break;
        u8 c = SK_BYTE(b, at);
        *i = at + 1;
        u64 lo = *lw << 8 | (c | 0x20), raw = *w << 8 | c;
        *lw = lo;
        *w = raw;
        if (lo == CONN_CLOSE)
            *fl |= F_CONN_CLOSE;
        else if (lo == CONN_KEEP)
            *fl |= F_CONN_KEEP;
        if ((u32)raw == END_OF_HEADER || (u16)raw == 0x0a0a) {     /* or bare "\n\n" */
            *fl |= F_HDR_DONE;
            break;
        }
    }
}

/* One slice of parsing the request line. Returns 0 when it pushed the next step (another
 * slice, or the open), an HTTP status to answer with, or -errno. */
static __always_inline int parse(struct sk_event *e, struct sk_buf *b)
{
    struct sk_req *r = e->r;
    u32 base = r->BASE;
    if (r->DT == 0) {                      /* the method, and the target's leading '/' */
        u32 t;
        if (SK_BYTE(b, base) == 'G' && SK_BYTE(b, base + 1) == 'E' &&
            SK_BYTE(b, base + 2) == 'T' && SK_BYTE(b, base + 3) == ' ') {
            t = base + 4;
        } else if (SK_BYTE(b, base) == 'H' && SK_BYTE(b, base + 1) == 'E' &&
                   SK_BYTE(b, base + 2) == 'A' && SK_BYTE(b, base + 3) == 'D' &&
                   SK_BYTE(b, base + 4) == ' ') {
            t = base + 5;
            r->FLAGS |= F_HEAD;
        } else {
            /* a token then a space is a method we don't serve; anything else is malformed */
            for (u32 k = 0; k < 16; k++) {
                int c = SK_BYTE(b, base + k);
                if (c == ' ' && k > 0)
                    return 405;
                if (c < 'A' || c > 'Z')
                    return 400;
            }
            return 400;
        }
        if (SK_BYTE(b, t) != '/')
            return 400;
        r->DT = t + 1;
        r->DO = 0;
        r->DSTATE = 0;
    }
    /* decode the target into PATH_OFF: %XX; stop at ' '; drop from '?' or '#' on. As in
     * scan(), the loop's carried values live in map memory (volatile) */
    volatile u64 *tp = &r->DT, *op = &r->DO, *stop = &r->DSTATE;
    int done = 0;
    for (u32 k = 0; k < PARSE_STEP; k++) {
        u32 t = *tp;
        if (t - base >= URI_MAX + 8)
            return 414;
        int c = SK_BYTE(b, t);
        if (c == '\r' || c == '\n')
            return 400;                    /* no " HTTP/1.x" after the target */
        if (c == ' ') {
            done = 1;
            break;
        }
        *tp = t + 1;
        if (*stop || c == '?' || c == '#') {
            *stop = 1;
            continue;
        }
        if (c == '%') {
            int h = hexval(SK_BYTE(b, t + 1)), l = hexval(SK_BYTE(b, t + 2));
            if (h < 0 || l < 0)
                return 400;
            c = h * 16 + l;
            *tp = t + 3;
        }
        if (c == 0)
            return 400;
        u32 o = *op;
        SK_BYTE(b, PATH_OFF + o) = c;
        *op = o + 1;
    }
    if (!done)                             /* the next slice, in the next completion */
        return sk_nop(e, PARSE);
    u32 t = r->DT, o = r->DO;
    if (o >= URI_MAX)
        return 414;
    /* " HTTP/1.1" or " HTTP/1.0" */
    if (SK_BYTE(b, t + 1) != 'H' || SK_BYTE(b, t + 2) != 'T' || SK_BYTE(b, t + 3) != 'T' ||
        SK_BYTE(b, t + 4) != 'P' || SK_BYTE(b, t + 5) != '/' || SK_BYTE(b, t + 6) != '1' ||
        SK_BYTE(b, t + 7) != '.')
        return 400;
    int minor = SK_BYTE(b, t + 8);
    if (minor == '1')
        r->FLAGS |= (r->FLAGS & F_CONN_CLOSE) ? 0 : F_KEEP;
    else if (minor == '0')
        r->FLAGS |= (r->FLAGS & F_CONN_KEEP) ? F_KEEP : 0;
    else
        return 400;
    if (o == 0 || SK_BYTE(b, PATH_OFF + o - 1) == '/')
        o = PUT_LIT(b, PATH_OFF + o, "index.html") - PATH_OFF;
    SK_BYTE(b, PATH_OFF + o) = 0;
    struct sk_open_how *how = (void *)&b->b[HOW_OFF];
    how->flags = O_RDONLY;
    how->mode = 0;
    how->resolve = SK_RESOLVE_BENEATH | SK_RESOLVE_NO_MAGICLINKS;
    int rc = sk_openat2(e, OPEN, r->arg[1], PATH_OFF, HOW_OFF);
    return rc < 0 ? rc : 0;
}

/* After scanning: answer, go on scanning, parse, or receive more. */
static __always_inline int scanned(struct sk_event *e, struct sk_buf *b)
{
    struct sk_req *r = e->r;
    if (r->FLAGS & F_HDR_DONE) {
        r->DT = 0;
        return sk_nop(e, PARSE);
    }
    if (r->SCANNED < r->RCVD)
        return sk_nop(e, SCAN);
    if (r->RCVD >= REQ_MAX)
        return respond(e, b, 431);
    u32 at = r->RCVD;
    if (at >= REQ_MAX)
        return -EINVAL;
    return sk_recv(e, RECV, r->arg[0], at, REQ_MAX - at, 0);
}

static __always_inline int read_chunk(struct sk_event *e)
{
    struct sk_req *r = e->r;
    u64 left = r->SIZE - r->FOFF;
    u32 n = left < CHUNK ? left : CHUNK;
    return sk_read(e, READ, r->FILEFD - 1, BODY_OFF, n, r->FOFF);
}

static int on_complete(struct sk_event *e)
{
    struct sk_req *r = e->r;
    struct sk_buf *b = sk_buf(e);
    int n = e->res;
    if (!b)
        return -EFAULT;

    switch (e->step) {
    case SK_START:
        r->SERVED = 0;
        return recv_request(e);
    case RECV:
        if (n <= 0)                        /* the client closed (or reset) the connection */
            return close_connection(e);
        r->RCVD += n;
        scan(r, b);
        return scanned(e, b);
    case SCAN:
        scan(r, b);
        return scanned(e, b);
    case PARSE: {
        int status = parse(e, b);
        if (status < 0)
            return status;
        return status ? respond(e, b, status) : 0;
    }
    case OPEN:
        if (n < 0)
            return respond(e, b, 404);
        r->FILEFD = n + 1;
        SK_BYTE(b, EMPTY_OFF) = 0;
        return sk_statx(e, STATX, n, EMPTY_OFF, AT_EMPTY_PATH_, 0x1 | 0x200, STX_OFF);
    case STATX: {
        u16 mode = *(u16 *)&b->b[STX_OFF + 28];
        if (n < 0 || (mode & 0170000) != 0100000)
            return respond(e, b, 404);     /* a directory, a device, ... */
        r->SIZE = *(u64 *)&b->b[STX_OFF + 40];
        r->FOFF = 0;
        r->HLEN = put_header(b, 200, r->SIZE, r->FLAGS & F_KEEP);
        if ((r->FLAGS & F_HEAD) || r->SIZE == 0)
            return start_send(e, BODY_OFF - r->HLEN, r->HLEN);
        r->FLAGS |= F_HDR_PENDING;
        return read_chunk(e);
    }
    case READ: {
        if (n <= 0)                        /* the file shrank or failed: the length is a lie now */
            return close_connection(e);
        r->FOFF += n;
        if (r->FLAGS & F_HDR_PENDING) {    /* the header goes out with the first chunk */
            r->FLAGS &= ~(u64)F_HDR_PENDING;
            u32 h = r->HLEN;
            if (h > 512)
                return -EINVAL;
            return start_send(e, BODY_OFF - h, h + n);
        }
        return start_send(e, BODY_OFF, n);
    }
    case SEND: {
        if (n < 0)
            return close_connection(e);
        r->SDONE += n;
        if (r->SDONE < r->SLEN) {
            u32 off = r->SSTART + r->SDONE, left = r->SLEN - r->SDONE;
            if (off >= SK_BUF_SIZE || left > SK_BUF_SIZE)
                return -EINVAL;
            return sk_send(e, SEND, r->arg[0], off, left, MSG_NOSIGNAL_);
        }
        if (!(r->FLAGS & F_HEAD) && r->FOFF < r->SIZE)
            return read_chunk(e);
        return response_done(e);
    }
    case CLOSE_FILE:
        return 0;
    case SHUTDOWN:
    case DRAIN:
        if (e->step == DRAIN && n > 0 && ++r->RCVD < 16)
            return sk_recv(e, DRAIN, r->arg[0], 0, REQ_MAX, 0);
        if (e->step == SHUTDOWN && n == 0)
            return sk_recv(e, DRAIN, r->arg[0], 0, REQ_MAX, 0);
        return sk_close(e, CLOSE_SOCK, r->arg[0]);
    case CLOSE_SOCK:
        return sk_finish(e, r->SERVED, 0, 0);
    }
    return -EINVAL;
}
