"""HTTP/1.1 (RFC 9112) for the Python-side models: the same rules as bpf/handlers/http.c,
so that every model answers every request the same way.

GET and HEAD; 200, 400 (malformed), 403 (the unprivileged user may not read it), 404
(missing, not a regular file, or outside the root), 405 (other methods, with Allow), 413
(a body over BODY_MAX), 414 (target over 1 KiB), 431 (header over 4 KiB), 501 (a request
with Transfer-Encoding), 503 (every connection busy). 400, 413, 414, 431, 501 and 503 end
the connection. Keep-alive by default in HTTP/1.1, on request in HTTP/1.0. A request
body (Content-Length) is read and discarded, never parsed as a request."""
from __future__ import annotations

import re
import functools
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

HEAD_MAX = 4096
URI_MAX = 1024
BODY_MAX = 1 << 20           # nginx's client_max_body_size default (1m)
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 413: "Content Too Large", 414: "URI Too Long",
           431: "Request Header Fields Too Large", 501: "Not Implemented",
           503: "Service Unavailable", 505: "HTTP Version Not Supported"}
CLOSING = (400, 413, 414, 431, 501, 503, 505)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_METHOD = re.compile(rb"[A-Z]{1,15}\Z")       # as http.c: capitals only, like nginx
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])\Z")
_ABSOLUTE = re.compile(rb"https?://[^/?#\s]*", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    """Timeouts (seconds) and sizes. nginx's defaults: client_header_timeout 60,
    keepalive_timeout 75, send_timeout 60, client_max_body_size 1m."""
    header_timeout: float = 60.0      # from a request's first byte to its last header byte
    keepalive_timeout: float = 75.0   # idle between requests
    send_timeout: float = 60.0        # a response the client does not read
    linger_timeout: float = 2.0       # after an error: read what the client still sends
    body_max: int = BODY_MAX
    max_connections: int = 1024       # beyond: the oldest idle connection is closed

    def __post_init__(self):
        for name in ("header_timeout", "keepalive_timeout", "send_timeout", "linger_timeout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 86400 * 365:
                raise ValueError(f"{name} must be a number of seconds > 0, not {v!r}")
        for name, lo in (("body_max", 0), ("max_connections", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= 1 << 40:
                raise ValueError(f"{name} must be an int >= {lo}, not {v!r}")


@dataclass(frozen=True)
class Request:
    status: int               # 200 when well-formed (the file decides 200/403/404)
    head_only: bool = False   # HEAD
    keep: bool = False        # keep the connection open after the response
    target: bytes = b""       # the decoded path (status 200), always starting with "/"
    body: int = 0             # Content-Length: bytes to read and discard after the head


def split_head(buf: bytes) -> tuple[bytes, bytes] | None:
    """(head, rest) once the blank line ending the header is in buf, else None."""
    i = buf.find(b"\r\n\r\n")
    j = buf.find(b"\n\n")
    ends = [(i, 4)] if i >= 0 else []
    if j >= 0:
        ends.append((j, 2))
    if not ends:
        return None
    at, n = min(ends)
    return buf[:at + n], buf[at + n:]


def response_head(status: int, length: int, keep: bool) -> bytes:
    extra = "Allow: GET, HEAD\r\n" if status == 405 else ""
    return (f"HTTP/1.1 {status} {REASONS[status]}\r\n{extra}Content-Length: {length}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n").encode()


PARSED_KEPT = 1024            # request heads whose answer parse() keeps


def parse(head: bytes, body_max: int = BODY_MAX) -> Request:
    """A whole request head (as split_head returns it) -> Request. Every byte may be
    crafted: anything RFC 9112 does not allow is a 400, never a guess.

    The answer is kept for the last PARSED_KEPT distinct heads: parse is a function of its
    arguments alone (a frozen Request, no state), and a client asks the same thing again
    and again on a keep-alive connection, so a repeated head costs a lookup, not a parse.
    A client sending only new heads gets each parsed, in at most PARSED_KEPT * HEAD_MAX
    bytes of kept heads."""
    return _parse_kept(head, body_max)


def _parse(head: bytes, body_max: int) -> Request:
    if head[:1] in (b"\r", b"\n"):
        head = head.lstrip(b"\r\n")           # RFC 9112 2.2: empty lines before the request
    crs = head.count(b"\r")
    if crs:
        if crs != head.count(b"\r\n"):
            return Request(400)               # a bare CR
        head = head.replace(b"\r\n", b"\n")
    lines = head.split(b"\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _METHOD.match(parts[0]):
        return Request(400)                   # two spaces, a missing version, a stray word
    method, target, version = parts
    v = _VERSION.match(version)
    if v is None:
        return Request(400)
    if v.group(1) != b"1":
        return Request(505)
    http11 = v.group(2) != b"0"
    if len(target) > URI_MAX:
        return Request(414)
    absolute = _ABSOLUTE.match(target)
    if absolute:                              # absolute-form: the path follows the authority
        target = target[absolute.end():] or b"/"
        if not target.startswith(b"/"):
            target = b"/" + target
    if not target.startswith(b"/"):
        return Request(400)
    target = target.split(b"?", 1)[0].split(b"#", 1)[0]
    if b"%" in target:
        if re.search(rb"%(?![0-9A-Fa-f]{2})", target):
            return Request(400)
        target = unquote_to_bytes(target)
    if b"\0" in target:
        return Request(400)

    hosts = 0
    lengths: set[bytes] = set()
    chunked = close = keep_alive = False
    for line in lines[1:]:
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            return Request(400)               # obsolete line folding
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            return Request(400)               # no colon, or space before it
        name = name.lower()
        value = value.strip(b" \t")
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            for item in value.split(b","):
                item = item.strip(b" \t")
                if not item.isdigit() or len(item) > 18:
                    return Request(400)
                lengths.add(item.lstrip(b"0") or b"0")
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"connection":
            tokens = {t.strip(b" \t").lower() for t in value.split(b",")}
            close |= b"close" in tokens
            keep_alive |= b"keep-alive" in tokens
    if hosts > 1 or (http11 and hosts == 0):
        return Request(400)                   # RFC 9112 3.2: exactly one Host in HTTP/1.1
    if len(lengths) > 1 or (chunked and lengths):
        return Request(400)                   # RFC 9112 6.3: a smuggling attempt
    if chunked:
        return Request(501)
    body = int(lengths.pop()) if lengths else 0
    if body > body_max:
        return Request(413)
    keep = (not close) if http11 else (keep_alive and not close)
    head_only = method == b"HEAD"
    if method not in (b"GET", b"HEAD"):
        return Request(405, False, keep, body=body)
    return Request(200, head_only, keep, target, body)


_parse_kept = functools.lru_cache(maxsize=PARSED_KEPT)(_parse)
