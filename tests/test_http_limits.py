"""Resource limits in every HTTP model: timeouts end idle and slow connections, a crowd of
idle clients never locks out a new one, EMFILE backs off and keeps serving, a fatal error
stops the server with a message and a non-zero exit."""
import ctypes
import http.client
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sakura_uring.bench.http import docroot
from sakura_uring.httpd import MODELS, Server
from sakura_uring.httpd.http import Limits

FAST = Limits(header_timeout=0.6, keepalive_timeout=0.6, send_timeout=1.0, linger_timeout=0.6)


@pytest.fixture(scope="module")
def root():
    tmp, www = docroot("sakura-limits-", {"index.html": 100})
    with open(os.path.join(www, "huge.bin"), "wb") as f:
        f.truncate(256 << 20)                            # sparse
    yield Path(www)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module", params=list(MODELS))
def fast(request, root):
    with Server(request.param, root, limits=FAST) as s:
        yield s


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes `sock` (sending `trickle` a byte at a time every
    0.1 s meanwhile); None if it stayed open."""
    t0 = time.monotonic()
    sock.settimeout(0.1)
    sent = 0
    while time.monotonic() - t0 < seconds:
        try:
            if not sock.recv(65536):
                return time.monotonic() - t0
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - t0
        if sent < len(trickle):
            try:
                sock.send(trickle[sent:sent + 1])
            except OSError:
                return time.monotonic() - t0
            sent += 1
    return None


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(fast):
    with socket.create_connection(("127.0.0.1", fast.port)) as s:
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        took = closed_within(s, 5)
    assert took is not None and 0.3 < took < 3, took


def test_a_client_that_never_sends_is_closed(fast):
    with socket.create_connection(("127.0.0.1", fast.port)) as s:
        took = closed_within(s, 5)
    assert took is not None and took < 3, took


def test_a_slow_header_is_cut_at_the_header_timeout(fast):
    """slowloris: a byte every 0.1 s keeps the connection busy but never finishes a head."""
    with socket.create_connection(("127.0.0.1", fast.port)) as s:
        s.sendall(b"GET /index.html HTTP/1.1\r\n")
        took = closed_within(s, 5, trickle=b"X-Slow: " + b"a" * 100)
    assert took is not None and took < 3, took


def test_a_client_that_does_not_read_is_cut_at_the_send_timeout(fast):
    with socket.create_connection(("127.0.0.1", fast.port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6 and len(fast.conns):
            time.sleep(0.05)
        assert len(fast.conns) == 0, "the stalled response is still open"
    assert fast.conns.timed_out >= 1


def _raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


@pytest.mark.parametrize("model", list(MODELS))
def test_2100_idle_connections_do_not_lock_out_a_new_client(model, root):
    _raise_nofile(16384)
    with Server(model, root) as srv:
        idle = []
        try:
            for _ in range(2100):
                idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
            time.sleep(0.2)
            t0 = time.monotonic()
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
            c.request("GET", "/index.html")
            r = c.getresponse()
            assert r.status == 200 and len(r.read()) == 100
            assert time.monotonic() - t0 < 2
            c.close()
            assert srv.conns.evicted >= 2100 - srv.limits.max_connections
        finally:
            for s in idle:
                s.close()


def _serve_cli(model: str, root, *extra, preexec=None):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    p = port.getsockname()[1]
    port.close()
    proc = subprocess.Popen([sys.executable, "-m", "sakura_uring.cli", "httpd", "--model", model,
                             "--root", str(root), "--port", str(p), *extra],
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
    line = proc.stderr.readline()
    assert "serving" in line, line + proc.stderr.read()
    return proc, p


@pytest.mark.parametrize("model", list(MODELS))
def test_out_of_fds_backs_off_and_keeps_serving(model, root):
    """ulimit -n 128 and 200 idle clients: accept() hits EMFILE; the server says so once,
    ends idle connections, and a new client is still served."""
    limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
    proc, port = _serve_cli(model, root, preexec=limit)
    idle = []
    try:
        for _ in range(200):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(0.5)
        t0 = time.monotonic()
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
                c.request("GET", "/index.html")
                r = c.getresponse()
                assert r.status == 200 and len(r.read()) == 100
                c.close()
                break
            except (OSError, http.client.HTTPException):
                assert time.monotonic() - t0 < 10, "never served again"
        assert proc.poll() is None, "the server exited"
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "EMFILE" in err and err.count("EMFILE") <= 5, err


SYS_pidfd_open, SYS_pidfd_getfd = 434, 438


def _listener_of(pid: int, port: int) -> int:
    """A copy of process pid's listening socket on port (pidfd_getfd)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1].endswith(f":{port:04X}") and f[3] == "0A":
            inodes.add(f[9])
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(SYS_pidfd_open, pid, 0)
    assert pidfd >= 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                got = libc.syscall(SYS_pidfd_getfd, pidfd, int(fd), 0)
                assert got >= 0, os.strerror(ctypes.get_errno())
                return got
    finally:
        os.close(pidfd)
    raise AssertionError("no listening socket found")


@pytest.mark.parametrize("model", list(MODELS))
def test_a_fatal_accept_error_exits_non_zero_with_a_message(model, root):
    proc, port = _serve_cli(model, root)
    try:
        lfd = _listener_of(proc.pid, port)
        s = socket.socket(fileno=lfd)
        s.shutdown(socket.SHUT_RDWR)                   # accept() now fails with EINVAL
        s.close()
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "sakura-uring httpd:" in err and "Invalid argument" in err, err


@pytest.mark.parametrize("model", list(MODELS))
def test_close_ends_the_connections_still_open(model, root):
    from helpers import open_fds
    before = open_fds()
    with Server(model, root) as srv:
        clients = [socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                   for _ in range(20)]
        clients[0].sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        assert clients[0].recv(4096).startswith(b"HTTP/1.1 200")
    try:
        for c in clients:                     # each sees the server's end of it
            assert closed_within(c, 5) is not None
    finally:
        for c in clients:
            c.close()
    time.sleep(0.2)
    assert not open_fds() - before
