/* http.c — an HTTP/1.1 static-file request handler, all in kernel: recv, parse the request
 * line and header, open (beneath the root, as the serving user), find its length and that it
 * is a regular file from the new fd's inode (sk_fd_size; statx only on a kernel that can't
 * tell), send headers and body, then keep-alive (recv again) or close. One request of the
 * KernelRing is one connection.
 *
 *     kr.call(conn_fd, root_dir_fd, personality)  ->  HandlerResult(result=<responses sent>)
 *
 * The same rules as sakura_uring/httpd/http.py: GET and HEAD; 200, 400 (malformed: a bad
 * request line, a bare CR, a folded or duplicate header, HTTP/1.1 without Host, a bad or
 * repeated Content-Length), 403 (the serving user may not read it), 404 (missing, not a
 * regular file, or outside the root), 405 (other methods), 413 (a body over 1 MiB), 414
 * (target over 1 KiB), 431 (one request's header over 4 KiB), 501 (Transfer-Encoding),
 * 503 (out of fds), 505 (HTTP/2+ on this port).
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) refuses any path that would leave the
 * root, whatever `..`, %2e%2e, absolute path or symlink it uses: the kernel checks, not a
 * parser; O_NONBLOCK keeps a FIFO from hanging it; the SQE carries the personality given as
 * arg[2] (an unprivileged user's credentials, 0: the ring creator's).
 * A Content-Length body is received and dropped, never parsed as a request. Pipelined
 * requests are served in order: bytes after one request are scanned as the next request
 * before anything more is received, and moved to the start of the receive area when the
 * next request needs more room. v[17..18] say what the connection waits for, and since
 * when, for the application's timeouts (sakura_uring/httpd/kernel.py). */
#if SK_BUF_SIZE < 16384
#error "http.c needs KernelRing(buffer_size >= 16384)"
#endif

SK_NARGS(3);                   /* conn_fd, root_dir_fd, personality */

#define MSG_NOSIGNAL_  0x4000
#define AT_EMPTY_PATH_ 0x1000
#define O_NONBLOCK_    04000
#define O_NOCTTY_      0400
#define O_CLOEXEC_     02000000
#define REQ_MAX   4096             /* receive area [0, 4096) */
#define PATH_OFF  4096             /* decoded path, NUL-terminated */
#define URI_MAX   1024
#define HOW_OFF   5376             /* struct sk_open_how */
#define EMPTY_OFF 5400             /* "" for statx(fd, "", AT_EMPTY_PATH) */
#define STX_OFF   5632             /* struct statx */
#define BODY_OFF  8192             /* headers end here, the body starts here */
#define CHUNK     (SK_BUF_SIZE - BODY_OFF)
#define BODY_MAX  (1 << 20)        /* nginx's client_max_body_size default */

/* SCAN, PARSE and COMPACT are NOPs the handler pushes to itself: the verifier walks a
 * bounded loop one iteration at a time and gives up past ~8,000 pending branches, so long
 * work is cut into slices, one completion each. */
enum { RECV = 1, SCAN, PARSE, OPEN, STATX, READ, SEND, CLOSE_FILE, CLOSE_SOCK, SHUTDOWN, DRAIN,
       DISCARD, COMPACT };
#define SCAN_STEP    64
#define PARSE_STEP   32
#define COMPACT_STEP 64
enum { F_KEEP = 1, F_HEAD = 2, F_HDR_PENDING = 4, F_CONN_CLOSE = 8, F_CONN_KEEP = 16,
       F_HDR_DONE = 32,    /* the blank line ending the header was seen */
       F_LINGER = 64,      /* an error ends the connection: drain what the client still sends */
       F_HOST = 128,       /* a Host header */
       F_CL = 512,         /* a Content-Length was given */
       F_TE = 2048,        /* a Transfer-Encoding header */
       F_BAD = 4096,       /* a bare CR, a folded line, a duplicate Host or Content-Length */
       F_ABS = 16384,      /* absolute-form target */
       F_405 = 32768,      /* a method we don't serve */
       F_COLON = 65536,    /* this header line has its colon */
       F_LINE2 = 131072,   /* past the request line */
       F_LC = 262144 };    /* this line has content */
