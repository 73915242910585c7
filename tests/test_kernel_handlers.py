"""Kernel handlers: BPF programs carry out data-dependent chains in kernel context, on
rings that live in BPF maps. Every test runs the real handler on the real kernel."""
import asyncio
import errno
import os
import socket
import threading
import time
from pathlib import Path

import pytest

import sakura_uring as su
from sakura_uring.kernel import (HANDLERS_DIR, HandlerCompileError, HandlerStalled,
                                 KernelRing, handler_path, verifier_stats)
from sakura_uring.trace.syscount import SyscallCounter

from helpers import open_fds, require_kernel_engine

# no module-wide needs("kernel"): the parameter checks run before any kernel is asked, so
# they run on every kernel; the rest meet the (verified) refusal on kernels without it

TEST_HANDLERS = Path(__file__).parent / "handlers"


def th(name: str) -> Path:
    return TEST_HANDLERS / f"{name}.c"


@pytest.fixture(scope="module")
def follow():
    with KernelRing(handler_path("follow")) as kr:
        yield kr


@pytest.fixture(scope="module")
def nops():
    with KernelRing(th("nops")) as kr:
        yield kr


# ---- (a) follow a path -------------------------------------------------------------

def test_follow_reads_the_file_the_pointer_names(follow, tmp_path):
    target = tmp_path / "target.bin"
    target.write_bytes(os.urandom(3000))
    ptr = tmp_path / "ptr"
    ptr.write_bytes(str(target).encode() + b"\n")
    r = follow.run(data=str(ptr).encode() + b"\0", timeout=5)
    assert r.ok and r.result == 3000
    assert r.data == target.read_bytes()


def test_follow_pointer_without_newline_and_large_target(follow, tmp_path):
    target = tmp_path / "big"
    body = os.urandom(follow.layout.buf_size + 100)
    target.write_bytes(body)
    ptr = tmp_path / "ptr"
    ptr.write_bytes(str(target).encode())
    r = follow.run(data=str(ptr).encode() + b"\0", timeout=5)
    # one buffer's worth: the handler reads once
    assert r.result == follow.layout.buf_size and r.data == body[:follow.layout.buf_size]


def test_follow_errors_come_back_as_errno(follow, tmp_path):
    r = follow.run(data=b"/nonexistent/pointer\0", timeout=5)
    assert r.result == -errno.ENOENT and isinstance(r.error, OSError)
    with pytest.raises(OSError) as ei:
        r.raise_for_error()
    assert ei.value.errno == errno.ENOENT
    ptr = tmp_path / "dangling"
    ptr.write_bytes(b"/nonexistent/target\n")
    assert follow.run(data=str(ptr).encode() + b"\0", timeout=5).result == -errno.ENOENT
    assert follow.run(timeout=5).result == -errno.EINVAL       # no input


def test_follow_leaves_no_fd_open(follow, tmp_path):
    target = tmp_path / "t"
    target.write_bytes(b"x" * 100)
    ptr = tmp_path / "p"
    ptr.write_bytes(str(target).encode())
    before = open_fds()
    res = follow.map([((), str(ptr).encode() + b"\0")] * 500, timeout=20)
    assert all(r.data == b"x" * 100 for r in res)
    assert not open_fds() - before          # every fd the handler opened, it closed


# ---- (b) sendfile, (c) copy ---------------------------------------------------------

def test_sendfile_sends_exactly_the_file(tmp_path):
    body = os.urandom(1_000_003)
    src = tmp_path / "src"
    src.write_bytes(body)
    with KernelRing(handler_path("sendfile")) as kr:
        for payload in (body, b""):
            src.write_bytes(payload)
            a, b = socket.socketpair()
            got = bytearray()

            def reader():
                while chunk := b.recv(1 << 16):
                    got.extend(chunk)
            t = threading.Thread(target=reader)
            t.start()
            fd = os.open(src, os.O_RDONLY)
            try:
                r = kr.run(fd, a.fileno(), timeout=10)
            finally:
                os.close(fd)
                a.close()
            t.join(10)
            b.close()
            assert r.result == len(payload) and bytes(got) == payload
        assert kr.run(9999, 9999, timeout=5).result == -errno.EBADF


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 1_000_000])
def test_copy_copies_in_chunks_until_eof(tmp_path, size, copier):
    body = os.urandom(size)
    (tmp_path / "in").write_bytes(body)
    fi = os.open(tmp_path / "in", os.O_RDONLY)
    fo = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        r = copier.run(fi, fo, timeout=10)
    finally:
        os.close(fi)
        os.close(fo)
    assert r.result == size
    assert (tmp_path / "out").read_bytes() == body


