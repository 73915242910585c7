"""Bad input: a clear exception before anything reaches the kernel, nothing leaked."""
import os

import socket

import pytest

import sakura_uring as su
from sakura_uring import Chain

from helpers import assert_pools_full, open_fds


@pytest.mark.parametrize("build, exc, match", [
    (lambda c: c.openat(123), TypeError, "path must be"),
    (lambda c: c.openat("a\0b"), su.ChainError, "NUL"),
    (lambda c: c.openat(""), su.ChainError, "empty"),
    (lambda c: c.openat("x" * 5000), su.ChainError, "at most"),
    (lambda c: c.openat("/x", flags="r"), TypeError, "flags must be an int"),
    (lambda c: c.read(3, -1), su.ChainError, "length = -1"),
    (lambda c: c.read(3, 1 << 40), su.ChainError, "out of range"),
    (lambda c: c.read(3, 10, offset=-5), su.ChainError, "offset"),
    (lambda c: c.read(-3, 10), su.ChainError, r"fd -3 is out of range \[0, 2147483647\]"),
    (lambda c: c.read("3", 10), TypeError, "Fixed slot, an int fd"),
    (lambda c: c.read(True, 10), TypeError, "not bool"),
    (lambda c: c.read(3, 10.0), TypeError, "length must be an int"),
    (lambda c: c.write(3, "text"), TypeError, "encode it first"),
    (lambda c: c.write(3, 12), TypeError, "bytes-like"),
    (lambda c: c.send(3, c.recv(4, 10)), su.ChainError, "waitall=True"),
    (lambda c: c.read(c.nop(), 10), TypeError, "only openat/accept/socket"),
    (lambda c: c.connect(3, ("localhost", 80)), su.ChainError, "numeric address"),
    (lambda c: c.connect(3, ("127.0.0.1", 70000)), su.ChainError, "port"),
    (lambda c: c.nop(timeout=0), su.ChainError, "timeout = 0 s is out of range"),
    (lambda c: c.nop(timeout="1"), TypeError, "seconds"),
    (lambda c: c.install_fd(3), TypeError, "Fixed"),
])
def test_step_arguments_are_checked(build, exc, match):
    c = Chain()
    with pytest.raises(exc, match=match):
        build(c)


def test_chain_arguments():
    with pytest.raises(TypeError, match="Link"):
        Chain(link=1)
    with pytest.raises(su.ChainError):
        Chain(timeout=-1)


def test_handle_from_another_chain(ring, data_file):
    a = Chain()
    f = a.openat(data_file)
    b = Chain()
    with pytest.raises(su.ChainError, match="another chain"):
        b.read(f, 10)
    d = a.read(f, 10)
    with pytest.raises(su.ChainError, match="another chain"):
        b.write(1, d)
    r = ring.run(b) if len(b) else None
    assert r is None
    with pytest.raises(KeyError):
        c = Chain()
        c.nop()
        ring.run(c)[d]


def test_handle_from_another_ring(data_file):
    with su.Ring(8) as r1, su.Ring(8) as r2, open(data_file, "rb") as fh:
        h = r1.register_file(fh)
        c = Chain()
        c.read(h, 10)
        before = open_fds()
        with pytest.raises(su.ChainError, match="another ring"):
            r2.run(c)
        assert not open_fds() - before
        assert_pools_full(r2)
        assert r1.run(c).ok


def test_empty_chain(ring):
    with pytest.raises(su.ChainError, match="no steps"):
        ring.run(Chain())


def test_not_a_chain(ring):
    with pytest.raises(TypeError, match="Chain"):
        ring.run([1, 2])


def test_chain_longer_than_the_ring(data_file):
    with su.Ring(8) as ring:
        c = Chain()
        for _ in range(9):
            c.nop()
        with pytest.raises(su.ChainError, match=r"needs 9 SQ entries .* has 8"):
            ring.run(c)
        t = Chain()
        for _ in range(5):
            t.nop(timeout=1)       # 5 steps + 5 linked timeouts = 10 SQEs
        with pytest.raises(su.ChainError, match="5 linked timeouts"):
            ring.run(t)
        assert_pools_full(ring)
        assert ring.stats()["cqes"] == 0      # nothing reached the kernel


def test_more_files_than_slots(tmp_path):
    with su.Ring(16, slots=2) as ring:
        c = Chain()
        for i in range(3):
            c.openat(tmp_path)
        with pytest.raises(su.ChainError, match="opens 3 files at once .* 2 slots"):
            ring.run(c)
        assert_pools_full(ring)


def test_unsupported_op_is_refused_before_submission(ring):
    # Pretend this kernel has every op but LISTEN (on a plain fd: no slot needed).
    ring._pub.supported = frozenset(range(256)) - {57}
    c = Chain()
    with socket.socket() as s:
        c.listen(s.fileno())
        with pytest.raises(su.UnsupportedOperation, match=r"listen .* needs Linux 6.11"):
            ring.run(c)
    assert_pools_full(ring)


def test_closed_ring():
    ring = su.Ring(8)
    ring.close()
    ring.close()                      # idempotent
    c = Chain()
    c.nop()
    with pytest.raises(su.RingClosed, match="closed"):
        ring.run(c)
    with pytest.raises(su.RingClosed):
        ring.submit(c)
    with pytest.raises(su.RingClosed):
        ring.stats()


@pytest.mark.parametrize("kwargs, exc", [
    (dict(entries=0), ValueError), (dict(entries=100000), ValueError),
    (dict(entries="8"), TypeError), (dict(sqpoll=1), TypeError),
    (dict(cq_entries=2, entries=8), ValueError), (dict(buffer_size=0), ValueError),
    (dict(sq_cpu=0), ValueError), (dict(slots=10**7), ValueError),
])
def test_ring_arguments(kwargs, exc):
    before = open_fds()
    with pytest.raises(exc):
        su.Ring(**kwargs)
    assert not open_fds() - before


def test_failed_chains_leak_nothing(ring, tmp_path):
    before = open_fds()
    for _ in range(200):
        c = Chain()
        f = c.openat(tmp_path / "missing")
        c.read(f, 100)
        c.close(f)
        assert not ring.run(c).ok
        c = Chain()
        f = c.openat(tmp_path)          # a directory: open works, read fails with EISDIR
        c.read(f, 100)
        c.close(f)                      # cancelled: the library empties the slot itself
        assert not ring.run(c).ok
    assert not open_fds() - before
    assert_pools_full(ring)