/* what the connection waits for (v[18]), since v[17] (bpf_ktime_get_ns, CLOCK_MONOTONIC) */
enum { PH_BUSY = 0, PH_IDLE = 1, PH_HEAD = 2, PH_SEND = 3, PH_LINGER = 4 };
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
#define LWIN    v[12]    /* the last 8 bytes, lowercased */
#define DSTATE  v[13]    /* while parsing: 1 after '?' or '#' */
#define DT      v[14]    /* while parsing: next byte of the target; 0 = not started */
#define DO      v[15]    /* while parsing: bytes of decoded path; while compacting: bytes moved */
#define BASE    v[16]    /* where the current request starts in the receive area */
#define WSINCE  v[17]    /* read by the application: see PH_* */
#define PHASE   v[18]
#define CLEN    v[19]    /* Content-Length: body bytes still to drop */
#define LWIN2   v[20]    /* the 8 lowercased bytes before LWIN */
/* while scanning and parsing, the send variables are free: */
#define CL_AT   v[7]     /* where the Content-Length value starts; 0 none */
#define CONN_AT v[8]     /* where the (last) Connection value starts; 0 none */
#define TOKW    v[9]     /* parse_connection(): the current token's last 8 bytes */

static __always_inline void phase(struct sk_req *r, u64 p)
{
    r->PHASE = p;
    r->WSINCE = bpf_ktime_get_ns();
}

#define PUT_LIT(b, off, lit) ({                                                 \
    const char __s[] = lit;                                                     \
    u32 __o = (off);                                                            \
    _Pragma("unroll") for (u32 __i = 0; __i < sizeof(__s) - 1; __i++)           \
        SK_BYTE(b, __o + __i) = __s[__i];                                       \
    __o + (u32)sizeof(__s) - 1; })

/* Status lines: one table, so a line's length is never counted by hand. */
#define STATUS_LINES(X)                                                          \
    X(200, "HTTP/1.1 200 OK\r\n")                                                \
    X(403, "HTTP/1.1 403 Forbidden\r\n")                                         \
    X(404, "HTTP/1.1 404 Not Found\r\n")                                         \
    X(405, "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n")           \
    X(413, "HTTP/1.1 413 Content Too Large\r\n")                                 \
    X(414, "HTTP/1.1 414 URI Too Long\r\n")                                      \
    X(431, "HTTP/1.1 431 Request Header Fields Too Large\r\n")                   \
    X(501, "HTTP/1.1 501 Not Implemented\r\n")                                   \
    X(503, "HTTP/1.1 503 Service Unavailable\r\n")                               \
    X(505, "HTTP/1.1 505 HTTP Version Not Supported\r\n")
#define STATUS_400 "HTTP/1.1 400 Bad Request\r\n"
#define STATUS_LEN(code, lit) case code: sl = sizeof(lit) - 1; break;
#define STATUS_PUT(code, lit) case code: o = PUT_LIT(b, o, lit); break;

static __always_inline int closes(int status)
{
    return status == 400 || status >= 413 && status != 405;
}

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
    STATUS_LINES(STATUS_LEN)
    default: sl = sizeof(STATUS_400) - 1; break;
    }
    u32 hlen = sl + 16 + nd + 2 + (keep ? 26 : 21);
    u32 o = BODY_OFF - hlen;
    switch (status) {
    STATUS_LINES(STATUS_PUT)
    default: o = PUT_LIT(b, o, STATUS_400); break;
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
    phase(r, PH_SEND);
    return sk_send(e, SEND, r->arg[0], start, len, MSG_NOSIGNAL_);
}

