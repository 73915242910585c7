"""The HTTP request handler (bpf/handlers/http.c) against real clients: every byte of
every response is produced by BPF in kernel context; Python only accepts connections."""
import http.client
import os
import socket
import threading

import pytest

from sakura_uring.kernel import KernelRing, handler_path

from helpers import (BAD_REQUESTS, TRAVERSALS, assert_answers_bad_request, http_get, http_raw,
                     make_docroot, open_fds)

pytestmark = pytest.mark.needs("kernel")


class Server:
    def __init__(self, root):
        self.kr = KernelRing(handler_path("http"))
        self.rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.connections = []
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.ls.accept()
            except OSError:
                return
            # the handler owns the descriptor from here and closes it
            self.connections.append(self.kr.call(conn.detach(), self.rootfd, 0))

    def client(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def close(self):
        self.ls.close()
        self.kr.close()
        os.close(self.rootfd)


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    make_docroot(root)
    srv = Server(root)
    yield srv
    srv.close()


def get(srv, path, method="GET"):
    return http_get(srv.port, path, method)


def test_get_serves_files_byte_for_byte(www):
    r, body = get(www, "/")
    assert (r.status, body) == (200, b"<h1>sakura</h1>\n")
    r, body = get(www, "/big.bin")
    assert r.status == 200 and int(r.getheader("Content-Length")) == 300_001 == len(body)
    r, body = get(www, "/sub/")
    assert body == b"sub index"
    assert get(www, "/a%20b.txt")[1] == b"space"
    assert get(www, "/empty")[1] == b""
    assert get(www, "/index.html?v=1#top")[1] == b"<h1>sakura</h1>\n"


def test_head_has_the_length_and_no_body(www):
    r, body = get(www, "/big.bin", "HEAD")
    assert r.status == 200 and r.getheader("Content-Length") == "300001" and body == b""


def test_keep_alive_serves_many_requests_on_one_connection(www):
    c = www.client()
    for path in ["/", "/big.bin", "/nope", "/", "/sub/"] * 4:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        assert r.getheader("Connection") == "keep-alive"
    c.close()


def test_connection_close_and_http10(www):
    out = http_raw(www.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in out
    assert out.endswith(b"<h1>sakura</h1>\n")            # and then the server closed it
    out = http_raw(www.port, b"GET / HTTP/1.0\r\n\r\n")
    assert b"Connection: close" in out and out.endswith(b"<h1>sakura</h1>\n")
    out = http_raw(www.port, b"GET / HTTP/1.1\nHost: x\nConnection: close\n\n")   # bare LF line ends
    assert out.startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize("request_,status", BAD_REQUESTS)
def test_bad_requests_get_the_right_status(www, request_, status):
    out = http_raw(www.port, request_ + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_answers_bad_request(out, status)


@pytest.mark.parametrize("path", TRAVERSALS)
def test_nothing_outside_the_root_is_served(www, path):
    r, body = get(www, path)
    assert r.status == 404 and body == b""


def test_connections_end_with_their_count_and_no_fd_left(www):
    before = open_fds()
    n0 = len(www.connections)
    for _ in range(20):
        c = www.client()
        for _ in range(3):
            c.request("GET", "/")
            c.getresponse().read()
        c.close()
    for f in www.connections[n0:n0 + 20]:
        assert f.result(5).result == 3                     # responses on that connection
    assert not open_fds() - before


def test_files_are_measured_by_their_inode_with_no_statx(tmp_path):
    """A file that fits the first read, one of several chunks and a HEAD are answered with
    their length and no statx (io_uring hands every statx to an io-wq worker): the handler
    reads the length from the new fd's inode (sk_fd_size), traced."""
    from sakura_uring.trace import DispatchTracer

    from sakura_uring.kernel.btf import file_offsets
    small, large = os.urandom(1000), os.urandom(200_003)
    (tmp_path / "small").write_bytes(small)
    (tmp_path / "large").write_bytes(large)
    srv = Server(tmp_path)
    try:
        get(srv, "/small")                               # the handler is warm
        with DispatchTracer() as tr:
            for _ in range(20):
                for name, want in (("small", small), ("large", large)):
                    r, body = get(srv, f"/{name}")
                    assert (r.status, body, r.getheader("Content-Length")) == \
                        (200, want, str(len(want)))
        ops = tr.final.ops
        statx = ops["statx"].counts.get("done", 0) if "statx" in ops else 0
        known = file_offsets() is not None
        assert statx == (0 if known else 40), tr.final.table()
        with DispatchTracer() as tr:
            r, body = get(srv, "/large", "HEAD")
            assert (r.status, body, r.getheader("Content-Length")) == (200, b"", "200003")
        ops = tr.final.ops
        statx = ops["statx"].counts.get("done", 0) if "statx" in ops else 0
        assert statx == (0 if known else 1)
        assert "read" not in ops                         # a HEAD reads nothing
    finally:
        srv.close()