@pytest.fixture(scope="module")
def copier():
    with KernelRing(handler_path("copy")) as kr:
        yield kr


def test_copy_counts_its_steps(tmp_path, copier):
    (tmp_path / "in").write_bytes(os.urandom(5 * 65536 + 1))
    fi = os.open(tmp_path / "in", os.O_RDONLY)
    fo = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    before = copier.stats()["events"]
    try:
        assert copier.run(fi, fo, timeout=10).result == 5 * 65536 + 1
    finally:
        os.close(fi)
        os.close(fo)
    # start + 6 reads with data + 6 writes + the read that sees EOF
    assert copier.stats()["events"] - before == 1 + 6 + 6 + 1


# ---- many requests, many producers -------------------------------------------------

def test_100k_requests_each_completes_exactly_once(nops):
    n = 100_000
    seen = [0] * n
    res = nops.map([(2, i) for i in range(n)], timeout=120)
    for r in res:
        seen[r.result] += 1
    assert seen == [1] * n
    st = nops.stats()
    assert st["stale"] == 0 and st["stalled"] == 0 and st["in_flight"] == 0


def test_python_threads_and_bpf_push_at_once():
    """4 threads start requests while each request's handler fans out 3 chains of 4 NOPs
    from the SQPOLL thread: both sides reserve and publish SQ slots concurrently."""
    with KernelRing(th("fan"), entries=1024, requests=64) as kr:
        errors, results = [], []

        def worker(k):
            try:
                futs = [kr.call(3, 4, k * 10_000 + i) for i in range(2_000)]
                results.extend(f.result(30).result for f in futs)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not errors
        assert sorted(results) == sorted(k * 10_000 + i for k in range(4) for i in range(2_000))
        st = kr.stats()
        assert st["events"] == 8_000 * (1 + 3 * 4)
        assert st["pushed"] == 8_000 * 3 * 4
        assert st["push_full"] == 0 and st["stalled"] == 0 and st["stale"] == 0


def test_two_rings_see_only_their_own_events():
    with KernelRing(th("nops")) as a, KernelRing(th("nops")) as b:
        fa = [a.call(5, i) for i in range(200)]
        fb = [b.call(2, i) for i in range(300)]
        assert [f.result(10).result for f in fa] == list(range(200))
        assert [f.result(10).result for f in fb] == list(range(300))
        sa, sb = a.stats(), b.stats()
        assert sa["events"] == 200 * 6 and sb["events"] == 300 * 3
        # each program saw the other ring's completions and left them alone
        assert sa["foreign"] > 0 and sb["foreign"] > 0


def test_requests_pushed_by_the_handler_cost_no_system_call_each(nops):
    # a correctness bound with a wide margin (a system call per request would be 1.0);
    # the aim -- well under 0.05 -- is measured by `python -m sakura_uring.bench steps`
    nops.map([(4, i) for i in range(2_000)])             # warm up
    sc = SyscallCounter()
    try:
        with sc:
            res = nops.map([(4, i) for i in range(20_000)], timeout=60)
        assert [r.result for r in res] == list(range(20_000))
        per_request = sc.total / 20_000
    finally:
        sc.close()
    assert per_request < 0.5, (sc.by_name(), [t.name for t in threading.enumerate()])


# ---- links, failure modes -----------------------------------------------------------

def test_linked_chain_from_bpf(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"y" * 100)
    fd = os.open(p, os.O_RDONLY)
    try:
        with KernelRing(th("linked")) as kr:
            good = kr.run(fd, timeout=5)
            bad = kr.run(9999, timeout=5)
    finally:
        os.close(fd)
    # all three steps ran in order; none cancelled
    assert good.result == 0b111 and good.data == bytes([1, 2, 3, 0])
    # the read failed with EBADF and cancelled the two NOPs linked after it
    assert bad.result == 0b111 and bad.data == bytes([1, 2, 3, 2])


