"""Kernel handlers written in Python: the translator's subset and its refusals, errors
that name the Python line, and the shipped Python handlers giving what the C ones give,
on the real kernel."""
import errno
import os
import socket
import threading
import time

import pytest

from sakura_uring.kernel import HandlerCompileError, KernelRing, handler_path
from sakura_uring.kernel import handlers as py
from sakura_uring.kernel import sdk as sk
from sakura_uring.kernel.python import Arg, Handler, HandlerTranslateError, Step, handler

from helpers import inode_known, open_fds, require_kernel_engine

HERE = os.path.abspath(__file__)
kernel = pytest.mark.usefixtures("kernel_engine")


@pytest.fixture(scope="module")
def kernel_engine():
    require_kernel_engine()


def line_of(text: str) -> int:
    """The line of this file that holds `text` (once), not counting the lines that ask."""
    lines = open(HERE).read().splitlines()
    hits = [i for i, ln in enumerate(lines, 1) if text in ln and "line_of(" not in ln
            and "refused(" not in ln]
    assert len(hits) == 1, (text, hits)
    return hits[0]


# ---- translation ----------------------------------------------------------------------

@handler
class Echo:
    """Receive once from sock and echo the bytes back as the result's data, with the
    count of newlines in them as the result."""
    sock: Arg
    RECV: Step
    seen: int

    def on_complete(self, e):
        if e.step == sk.START:
            return sk.recv(e, self.RECV, self.sock, 0, 512)
        if e.res <= 0:
            return e.res if e.res < 0 else -errno.ECONNRESET
        self.seen = e.res
        n = 0
        for i in range(512):
            if i >= self.seen:
                break
            if self.buf[i] == ord("\n"):
                n += 1
        return sk.finish(e, n, 0, self.seen)


def test_a_handler_knows_its_parts_and_shows_its_c():
    assert isinstance(Echo, Handler)
    assert (Echo.name, Echo.args, Echo.nargs) == ("Echo", ("sock",), 1)
    assert Echo.steps == {"RECV": 1} and Echo.state == {"seen": 0}
    assert Echo.filename == HERE
    src = Echo.source
    assert "SK_NARGS(1);" in src and "STEP_RECV = 1" in src
    assert f'#line {line_of("return sk.recv(e, self.RECV")} "{HERE}"' in src
    assert "sk_recv(e, STEP_RECV, ((s64)e->r->arg[0])" in src


@kernel
def test_a_python_handler_runs_in_the_kernel():
    a, b = socket.socketpair()
    try:
        with KernelRing(Echo) as kr:
            assert kr.name == HERE and kr.nargs == 1
            fut = kr.call(b.fileno())
            a.send(b"one\ntwo\nthree")
            r = fut.result(5)
            assert (r.result, r.data) == (2, b"one\ntwo\nthree")
            with pytest.raises(TypeError, match=r"takes 1 argument \(sock\), got 0"):
                kr.run()
    finally:
        a.close()
        b.close()


def test_sdk_calls_do_not_run_in_python():
    with pytest.raises(RuntimeError, match="only inside a kernel handler"):
        sk.finish(None, 0)


def refused(match: str, marker: str):
    """pytest.raises for a refusal that names `match` at the line holding `marker`."""
    class Check:
        def __enter__(self):
            self.cm = pytest.raises(HandlerTranslateError, match=match)
            self.info = self.cm.__enter__()
            return self

        def __exit__(self, *exc):
            ok = self.cm.__exit__(*exc)
            err = self.info.value
            assert err.line == line_of(marker), (err.line, str(err))
            assert f"{HERE}:{err.line}" in str(err)
            assert marker in str(err)             # the Python line is quoted
            return ok
    return Check()


def test_refusals_name_the_construct_and_the_python_line():
    with refused("a while loop is outside", "while self.x:  # W"):
        @handler
        class W:
            x: int

            def on_complete(self, e):
                while self.x:  # W
                    self.x -= 1
                return 0
    with refused("range.. with a bound that is not a constant", "for i in range(self.n):  # R"):
        @handler
        class R:
            n: Arg

            def on_complete(self, e):
                for i in range(self.n):  # R
                    pass
                return 0
    with refused("the name nowhere is no local", "return nowhere  # N"):
        @handler
        class N:
            def on_complete(self, e):
                return nowhere  # N  # noqa: F821
    with refused("a string is outside", 'x = "text"  # S'):
        @handler
        class S:
            def on_complete(self, e):
                x = "text"  # S
                return x
    with refused("self.fd is an argument, and arguments are read-only", "self.fd = 3  # A"):
        @handler
        class A:
            fd: Arg

            def on_complete(self, e):
                self.fd = 3  # A
                return 0
    with refused("a call of print", "print(e.res)  # P"):
        @handler
        class P:
            def on_complete(self, e):
                print(e.res)  # P
                return 0
    with refused("true division", "return e.res / 2  # D"):
        @handler
        class D:
            def on_complete(self, e):
                return e.res / 2  # D
    with refused(r"sk.read\(\) is called with the wrong arguments", "return sk.read(e, 1, 2)  # C"):
        @handler
        class C:
            def on_complete(self, e):
                return sk.read(e, 1, 2)  # C
    with refused("try/except", "try:  # T"):
        @handler
        class T:
            def on_complete(self, e):
                try:  # T
                    return 0
                except Exception:
                    return 1
    with refused("the integer 18446744073709551616, which does not fit", "return 18446744073709551616  # O"):
        @handler
        class O:
            def on_complete(self, e):
                return 18446744073709551616  # O
    with refused("a field named buf is outside", "buf: int  # B"):
        @handler
        class B:
            buf: int  # B

            def on_complete(self, e):
                return 0
    with refused("self.count is assigned but the class declares no such state field", "self.count += 1  # U"):
        @handler
        class U:
            def on_complete(self, e):
                self.count += 1  # U
                return 0


