"""Every numeric and bool argument is checked where it is given, with an error naming the
argument and its range, before anything is registered: bad runs leave no tag, slot or
buffer behind."""
import math
import socket

import pytest

import sakura_uring as su
from sakura_uring import Chain
from sakura_uring.chain import MAX_TIMEOUT

from helpers import assert_pools_full

BIG_FD = 2**31
FD_STEPS = [
    lambda c, fd: c.read(fd, 10), lambda c, fd: c.write(fd, b"x"), lambda c, fd: c.close(fd),
    lambda c, fd: c.send(fd, b"x"), lambda c, fd: c.recv(fd, 10),
    lambda c, fd: c.splice(fd, -1, 1, -1, 10), lambda c, fd: c.splice(1, -1, fd, -1, 10),
    lambda c, fd: c.accept(fd), lambda c, fd: c.fsync(fd),
    lambda c, fd: c.connect(fd, ("127.0.0.1", 80)), lambda c, fd: c.ftruncate(fd, 0),
    lambda c, fd: c.listen(fd), lambda c, fd: c.bind(fd, ("127.0.0.1", 0)),
]


@pytest.mark.parametrize("step", FD_STEPS)
@pytest.mark.parametrize("fd", [BIG_FD, 2**63, -1])
def test_fds_out_of_range(step, fd):
    c = Chain()
    with pytest.raises(su.ChainError, match=r"fd -?\d+ is out of range \[0, 2147483647\]"):
        step(c, fd)
    assert len(c) == 0


class FakeFile:
    def fileno(self):
        return 2**40


def test_fileno_out_of_range():
    with pytest.raises(su.ChainError, match=r"fileno\(\) = 1099511627776 is out of range"):
        Chain().read(FakeFile(), 10)


@pytest.mark.parametrize("call,name", [
    (lambda c: c.recv(3, 10, waitall="no"), "waitall"),
    (lambda c: c.recv(3, 10, waitall=1), "waitall"),
    (lambda c: c.openat("/x", direct="yes"), "direct"),
    (lambda c: c.accept(3, direct=0), "direct"),
    (lambda c: c.fsync(3, datasync=None), "datasync"),
    (lambda c: c.statx("/x", follow_symlinks="false"), "follow_symlinks"),
    (lambda c: c.read(3, 10, exact=1), "exact"),
    (lambda c: c.install_fd(c.openat("/x"), cloexec="no"), "cloexec"),
])
def test_bools_are_bools(call, name):
    c = Chain()
    with pytest.raises(TypeError, match=f"{name} must be True or False"):
        call(c)


@pytest.mark.parametrize("timeout", [1e12, 2**40, math.inf, -math.inf, math.nan, 0, -1,
                                     10**400, MAX_TIMEOUT * 1.01])
def test_timeouts_out_of_range_everywhere(ring, timeout):
    match = r"timeout = .* s is out of range: a timeout is finite, > 0 and at most 4611686018 s"
    with pytest.raises(su.ChainError, match=match):
        Chain(timeout=timeout)
    c = Chain()
    with pytest.raises(su.ChainError, match=match):
        c.nop(timeout=timeout)
    with pytest.raises(su.ChainError, match=match):
        c.openat("/etc/hostname", timeout=timeout)
    with pytest.raises(su.ChainError, match=match):
        c.write(1, b"x" * 100_000, timeout=timeout)   # nothing pinned for a refused step
    assert len(c) == 0 and not c._pins and not c._arena and c._nslots == 0
    c.nop()
    for call in (lambda: ring.run(c, timeout=timeout), lambda: ring.submit(c, timeout=timeout),
                 lambda: ring.run_many([c], timeout=timeout)):
        with pytest.raises(su.ChainError, match=match):
            call()
    assert_pools_full(ring)


@pytest.mark.parametrize("timeout", ["1", True, None.__class__, [1]])
def test_timeouts_must_be_numbers(timeout):
    with pytest.raises(TypeError, match="timeout must be seconds"):
        Chain(timeout=timeout)


def test_the_longest_timeout_works(ring):
    c = Chain(timeout=MAX_TIMEOUT)
    c.nop(timeout=MAX_TIMEOUT)
    c.nop()
    r = ring.run(c, timeout=MAX_TIMEOUT)
    assert r.ok and not r.timed_out


def _bad_runs(ring, data_file, sock):
    """One of each refused call, all through the public API."""
    def chain():
        c = Chain()
        f = c.openat(data_file)
        c.read(f, 100)
        c.read(sock, 10)
        c.close(f)
        return c
    good = chain()
    yield lambda: ring.run(good, timeout=2**40)
    yield lambda: ring.run(good, timeout=math.inf)
    yield lambda: ring.submit(good, timeout=1e12)
    yield lambda: list(ring.imap([good, good], timeout=-1))
    yield lambda: chain().read(BIG_FD, 10)
    yield lambda: chain().recv(sock, 10, waitall="no")
    yield lambda: chain().nop(timeout=1e12)
    yield lambda: Chain(timeout=math.nan)


def test_ten_thousand_bad_runs_leave_nothing_behind(data_file):
    a, b = socket.socketpair()
    with su.Ring(64) as ring, a, b:
        tags = len(ring._pools.free_tags)
        bad = list(_bad_runs(ring, data_file, a))
        for i in range(10_000):
            with pytest.raises((su.ChainError, TypeError)):
                bad[i % len(bad)]()
        assert_pools_full(ring)
        assert len(ring._pools.free_tags) == tags
        full = Chain()
        for _ in range(ring.sq_entries):
            full.nop()
        assert ring.run(full).ok                # a chain as long as the ring still fits
        # and every slot and buffer is usable: as many open+read chains at once as slots
        futs = []
        for _ in range(ring.slots):
            c = Chain()
            f = c.openat(data_file)
            d = c.read(f, 50)
            futs.append((ring.submit(c), d))
        assert all(fut.result(timeout=10)[d].data == data_file.read_bytes()[:50]
                   for fut, d in futs)
        assert_pools_full(ring)
