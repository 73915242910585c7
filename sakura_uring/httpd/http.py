"""HTTP/1.1 for the Python-side models: the same rules as bpf/handlers/http.c, so that
every model answers every request the same way.

GET and HEAD; 200, 400 (malformed), 404 (missing, not a regular file, or outside the root),
405 (other methods, with Allow), 414 (target over 1 KiB), 431 (header over 4 KiB). 400, 414
and 431 end the connection. Keep-alive by default in HTTP/1.1, on request in HTTP/1.0."""
from __future__ import annotations

import os
import socket
import stat
import threading
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

HEAD_MAX = 4096
URI_MAX = 1024
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           414: "URI Too Long", 431: "Request Header Fields Too Large"}
CLOSING = (400, 414, 431)


@dataclass(frozen=True)
class Request:
    status: int               # 200 when the request is well-formed and names a file
    head_only: bool = False   # HEAD
    keep: bool = False        # keep the connection open after the response
    path: str | None = None   # absolute path of the file to send (status 200)
    size: int = 0


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


class Site:
    """A document root. Resolving a target costs no system call after the first time:
    decisions (path under the root, regular file, size) are cached, as nginx's
    open_file_cache does; files are served as they were when first asked for."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"the document root {root!r} is not a directory")
        self._cache: dict[bytes, tuple[str, int] | None] = {}

    def resolve(self, target: bytes) -> tuple[str, int] | None:
        hit = self._cache.get(target, False)
        if hit is not False:
            return hit
        rel = target.lstrip(b"/")
        if not rel or rel.endswith(b"/"):
            rel += b"index.html"
        full = os.path.realpath(os.path.join(self.root, os.fsdecode(rel)))
        found = None
        if full.startswith(self.root + os.sep):
            try:
                st = os.stat(full)
                if stat.S_ISREG(st.st_mode):
                    found = (full, st.st_size)
            except OSError:
                pass
        if len(self._cache) < 100_000:
            self._cache[target] = found
        return found

    def parse(self, head: bytes) -> Request:
        line, _, rest = head.partition(b"\n")
        line = line.rstrip(b"\r")
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[0]:
            method = parts[0] if parts else b""
            return Request(405 if method.isalpha() and method.isupper() and len(parts) > 1
                           else 400)
        method, target, version = parts
        if method not in (b"GET", b"HEAD"):
            return Request(405 if method.isalpha() and method.isupper() else 400)
        if len(target) > URI_MAX:
            return Request(414)
        if not target.startswith(b"/") or version not in (b"HTTP/1.1", b"HTTP/1.0"):
            return Request(400)
        target = target.split(b"?", 1)[0].split(b"#", 1)[0]
        if b"%" in target:
            try:
                for i in range(len(target)):
                    if target[i:i + 1] == b"%":
                        int(target[i + 1:i + 3], 16)
            except ValueError:
                return Request(400)
            target = unquote_to_bytes(target)
        if b"\0" in target:
            return Request(400)
        conn = b""
        for h in rest.lower().split(b"\n"):
            if h.startswith(b"connection:"):
                conn = h[11:].strip()
        keep = conn != b"close" if version == b"HTTP/1.1" else conn == b"keep-alive"
        found = self.resolve(target)
        if found is None:
            return Request(404, method == b"HEAD", keep)
        return Request(200, method == b"HEAD", keep, found[0], found[1])


def accept_loop(listener: socket.socket, stop: threading.Event, ready: threading.Event,
                on_connection) -> None:
    """Blocking accepts for the models whose handlers don't accept themselves; wakes every
    0.2 s to see `stop`. on_connection(conn) takes each accepted socket."""
    listener.settimeout(0.2)
    ready.set()
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        conn.settimeout(None)
        on_connection(conn)