def test_recursion_is_refused():
    with refused(r"a recursive call of self.down\(\)", "return self.down(e, n - 1)  # X"):
        @handler
        class Rec:
            def down(self, e, n):
                return self.down(e, n - 1)  # X

            def on_complete(self, e):
                return sk.finish(e, self.down(e, 3))


@kernel
def test_python_names_never_collide_with_c_names():
    @handler
    class Names:
        def on_complete(self, e):
            double = 2
            char = 3
            switch = double * char
            sk_finish = 1
            for int_ in range(2):
                switch += int_
            return sk.finish(e, switch + sk_finish)
    with KernelRing(Names) as kr:
        assert kr.run(timeout=5).result == 8


SHADOWED = 1


def test_constants_come_from_modules_and_scopes_by_name():
    LIMIT = 77
    SHADOWED = 5                   # the enclosing scope before the module, as in Python

    @handler
    class K:
        BIG = 1 << 40

        def on_complete(self, e):
            x = os.O_CREAT | socket.MSG_NOSIGNAL
            return sk.finish(e, x + errno.ENOENT + LIMIT + self.BIG // 1024 + SHADOWED)
    src = K.source
    assert f"{os.O_CREAT}LL" in src and f"{socket.MSG_NOSIGNAL}LL" in src
    assert f"{errno.ENOENT}LL" in src and "77LL" in src and f"{1 << 40}LL" in src
    assert "5LL" in src and " + 1LL" not in src


@kernel
def test_signed_arithmetic_and_unsigned_division():
    @handler
    class Calc:
        a: Arg
        b: Arg

        def on_complete(self, e):
            d = self.a - self.b
            if d < 0 and -d > 5:
                return sk.finish_value(e, d * 3 + (self.a // 2) - (7 % 3) + (d >> 1)
                                       + abs(d) + min(d, 4, self.b) + max(1, 2))
            return sk.finish_value(e, d)
    with KernelRing(Calc) as kr:
        for a, b in [(1, 20), (20, 1), (0, 0), (3, 100)]:
            d = a - b
            want = d * 3 + a // 2 - 7 % 3 + (d >> 1) + abs(d) + min(d, 4, b) + 2 \
                if d < 0 and -d > 5 else d
            r = kr.run(a, b, timeout=5)
            assert r.signed and r.result == want


@kernel
def test_compiler_and_verifier_messages_point_at_the_python_line():
    @handler
    class Loop:
        def on_complete(self, e):
            n = 0
            for i in range(20000):
                if self.buf[i] == 10:  # V
                    n += 1
            return sk.finish(e, n)
    before = open_fds()
    with pytest.raises(HandlerCompileError) as ei:
        KernelRing(Loop)
    msg = str(ei.value)
    assert HERE in msg and "slices" in msg
    # 6.18 stops at 8,192 pending branches (and names the branch); 7.2 walks this loop past
    # its 1,000,000 instructions first
    assert "jumps is too complex" in msg or "more than 1,000,000 instructions" in msg
    if "jumps" in msg:
        assert ei.value.line == line_of("if self.buf[i] == 10:  # V")  # the branch it keeps
    assert not open_fds() - before


# ---- the shipped handlers, Python and C side by side ------------------------------------

C = {name: handler_path(name) for name in ("follow", "copy", "sendfile", "steps")}


@pytest.fixture(scope="module")
def rings():
    require_kernel_engine()
    made = {}
    try:
        for name in C:
            made[name] = (KernelRing(C[name]), KernelRing(getattr(py, name)))
        yield made
    finally:
        for pair in made.values():
            for kr in pair:
                kr.close()


def test_the_python_handlers_declare_what_the_c_ones_do(rings):
    for name, (c, p) in rings.items():
        assert c.nargs == p.nargs, name
        # the same job walks about as far through the verifier
        assert abs(p.verified_insns - c.verified_insns) <= 0.1 * c.verified_insns, name


def test_follow_python_and_c(rings, tmp_path):
    big = os.urandom(70000)
    (tmp_path / "target").write_bytes(big)
    (tmp_path / "ptr").write_text(f"{tmp_path / 'target'}\n")
    (tmp_path / "ptr2").write_text(str(tmp_path / "target"))
    (tmp_path / "dangling").write_text(str(tmp_path / "nothing"))
    (tmp_path / "empty").write_text("")
    cases = [str(tmp_path / n).encode() + b"\0" for n in ("ptr", "ptr2", "dangling", "empty",
                                                           "missing")] + [b""]
    for data in cases:
        c, p = (kr.run(data=data, timeout=5) for kr in rings["follow"])
        assert c == p, data
    assert rings["follow"][1].run(data=cases[0], timeout=5).data == big[:65536]


@pytest.mark.parametrize("size", [0, 1, 4096, 65536, 65537, 300_001])
def test_copy_python_and_c(rings, tmp_path, size):
    body = os.urandom(size)
    (tmp_path / "src").write_bytes(body)
    outs = []
    for i, kr in enumerate(rings["copy"]):
        src = os.open(tmp_path / "src", os.O_RDONLY)
        dst = os.open(tmp_path / f"out{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            outs.append(kr.run(src, dst, timeout=10))
        finally:
            os.close(src)
            os.close(dst)
        assert (tmp_path / f"out{i}").read_bytes() == body
    assert outs[0] == outs[1] and outs[0].result == size
    c, p = (kr.run(9999, 9998, timeout=5) for kr in rings["copy"])
    assert c == p and c.result == -errno.EBADF


def test_sendfile_python_and_c(rings, tmp_path):
    body = os.urandom(1_000_003)
    (tmp_path / "f").write_bytes(body)
    for kr in rings["sendfile"]:
        a, b = socket.socketpair()
        got = bytearray()

        def read_all(sock=b):
            for chunk in iter(lambda: sock.recv(1 << 16), b""):
                got.extend(chunk)
        reader = threading.Thread(target=read_all)
        reader.start()
        fd = os.open(tmp_path / "f", os.O_RDONLY)
        try:
            r = kr.run(fd, a.fileno(), timeout=20)
        finally:
            os.close(fd)
            a.shutdown(socket.SHUT_WR)
            reader.join(10)
            a.close()
            b.close()
        assert r.result == len(body) and bytes(got) == body


def test_steps_python_and_c(rings, tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 8192)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        for args in [(0, 0, 0), (1, 0, 0), (500, 0, 0), (50, 1, fd), (3, 1, 9999)]:
            c, p = (kr.run(*args, timeout=10) for kr in rings["steps"])
            assert c == p, args
        assert p.result == -errno.EBADF
        assert rings["steps"][1].run(500, 0, 0, timeout=10).result == 500
    finally:
        os.close(fd)


def test_count_and_find_scan_a_file_as_python_does(tmp_path):
    require_kernel_engine()
    import random
    rnd = random.Random(3)
    body = bytes(rnd.choice(b"ab\n") for _ in range(100_000)) + b"\x01" + b"z" * 40_001
    f = tmp_path / "f"
    f.write_bytes(body)
    fd = os.open(f, os.O_RDONLY)
    try:
        with KernelRing(py.count, buffer_size=sk.SCAN_MAX, requests=1) as kr:
            for b in (ord("\n"), ord("a"), ord("z"), 1, 0):
                assert kr.run(fd, b, timeout=10).result == body.count(bytes([b])), b
        with KernelRing(py.find, buffer_size=sk.SCAN_MAX, requests=1) as kr:
            for b in (ord("\n"), ord("z"), 1, 0, 0xff):
                r = kr.run(fd, b, timeout=10)
                assert r.signed and r.result == body.find(bytes([b])), b
            assert kr.run(9999, 1, timeout=5).result == -errno.EBADF
            time.sleep(0.05)
            assert kr.stats()["after_finish"] == 0      # nothing read after the find
    finally:
        os.close(fd)


@handler
class FileSize:
    """Read 64 bytes of fd, then answer with the file's length from its inode."""
    fd: Arg
    READ: Step

    def on_complete(self, e):
        if e.step == sk.START:
            return sk.read(e, self.READ, self.fd, 0, 64, 0)
        return sk.finish_value(e, sk.file_size(e))


@kernel
def test_file_size_from_python_is_the_inode_s_length(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(os.urandom(70_001))
    fd, dev = os.open(p, os.O_RDONLY), os.open("/dev/null", os.O_RDONLY)
    try:
        known = inode_known()
        with KernelRing(FileSize) as kr:
            assert os.fstat(fd).st_size == 70_001
            assert kr.run(fd, timeout=5).result == (70_001 if known else -errno.ENOSYS)
            assert kr.run(dev, timeout=5).result == (-errno.EINVAL if known else -errno.ENOSYS)
    finally:
        os.close(fd)
        os.close(dev)


@handler
class FdSize:
    """Answer at once with the length of the file open as fd."""
    fd: Arg

    def on_complete(self, e):
        return sk.finish_value(e, sk.fd_size(e, self.fd))


@kernel
def test_fd_size_from_python_is_the_inode_s_length(tmp_path):
    from sakura_uring.kernel.btf import file_offsets
    p = tmp_path / "f"
    p.write_bytes(os.urandom(4_321))
    fd = os.open(p, os.O_RDONLY)
    try:
        with KernelRing(FdSize) as kr:
            want = 4_321 if file_offsets() is not None else -errno.ENOSYS
            assert kr.run(fd, timeout=5).result == want
    finally:
        os.close(fd)