def test_full_ring_gives_the_handler_an_error_not_a_hang():
    with KernelRing(th("flood"), entries=64) as kr:
        r = kr.run(timeout=10)
        assert r.result == -errno.EBUSY
        st = kr.stats()
        assert st["push_full"] >= 1 and 0 < st["pushed"] < 64
        # the ring still works afterwards
        assert kr.run(timeout=10).result == -errno.EBUSY


def test_a_handler_that_stalls_is_finished_for_it():
    with KernelRing(th("stall")) as kr:
        r = kr.run(timeout=5)
        assert isinstance(r.error, HandlerStalled)
        assert kr.stats()["stalled"] == 1


def test_handler_that_does_not_compile_names_its_line(tmp_path):
    src = "static int on_complete(struct sk_event *e)\n{\n    return sk_nop(e, 1) + oops;\n}\n"
    before = open_fds()
    with pytest.raises(HandlerCompileError) as ei:
        KernelRing(src, name="broken.c")
    assert ei.value.line == 3
    assert "broken.c:3" in str(ei.value) and "oops" in str(ei.value)
    assert not open_fds() - before


def test_verifier_refusal_names_its_line():
    src = ("static int on_complete(struct sk_event *e)\n{\n"
           "    struct sk_buf *b = sk_buf(e);\n    if (!b)\n        return 0;\n"
           "    b->b[e->res] = 1;\n    return sk_finish(e, 0, 0, 0);\n}\n")
    before = open_fds()
    with pytest.raises(HandlerCompileError) as ei:
        KernelRing(src, name="unchecked.c")
    assert ei.value.line == 6, str(ei.value)
    assert "verifier" in str(ei.value) and "unchecked.c:6" in str(ei.value)
    assert not open_fds() - before


# Kernels differ in how much of a program the verifier walks: Linux 7.2 walked http.c's
# header scan more than six times as far as 6.18 did, past the 1,000,000 budget, while
# the loop kept its values in registers. A shipped handler keeps a wide margin (5x),
# measured on every kernel of the matrix: http.c, with its header checks (Host,
# Content-Length, Transfer-Encoding, Connection tokens, bare CR), walks ~180,000 on 6.18.
VERIFIER_MARGIN = 200_000


@pytest.mark.parametrize("name", sorted(p.stem for p in HANDLERS_DIR.glob("*.c")))
def test_shipped_handlers_leave_the_verifier_a_wide_margin(name):
    require_kernel_engine()
    st = verifier_stats(handler_path(name))
    assert st.loaded and 0 < st.processed < VERIFIER_MARGIN, st.log


def test_a_handler_the_verifier_gives_up_on_is_refused_as_such():
    require_kernel_engine()
    st = verifier_stats(th("explode"))
    assert not st.loaded and st.processed > 1_000_000, st.log
    before = open_fds()
    with pytest.raises(HandlerCompileError) as ei:
        KernelRing(th("explode"))
    assert "walks more than 1,000,000 instructions" in str(ei.value)
    assert "at most 4096" not in str(ei.value)        # bcc's guess, wrong for root
    assert not open_fds() - before


# ---- the Python side: asyncio, bad input, close -------------------------------------

def test_call_async(nops):
    async def main():
        return await asyncio.gather(*(nops.call_async(3, i, timeout=10) for i in range(200)))
    res = asyncio.run(main())
    assert [r.result for r in res] == list(range(200))


@pytest.mark.parametrize("args,data,exc", [
    ((1,) * 7, b"", ValueError),
    ((1.5,), b"", TypeError),
    ((True,), b"", TypeError),
    ((1 << 64,), b"", ValueError),
    ((), "text", TypeError),
    ((), b"x" * (65536 + 1), ValueError),
])
def test_bad_requests_are_refused_before_the_kernel(nops, args, data, exc):
    before = nops.stats()["started"]
    with pytest.raises(exc):
        nops.call(*args, data=data)
    assert nops.stats()["started"] == before
    assert nops.stats()["in_flight"] == 0


@pytest.mark.parametrize("kw", [dict(entries=100), dict(entries=16), dict(buffer_size=5000),
                                dict(requests=0), dict(requests=70000), dict(cq_entries=64),
                                dict(sq_cpu=999)])
