"""The HTTP server in all four execution models, against real clients (http.client, curl
and raw sockets): the same answers everywhere, and nothing outside the root, ever."""
import http.client
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from sakura_uring.httpd import MODELS, Server

from helpers import (BAD_REQUESTS, TRAVERSALS, assert_answers_bad_request, http_get, http_raw,
                     make_docroot, open_fds)


@pytest.fixture(scope="module")
def docroot(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    make_docroot(root)
    return root


@pytest.fixture(scope="module", params=list(MODELS))
def srv(request, docroot):
    with Server(request.param, docroot) as s:
        yield s


def get(srv, path, method="GET"):
    return http_get(srv.port, path, method)


def raw(srv, request: bytes) -> bytes:
    # the threads and asyncio models close without lingering: a reset may follow the answer
    return http_raw(srv.port, request, tolerate_reset=True)


def test_get_and_head(srv, docroot):
    r, body = get(srv, "/")
    assert (r.status, body) == (200, b"<h1>sakura</h1>\n")
    r, body = get(srv, "/big.bin")
    assert r.status == 200 and body == (docroot / "big.bin").read_bytes()
    assert int(r.getheader("Content-Length")) == 300_001
    assert get(srv, "/sub/")[1] == b"sub index"
    assert get(srv, "/a%20b.txt")[1] == b"space"
    assert get(srv, "/empty")[1] == b""
    assert get(srv, "/index.html?v=1")[1] == b"<h1>sakura</h1>\n"
    r, body = get(srv, "/big.bin", "HEAD")
    assert r.status == 200 and r.getheader("Content-Length") == "300001" and body == b""


def test_keep_alive_and_close(srv):
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    for path in ["/", "/big.bin", "/nope", "/"] * 5:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        assert r.getheader("Connection") == "keep-alive"
    c.close()
    out = raw(srv, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"<h1>sakura</h1>\n")
    out = raw(srv, b"GET / HTTP/1.0\r\n\r\n")
    assert b"Connection: close" in out and out.endswith(b"<h1>sakura</h1>\n")


@pytest.mark.parametrize("request_,status", BAD_REQUESTS)
def test_bad_requests_get_the_right_status(srv, request_, status):
    out = raw(srv, request_ + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_answers_bad_request(out, status)


@pytest.mark.parametrize("path", TRAVERSALS)
def test_nothing_outside_the_root_is_served(srv, path):
    r, body = get(srv, path)
    assert r.status == 404 and body == b""


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl(srv, docroot):
    out = subprocess.run(["curl", "-s", "--fail", f"{srv.url}/big.bin", f"{srv.url}/"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0
    assert out.stdout == (docroot / "big.bin").read_bytes() + b"<h1>sakura</h1>\n"
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                          "--path-as-is", f"{srv.url}/../secret"], capture_output=True,
                         text=True, timeout=30)
    assert out.stdout == "404"


def test_no_fd_left_behind(srv):
    get(srv, "/")                                    # warm: caches, first connections
    before = len(open_fds())
    for _ in range(30):
        c = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        for _ in range(3):
            c.request("GET", "/big.bin")
            c.getresponse().read()
        c.close()
    get(srv, "/")
    for _ in range(50):                              # the last connections may be closing
        if len(open_fds()) <= before + 2:
            break
        time.sleep(0.02)
    assert len(open_fds()) <= before + 2


def test_cli(docroot):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    p = port.getsockname()[1]
    port.close()
    proc = subprocess.Popen([sys.executable, "-m", "sakura_uring.cli", "httpd", "--model",
                             "link", "--root", str(docroot), "--port", str(p)],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert f"127.0.0.1:{p}" in line
        c = http.client.HTTPConnection("127.0.0.1", p, timeout=10)
        c.request("GET", "/")
        assert c.getresponse().read() == b"<h1>sakura</h1>\n"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    bad = subprocess.run([sys.executable, "-m", "sakura_uring.cli", "httpd", "--model", "link",
                          "--root", "/nonexistent"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "not a directory" in bad.stderr