/* A response without a body; the errors in closes() also end the connection. */
static __always_inline int respond(struct sk_event *e, struct sk_buf *b, int status)
{
    struct sk_req *r = e->r;
    if (closes(status)) {
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

/* Wait for the next request: first drop what is left of the last one's body; bytes
 * already received after it (pipelining) are scanned before anything more is received. */
static __always_inline int recv_request(struct sk_event *e)
{
    struct sk_req *r = e->r;
    if (r->CLEN) {
        u64 avail = r->RCVD - r->SCANNED;
        u64 take = avail < r->CLEN ? avail : r->CLEN;
        r->SCANNED += take;
        r->CLEN -= take;
        if (r->CLEN) {
            r->RCVD = r->SCANNED = r->BASE = 0;
            if (r->PHASE != PH_HEAD)
                phase(r, PH_HEAD);
            u32 n = r->CLEN < REQ_MAX ? r->CLEN : REQ_MAX;   /* never into the next request */
            return sk_recv(e, DISCARD, r->arg[0], 0, n, 0);
        }
    }
    r->WIN = r->LWIN = r->LWIN2 = 0;
    r->FLAGS = r->FILEFD = r->SIZE = r->FOFF = r->HLEN = 0;
    r->CL_AT = r->CONN_AT = 0;
    if (r->SCANNED < r->RCVD) {
        r->BASE = r->SCANNED;
        phase(r, PH_HEAD);
        return sk_nop(e, SCAN);
    }
    r->RCVD = r->SCANNED = r->BASE = 0;
    phase(r, PH_IDLE);
    return sk_recv(e, RECV, r->arg[0], 0, REQ_MAX, 0);
}

static __always_inline int close_connection(struct sk_event *e)
{
    struct sk_req *r = e->r;
    if (r->FILEFD) {
        sk_close(e, CLOSE_FILE, r->FILEFD - 1);
        r->FILEFD = 0;
    }
    phase(r, PH_BUSY);
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
        phase(r, PH_LINGER);
        return sk_shutdown(e, SHUTDOWN, r->arg[0], 1);
    }
    phase(r, PH_BUSY);
    return sk_close(e, CLOSE_SOCK, r->arg[0]);
}

static __always_inline int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Scan up to SCAN_STEP new bytes for the blank line that ends the header, and for the
 * headers that matter: Host, Content-Length (its value), Transfer-Encoding, Connection (its
 * tokens). Rolling windows of the last 16 bytes (raw, and lowercased) stand in for state
 * machines: compared with constants, they never become values the verifier has to track
 * precisely, so the loop stays cheap to verify. A header name is matched with the line
 * feed before it, so "X-Host:" is not "Host:". */
#define END_OF_HEADER 0x0d0a0d0aU              /* "\r\n\r\n" */
#define W_HOST        0x2a686f73743aULL        /* "\nhost:" (6 bytes; '\n' | 0x20 is '*') */
#define W_CONTENT     0x2a636f6e74656e74ULL    /* "\ncontent" */
#define W_LENGTH      0x2d6c656e6774683aULL    /* "-length:" */
#define W_ANSFER_E    0x616e736665722d65ULL    /* "ansfer-e" (of "\ntransfer-encoding:") */
#define W_NCODING     0x6e636f64696e673aULL    /* "ncoding:" */
#define W_CON         0x2a636f6eULL            /* "\ncon" (4 bytes) */
#define W_NECTION     0x6e656374696f6e3aULL    /* "nection:" */
#define W_CLOSE       0x636c6f7365ULL          /* "close" */
#define W_EP_ALIVE    0x65702d616c697665ULL    /* "ep-alive": the last 8 of "keep-alive" */
static __always_inline void scan(struct sk_req *r, struct sk_buf *b)
{
    /* What the loop carries lives in the request's map memory, read and written through
     * volatile: the verifier then sees unknown values at the top of every iteration, and
     * every path through one iteration ends in the same state (kept in registers, each
     * combination of flags is a state of its own; Linux 7.x's verifier no longer prunes
     * them, and the loop alone exceeds its million-instruction budget). */
    volatile u64 *w = &r->WIN, *lw = &r->LWIN, *lw2 = &r->LWIN2, *fl = &r->FLAGS,
                 *i = &r->SCANNED;
    u32 end = r->RCVD;
    for (u32 k = 0; k < SCAN_STEP; k++) {
        u32 at = *i;
        if (at >= end)
            break;
        u8 c = SK_BYTE(b, at);
        *i = at + 1;
        u64 prev = *w, plo = *lw;
        /* c | 0x20 lowercases letters without a branch (a branch would split every later
         * state in two); it maps '\n' to '*' and '\r' to '-', which the constants expect */
        *lw2 = *lw2 << 8 | plo >> 56;
        *lw = plo << 8 | (c | 0x20);
        *w = prev << 8 | c;
        /* flags are changed in memory (volatile), never carried in a register: a flag set
         * in a register is a known bit, and each combination would be a state of its own.
         * Header values are not looked at here (each branch here is walked by the verifier
         * at every one of SCAN_STEP iterations): their offsets are kept, and parse() reads
         * them once the header is complete. */
        if (c == '\n') {                                 /* a line ends */
            if ((*fl & (F_LC | F_LINE2 | F_COLON)) == (F_LC | F_LINE2))
                *fl |= F_BAD;                            /* a header line without a colon */
            if (*fl & F_LC)                              /* (empty lines before the request) */
                *fl |= F_LINE2;
            *fl &= ~(u64)(F_LC | F_COLON);
        } else if (c == '\r') {
            if ((u8)prev == '\r')
                *fl |= F_BAD;                            /* a bare CR */
        } else {
            u8 p = prev;
            if (p == '\r' || (p == '\n' && (c == ' ' || c == '\t')))
                *fl |= F_BAD;                            /* a bare CR; obsolete line folding */
            *fl |= F_LC;
            if (c == ':' && (*fl & (F_COLON | F_LINE2)) == F_LINE2) {   /* a header name */
                *fl |= F_COLON;
                u64 lo = *lw, hi = *lw2;
                if ((lo & 0xffffffffffffULL) == W_HOST)
                    *fl |= (*fl & F_HOST) ? F_BAD : F_HOST;
                else if (lo == W_LENGTH && hi == W_CONTENT) {
                    *fl |= (*fl & F_CL) ? F_BAD : F_CL;
                    r->CL_AT = at + 1;
                } else if (lo == W_NCODING && hi == W_ANSFER_E)
                    *fl |= F_TE;
                else if (lo == W_NECTION && (hi & 0xffffffffULL) == W_CON)
                    r->CONN_AT = at + 1;                 /* (the last one counts) */
            }
        }
        u64 raw = *w;
        if ((u32)raw == END_OF_HEADER || (u16)raw == 0x0a0a) {     /* or bare "\n\n" */
            *fl |= F_HDR_DONE;
            break;
        }
    }
}

/* The Content-Length value at CL_AT: digits, optional whitespace around them, nothing
 * else (a list, even of equal values, is refused like nginx does). -> 0, or 400/413. */
static __always_inline int parse_length(struct sk_req *r, struct sk_buf *b)
{
    volatile u64 *v = &r->CLEN, *digits = &r->TOKW;
    u32 at = r->CL_AT;
    *v = 0;
    *digits = 0;
    for (u32 k = 0; k < 32; k++) {
        int c = SK_BYTE(b, at + k);
        if (c >= '0' && c <= '9') {
            if (*digits > 0 && (r->FLAGS & F_COLON))   /* a digit after a space */
                return 400;
            if (*v > BODY_MAX)
                return 413;
            *v = *v * 10 + (c - '0');
            *digits = *digits + 1;
        } else if (c == ' ' || c == '\t') {
            if (*digits)
                r->FLAGS |= F_COLON;       /* (free after scanning): digits have ended */
        } else if (c == '\r' || c == '\n') {
            return *digits ? 0 : 400;
        } else {
            return 400;
        }
    }
    return 400;
}

/* The Connection value at CONN_AT, a comma-separated token list: sets F_CONN_CLOSE and
 * F_CONN_KEEP. Tokens past 32 bytes of the value are not looked at. */
static __always_inline void parse_connection(struct sk_req *r, struct sk_buf *b)
{
    volatile u64 *tw = &r->TOKW, *len = &r->HLEN;
    u32 at = r->CONN_AT;
    *tw = 0;
    *len = 0;
    for (u32 k = 0; k < 32; k++) {
        int c = SK_BYTE(b, at + k);
        if (c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            if (*len == 5 && *tw == W_CLOSE)
                r->FLAGS |= F_CONN_CLOSE;
            if (*len == 10 && *tw == W_EP_ALIVE)
                r->FLAGS |= F_CONN_KEEP;
            *tw = 0;
            *len = 0;
            if (c == '\r' || c == '\n')
                break;
        } else {
            *tw = *tw << 8 | (c | 0x20);
            *len = *len + 1;
        }
    }
    *len = 0;
}

/* One slice of parsing the request line. Returns 0 when it pushed the next step (another
 * slice, or the open), an HTTP status to answer with, or -errno. */
static __always_inline int parse(struct sk_event *e, struct sk_buf *b)
{
    struct sk_req *r = e->r;
    u32 base = r->BASE;
    if (r->DT == 0) {                      /* the method, and the target's start */
        /* RFC 9112 2.2: empty lines before a request are ignored */
        for (u32 k = 0; k < 8; k++) {
            int c = SK_BYTE(b, base);
            if (c != '\r' && c != '\n')
                break;
            base++;
        }
        r->BASE = base;
        u32 t = 0;
        if (SK_BYTE(b, base) == 'G' && SK_BYTE(b, base + 1) == 'E' &&
            SK_BYTE(b, base + 2) == 'T' && SK_BYTE(b, base + 3) == ' ') {
            t = base + 4;
        } else if (SK_BYTE(b, base) == 'H' && SK_BYTE(b, base + 1) == 'E' &&
                   SK_BYTE(b, base + 2) == 'A' && SK_BYTE(b, base + 3) == 'D' &&
                   SK_BYTE(b, base + 4) == ' ') {
            t = base + 5;
            r->FLAGS |= F_HEAD;
        } else {
            /* a token of capitals then a space is a method we don't serve (405 once the
             * rest proved well-formed); anything else is malformed */
            for (u32 k = 0; k < 16; k++) {
                int c = SK_BYTE(b, base + k);
                if (c == ' ' && k > 0) {
                    t = base + k + 1;
                    break;
                }
                if (c < 'A' || c > 'Z')
                    return 400;
            }
            if (!t)
                return 400;
            r->FLAGS |= F_405;
        }
        int c0 = SK_BYTE(b, t);
        if (c0 == '/') {
            r->DT = t + 1;
        } else if ((c0 | 0x20) == 'h' && (SK_BYTE(b, t + 1) | 0x20) == 't' &&
                   (SK_BYTE(b, t + 2) | 0x20) == 't' && (SK_BYTE(b, t + 3) | 0x20) == 'p') {
            /* absolute-form, http://authority/path: the path is what we serve */
            u32 a = t + 4;
            if ((SK_BYTE(b, a) | 0x20) == 's')
                a++;
            if (SK_BYTE(b, a) != ':' || SK_BYTE(b, a + 1) != '/' || SK_BYTE(b, a + 2) != '/')
                return 400;
            r->DT = a + 3;                 /* the authority is skipped by the loop below */
            r->FLAGS |= F_ABS;
        } else {
            return 400;
        }
        r->DO = 0;
        r->DSTATE = (r->FLAGS & F_ABS) ? 2 : 0;
    }
    /* decode the target into PATH_OFF: %XX; stop at ' '; drop from '?' or '#' on; skip an
     * absolute-form's authority (DSTATE 2) up to the path's '/'. As in scan(), the loop's
     * carried values live in map memory (volatile) */
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
        u64 st = *stop;
        if (st == 2) {
            if (c == '/')
                *stop = 0;
            else if (c == '?' || c == '#')
                *stop = 1;
            continue;
        }
        if (st || c == '?' || c == '#') {
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
    /* " HTTP/d.d" and the end of the line, nothing else */
    if (SK_BYTE(b, t + 1) != 'H' || SK_BYTE(b, t + 2) != 'T' || SK_BYTE(b, t + 3) != 'T' ||
        SK_BYTE(b, t + 4) != 'P' || SK_BYTE(b, t + 5) != '/' || SK_BYTE(b, t + 7) != '.')
        return 400;
    int major = SK_BYTE(b, t + 6), minor = SK_BYTE(b, t + 8), eol = SK_BYTE(b, t + 9);
    if (major < '0' || major > '9' || minor < '0' || minor > '9')
        return 400;
    if (!(eol == '\n' || (eol == '\r' && SK_BYTE(b, t + 10) == '\n')))
        return 400;
    if (major != '1')
        return 505;
    if (r->CONN_AT)
        parse_connection(r, b);
    u64 f = r->FLAGS;
    if (minor != '0')                      /* 1.1 (and 1.x: treated as 1.1) */
        r->FLAGS = f | ((f & F_CONN_CLOSE) ? 0 : F_KEEP);
    else
        r->FLAGS = f | ((f & F_CONN_KEEP) && !(f & F_CONN_CLOSE) ? F_KEEP : 0);
    if (f & F_BAD)
        return 400;
    if (minor != '0' && !(f & F_HOST))
        return 400;                        /* RFC 9112 3.2: HTTP/1.1 needs a Host, even with
                                              an absolute-form target */
    if (f & F_TE)
        return (f & F_CL) ? 400 : 501;     /* both: a smuggling attempt */
    if (f & F_CL) {
        int bad = parse_length(r, b);
        if (bad)
            return bad;
        if (r->CLEN > BODY_MAX)
            return 413;
    }
    if (f & F_405)
        return 405;                        /* the body, if any, is dropped before the next */
    if (o == 0 || SK_BYTE(b, PATH_OFF + o - 1) == '/')
        o = PUT_LIT(b, PATH_OFF + o, "index.html") - PATH_OFF;
    SK_BYTE(b, PATH_OFF + o) = 0;
    struct sk_open_how *how = (void *)&b->b[HOW_OFF];
    how->flags = O_RDONLY | O_NONBLOCK_ | O_NOCTTY_ | O_CLOEXEC_;
    how->mode = 0;
    how->resolve = SK_RESOLVE_BENEATH | SK_RESOLVE_NO_MAGICLINKS;
    e->personality = r->arg[2];            /* open with the serving user's permissions */
    int rc = sk_openat2(e, OPEN, r->arg[1], PATH_OFF, HOW_OFF);
    return rc < 0 ? rc : 0;
}

/* After scanning: answer, go on scanning, parse, or receive more. */
static __always_inline int scanned(struct sk_event *e, struct sk_buf *b)
{
    struct sk_req *r = e->r;
    if (r->FLAGS & F_HDR_DONE) {
        r->DT = 0;
        phase(r, PH_BUSY);
        return sk_nop(e, PARSE);
    }
    if (r->SCANNED < r->RCVD)
        return sk_nop(e, SCAN);
    if (r->RCVD >= REQ_MAX) {
        if (r->BASE == 0)                  /* this request's header alone fills the area */
            return respond(e, b, 431);
        r->DO = 0;                         /* pipelined: move it to the start first */
        return sk_nop(e, COMPACT);
    }
    u32 at = r->RCVD;
    if (at >= REQ_MAX)
        return -EINVAL;
    return sk_recv(e, RECV, r->arg[0], at, REQ_MAX - at, 0);
}

/* One slice of moving the current request [BASE, RCVD) to the start of the area. */
static __always_inline int compact(struct sk_event *e, struct sk_buf *b)
{
    struct sk_req *r = e->r;
    u32 base = r->BASE, len = r->RCVD - base;
    volatile u64 *done = &r->DO;
    for (u32 k = 0; k < COMPACT_STEP; k++) {
        u32 at = *done;
        if (at >= len)
            break;
        SK_BYTE(b, at) = SK_BYTE(b, base + at);
        *done = at + 1;
    }
    if (r->DO < len)
        return sk_nop(e, COMPACT);
    r->RCVD = len;
    r->SCANNED -= base;
    if (r->CL_AT)
        r->CL_AT -= base;
    if (r->CONN_AT)
        r->CONN_AT -= base;
    r->BASE = 0;
    return scanned(e, b);
}

static __always_inline int statx_file(struct sk_event *e, struct sk_buf *b, int fd)
{
    SK_BYTE(b, EMPTY_OFF) = 0;
    return sk_statx(e, STATX, fd, EMPTY_OFF, AT_EMPTY_PATH_, 0x1 | 0x200, STX_OFF);
}

static __always_inline int read_chunk(struct sk_event *e)
{
    struct sk_req *r = e->r;
    u64 left = r->SIZE - r->FOFF;
    u32 n = left < CHUNK ? left : CHUNK;
    return sk_read(e, READ, r->FILEFD - 1, BODY_OFF, n, r->FOFF);
}

/* The file's length is known (from its inode or a statx): the header, then the body in
 * chunks, the first one sent with the header. */
static __always_inline int serve_length(struct sk_event *e, struct sk_buf *b, u64 size)
{
    struct sk_req *r = e->r;
    r->SIZE = size;
    r->FOFF = 0;
    r->HLEN = put_header(b, 200, size, r->FLAGS & F_KEEP);
    if ((r->FLAGS & F_HEAD) || size == 0)
        return start_send(e, BODY_OFF - r->HLEN, r->HLEN);
    r->FLAGS |= F_HDR_PENDING;
    return read_chunk(e);
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
        r->CLEN = 0;
        return recv_request(e);
    case RECV:
        if (n <= 0)                        /* the client closed (or reset) the connection */
            return close_connection(e);
        if (r->PHASE == PH_IDLE)           /* a request's first bytes: its header timeout */
            phase(r, PH_HEAD);
        r->RCVD += n;
        scan(r, b);
        if (r->FLAGS & F_HDR_DONE) {       /* the whole header in one receive: parse now */
            r->DT = 0;
            phase(r, PH_BUSY);
            int status = parse(e, b);
            if (status < 0)
                return status;
            return status ? respond(e, b, status) : 0;
        }
        return scanned(e, b);
    case SCAN:
        scan(r, b);
        return scanned(e, b);
    case COMPACT:
        return compact(e, b);
    case PARSE: {
        int status = parse(e, b);
        if (status < 0)
            return status;
        return status ? respond(e, b, status) : 0;
    }
    case OPEN: {
        if (n < 0)
            return respond(e, b, n == -EACCES || n == -EPERM ? 403 :
                                 n == -EMFILE || n == -ENFILE ? 503 : 404);
        r->FILEFD = n + 1;
        /* The new fd's file, from the file table (sk_fd_size: no statx, which io_uring
         * always hands to an io-wq worker): a regular file is read in exact chunks from
         * here, anything else is a 404 before a byte of it is read. A kernel that can't
         * tell asks statx. */
        s64 size = sk_fd_size(e, n);
        if (size == -EINVAL)
            return respond(e, b, 404);
        if (size >= 0)
            return serve_length(e, b, size);
        return statx_file(e, b, n);
    }
    case STATX: {
        u16 mode = *(u16 *)&b->b[STX_OFF + 28];
        if (n < 0 || (mode & 0170000) != 0100000)
            return respond(e, b, 404);     /* a directory, FIFO, device, ... */
        return serve_length(e, b, *(u64 *)&b->b[STX_OFF + 40]);
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
        if (r->SDONE < r->SLEN) {          /* a short send: the rest */
            u32 off = r->SSTART + r->SDONE, left = r->SLEN - r->SDONE;
            if (off >= SK_BUF_SIZE || left > SK_BUF_SIZE)
                return -EINVAL;
            phase(r, PH_SEND);
            return sk_send(e, SEND, r->arg[0], off, left, MSG_NOSIGNAL_);
        }
        if (!(r->FLAGS & F_HEAD) && r->FOFF < r->SIZE)
            return read_chunk(e);
        return response_done(e);
    }
    case DISCARD:                          /* body bytes: dropped */
        if (n <= 0)
            return close_connection(e);
        r->CLEN = (u64)n < r->CLEN ? r->CLEN - n : 0;
        return recv_request(e);
    case CLOSE_FILE:
        return 0;
    case SHUTDOWN:
    case DRAIN:
        if (e->step == DRAIN && n > 0 && ++r->RCVD < 16)
            return sk_recv(e, DRAIN, r->arg[0], 0, REQ_MAX, 0);
        if (e->step == SHUTDOWN && n == 0)
            return sk_recv(e, DRAIN, r->arg[0], 0, REQ_MAX, 0);
        phase(r, PH_BUSY);
        return sk_close(e, CLOSE_SOCK, r->arg[0]);
    case CLOSE_SOCK:
        return sk_finish(e, r->SERVED, 0, 0);
    }
    return -EINVAL;
}
