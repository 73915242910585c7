"""Helpers shared by the test modules."""
import os

import sakura_uring as su


def open_fds() -> set[str]:
    """This process's fds. Check a leak with `not open_fds() - before`: an fd an earlier
    test left to the garbage collector may close meanwhile, and that is no leak."""
    return set(os.listdir("/proc/self/fd"))


def assert_pools_full(ring: su.Ring) -> None:
    assert ring.inflight == 0
    assert ring.free_slots == ring.slots - len(ring._registered)
    assert ring.free_buffers == ring.buffers


# HTTP requests every server model must answer the same way: (request, status)
BAD_REQUESTS = [
    (b"GET /nope HTTP/1.1\r\n\r\n", 404),
    (b"GET /sub HTTP/1.1\r\n\r\n", 404),                 # a directory
    (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"DELETE /x HTTP/1.1\r\n\r\n", 405),
    (b"garbage\r\n\r\n", 400),
    (b"GET noslash HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 400),
    (b"GET /%zz HTTP/1.1\r\n\r\n", 400),
    (b"GET /%00 HTTP/1.1\r\n\r\n", 400),
    (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nX: " + b"y" * 5000 + b"\r\n\r\n", 431),
]

# targets that try to leave the document root (its parent holds a file named "secret")
TRAVERSALS = ["/../secret", "/%2e%2e/secret", "/%2E%2E%2Fsecret", "/sub/../../secret",
              "//etc/passwd", "/escape", "/sub/%2e%2e/%2e%2e/secret"]


def make_docroot(root) -> None:
    """The document root the HTTP tests serve."""
    import os as _os
    (root / "index.html").write_bytes(b"<h1>sakura</h1>\n")
    (root / "big.bin").write_bytes(_os.urandom(300_001))
    (root / "a b.txt").write_bytes(b"space")
    (root / "empty").write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_bytes(b"sub index")
    (root / "escape").symlink_to("/etc/passwd")
    (root.parent / "secret").write_bytes(b"outside the root")


def http_get(port: int, path: str, method: str = "GET"):
    """One request on a fresh connection: (response, body)."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


def http_raw(port: int, request: bytes, *, tolerate_reset: bool = False) -> bytes:
    """Send raw bytes, read until the server closes. tolerate_reset: a server without a
    lingering close may reset the connection after its answer."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            if not tolerate_reset:
                raise
        return out


def assert_answers_bad_request(out: bytes, status: int) -> None:
    """The answer to a BAD_REQUESTS entry followed by a good request."""
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:80]
    if status in (400, 414, 431):                         # and the connection ends there
        assert out.count(b"HTTP/1.1 ") == 1
    if status == 405:
        assert b"Allow: GET, HEAD\r\n" in out


def require_kernel_engine() -> None:
    """For a test of kernel handlers that opens no KernelRing first: refuse as it would."""
    e = su.engines()["kernel"]
    if not e:
        from sakura_uring.kernel import KernelHandlersUnavailable
        raise KernelHandlersUnavailable(f"kernel handlers are unavailable: {e.reason}")


def require_link_engine() -> None:
    """For a test whose chains pass files between steps in other threads (where the
    library's refusal would not reach pytest): refuse the same way up front."""
    e = su.engines()["link"]
    if not e:
        raise su.UnsupportedOperation(e.reason)