def test_bad_ring_parameters_fail_before_compiling(kw):
    before = open_fds()
    with pytest.raises(ValueError):
        KernelRing(th("nops"), **kw)
    assert not open_fds() - before
    with pytest.raises(TypeError):
        KernelRing(42)


def test_close_fails_pending_requests_and_frees_everything():
    before_fds, before_maps = open_fds(), len(Path("/proc/self/maps").read_text().splitlines())
    for _ in range(3):
        a, b = socket.socketpair()
        kr = KernelRing(th("recv_wait"))
        assert len(open_fds()) > len(before_fds) + 1       # ring, program, maps...
        pending = kr.call(a.fileno())
        done = kr.call(b.fileno())
        a.send(b"hello")
        assert done.result(5).data == b"hello"
        kr.close()
        with pytest.raises(su.RingClosed):
            pending.result(5)
        with pytest.raises(su.RingClosed):
            kr.call(1)
        kr.close()                                           # twice is fine
        a.close()
        b.close()
    assert not open_fds() - before_fds
    assert len(Path("/proc/self/maps").read_text().splitlines()) <= before_maps + 2


def test_close_while_another_thread_waits_in_run():
    a, b = socket.socketpair()
    kr = KernelRing(th("recv_wait"))
    errors = []

    def waiter():
        try:
            kr.run(a.fileno(), timeout=30)       # nothing is ever sent: waits until close
        except Exception as exc:
            errors.append(exc)
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    kr.close()                                   # must not free memory the waiter reads
    t.join(5)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], su.RingClosed)
    a.close()
    b.close()


def test_pushes_from_io_wq_workers_wake_a_sleeping_sqpoll_thread(tmp_path):
    """The handler runs in an io-wq worker and pushes 50 ms after the SQPOLL thread (idle
    time 1 ms) went to sleep: nothing but the drainer's watchdog can wake it."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    woken = 0
    with KernelRing(th("fifo_open"), sq_idle_ms=1) as kr:
        for _ in range(20):                     # until one round saw the thread asleep
            fut = kr.call(data=str(fifo).encode() + b"\0")
            time.sleep(0.05)                    # the worker waits in open(); SQPOLL sleeps
            before = kr.stats()["wakeups"]
            os.close(os.open(fifo, os.O_WRONLY))  # the open completes in the worker
            assert fut.result(10).result == 0     # ... and the close it pushed ran
            woken += kr.stats()["wakeups"] - before
            if woken:
                break
    # (now and then the thread is up for other reasons, more often under emulation, where
    # five rounds once all found it awake; never in twenty)
    assert woken >= 1


def test_run_timeout_cancels_the_request_and_frees_its_slot():
    a, b = socket.socketpair()
    with KernelRing(th("recv_wait"), requests=4) as kr:
        with pytest.raises(TimeoutError):
            kr.run(a.fileno(), timeout=0.2)       # nothing to receive yet
        # the run cancelled its recv: the request ends without data, the drainer reports it
        deadline = time.monotonic() + 5
        while kr.stats()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert kr.stats()["in_flight"] == 0 and kr.stats()["cancelled"] == 1
        # all four slots are usable again
        pairs = [socket.socketpair() for _ in range(4)]
        futs = [kr.call(y.fileno()) for _, y in pairs]
        for i, (x, _) in enumerate(pairs):
            x.send(b"%d" % i)
        assert [f.result(5).data for f in futs] == [b"0", b"1", b"2", b"3"]
        for x, y in pairs:
            x.close()
            y.close()
    a.close()
    b.close()


def test_both_engines_speak_one_vocabulary(tmp_path):
    """run / submit / map / run_async on Ring and KernelRing alike; the first names stay."""
    assert su.Ring.run_many is su.Ring.map
    assert KernelRing.submit is KernelRing.call and KernelRing.run_async is KernelRing.call_async
    with pytest.warns(DeprecationWarning, match="requests="):
        kr = KernelRing(th("nops"), buffers=4)
    with kr:
        assert kr.layout.reqs == 4
        assert kr.submit(3, 7).result(30).result == 7
        assert [r.result for r in kr.map([(2, i) for i in range(10)], timeout=30)] == list(range(10))
        assert asyncio.run(kr.run_async(1, 5, timeout=30)).result == 5
    with su.Ring(16) as ring:
        c = su.Chain()
        c.nop()
        assert [r.ok for r in ring.map([c, c, c])] == [True] * 3

