"""Helpers shared by the test modules."""
import os
import signal
import subprocess
import time

import sakura_uring as su


def open_fds() -> set[str]:
    """This process's fds. Check a leak with `not open_fds() - before`: an fd an earlier
    test left to the garbage collector may close meanwhile, and that is no leak."""
    return set(os.listdir("/proc/self/fd"))


def spawn(cmd, **kw) -> subprocess.Popen:
    """A process in a process group of its own, for end()."""
    return subprocess.Popen(cmd, start_new_session=True, **kw)


def descendants(pid: int) -> list[int]:
    """Every process below pid (from /proc/PID/task/*/children), deepest last."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except FileNotFoundError:
                continue
            out += kids
            todo += kids
    return out


def end(proc: subprocess.Popen) -> None:
    """SIGKILL a spawn()ed process, its group and every process below it (fio's job
    processes call setsid(), so the group alone misses them): one left behind would load
    the machine for every test after it."""
    below = descendants(proc.pid)       # before the kill: then they are reparented
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in below:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    deadline = time.monotonic() + 30       # dying takes a while under emulation
    while any(running(p) for p in below) and time.monotonic() < deadline:
        time.sleep(0.05)


def running(pid: int) -> bool:
    """pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def cat_chain(path, length: int = 4096) -> "su.Chain":
    """openat(path) -> read(length) -> close: the chain most tests run."""
    c = su.Chain()
    f = c.openat(path)
    c.read(f, length)
    c.close(f)
    return c


def assert_pools_full(ring: su.Ring) -> None:
    assert ring.inflight == 0
    assert ring.free_slots == ring.slots - ring.registered_files
    assert ring.free_buffers == ring.buffers


# HTTP requests every server model must answer the same way: (request, status)
H = b"Host: x\r\n"
BAD_REQUESTS = [
    (b"GET /nope HTTP/1.1\r\n" + H + b"\r\n", 404),
    (b"GET /sub HTTP/1.1\r\n" + H + b"\r\n", 404),                 # a directory
    (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", 405),
    (b"DELETE /x HTTP/1.1\r\n" + H + b"\r\n", 405),
    (b"garbage\r\n\r\n", 400),
    (b"GET noslash HTTP/1.1\r\n" + H + b"\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                               # no Host
    (b"GET /%zz HTTP/1.1\r\n" + H + b"\r\n", 400),
    (b"GET /%00 HTTP/1.1\r\n" + H + b"\r\n", 400),
    (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + H + b"X: " + b"y" * 5000 + b"\r\n\r\n", 431),
]

# targets that try to leave the document root (its parent holds a file named "secret")
TRAVERSALS = ["/../secret", "/%2e%2e/secret", "/%2E%2E%2Fsecret", "/sub/../../secret",
              "//etc/passwd", "/escape", "/sub/%2e%2e/%2e%2e/secret"]


def make_docroot(root) -> None:
    """The document root the HTTP tests serve."""
    import os as _os
    root.chmod(0o755)                   # the servers serve as nobody: it must get in
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


def http_exchange(port: int, data: bytes, *, half_close: bool = False,
                  timeout: float = 10) -> tuple[bytes, bool]:
    """Send raw bytes (then shut our side if half_close), read until the server closes or
    `timeout` passes with nothing new: (bytes, whether it ended in a reset)."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)                 # the server then sees the end
        except OSError:
            pass                                           # it answered and closed early
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            return out, True
        except TimeoutError:
            pass
        return out, False


def http_raw(port: int, request: bytes, *, tolerate_reset: bool = False) -> bytes:
    """Send raw bytes, read until the server closes. tolerate_reset: a server without a
    lingering close may reset the connection after its answer."""
    out, reset = http_exchange(port, request)
    if reset and not tolerate_reset:
        raise ConnectionResetError(f"reset after {out[:80]!r}")
    return out


def assert_answers_bad_request(out: bytes, status: int) -> None:
    """The answer to a BAD_REQUESTS entry followed by a good request."""
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:80]
    if status in (400, 413, 414, 431, 501, 505):          # and the connection ends there
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
        raise su.UnsupportedOperation(e.reason, engine="link")


def cat_steps() -> tuple[str, ...]:
    """The opcodes of one Cat chain on this kernel, as the tracer names them."""
    if su.probe().linked_files:
        return ("openat", "read_fixed", "close")
    return ("read_fixed", "write_fixed")


class Cat:
    """The chain the tracer tests watch: read a file inside the kernel.

    Where steps can pass a file along (linked files, 5.15/5.18): openat into a slot, read,
    close. Where they can't (5.10): read, then write the bytes read to /dev/null, over
    files registered here beforehand — still linked steps with a registered buffer under
    the same submit and completion paths, so every column but openat's and close's is
    exercised."""

    def __init__(self, ring: su.Ring, path):
        self.ring, self.path = ring, path
        self.linked = su.probe().linked_files
        self.steps = cat_steps()
        self._files = []
        if not self.linked:
            for p, flags in ((path, os.O_RDONLY), (os.devnull, os.O_WRONLY)):
                fd = os.open(p, flags)
                try:
                    self._files.append(ring.register_file(fd))
                except BaseException:
                    self.close()
                    raise
                finally:
                    os.close(fd)                # the slot holds the file now

    def chain(self) -> su.Chain:
        c = su.Chain()
        if self.linked:
            f = c.openat(self.path)
            c.read(f, 4096)
            c.close(f)
        else:
            src, null = self._files
            c.write(null, c.read(src, 4096))
        return c

    def run(self, n: int, *, ok: bool = True) -> None:
        for _ in range(n):
            r = self.ring.run(self.chain())
            assert r.ok is ok, r

    def close(self) -> None:
        while self._files:
            self.ring.unregister_file(self._files.pop())

    def __enter__(self) -> "Cat":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def unreadable(tmp_path):
    """A path whose Cat chain fails at its first step: a missing file for openat, a
    directory (EISDIR) for read."""
    return tmp_path / "missing" if su.probe().linked_files else tmp_path


def links_traced(missing: list[str]) -> bool:
    """The tracer's chain columns are there: io_uring_link is not among what it left out
    for this kernel (it is on 5.10: no BPF atomics that return a value)."""
    return not any(m.startswith("io_uring_link") for m in missing)


def trace_cli(*args, timeout: float = 180, **kw):
    """`sakura-uring trace ARGS` in a subprocess: the CompletedProcess (text)."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "sakura_uring.cli", "trace", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, **kw)


def trace_json(*args, **kw) -> tuple[dict, list[dict], "object"]:
    """`trace --json ARGS`: (its summary, its intervals, the CompletedProcess)."""
    import json
    out = trace_cli("--json", *args, **kw)
    lines = [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
    summaries = [ln for ln in lines if ln.get("kind") == "summary"]
    assert summaries, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    return summaries[-1], [ln for ln in lines if ln.get("kind") == "interval"], out


def inode_known() -> bool:
    """Can sk_file_size() tell a file's length here (BTF, and the request in
    io_uring_complete)? A kernel without either answers -ENOSYS, tested as such."""
    from sakura_uring.bpfenv import tracepoint_fields
    from sakura_uring.kernel.btf import file_offsets
    return file_offsets() is not None and "req" in tracepoint_fields("io_uring",
                                                                     "io_uring_complete")
