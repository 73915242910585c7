"""The natural chain works: a read is like os.read (a short one is not a failure), the
closes that end a chain always run, and a short read whose bytes a later step sends still
breaks the chain before the send. Also the kernel's own per-op link rules, measured."""
import errno
import os
import socket

import pytest

import sakura_uring as su
from sakura_uring import Chain, Link

from helpers import assert_pools_full


def test_open_read_4096_close_on_a_short_file(any_ring, tmp_path):
    p = tmp_path / "3000"
    p.write_bytes(os.urandom(3000))
    c = Chain()
    f = c.openat(p)
    d = c.read(f, 4096)
    cl = c.close(f)
    r = any_ring.run(c)
    assert r.ok and r.failed_step is None
    assert r[d].res == 3000 and r[d].short and not r[d].broke_chain and r[d].ok
    assert r[d].data == p.read_bytes()
    assert r[cl].res == 0                  # the close ran: the kernel emptied the slot
    r.raise_for_error()
    assert_pools_full(any_ring)


def test_reads_in_a_row_go_on_past_the_end(ring, tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"a" * 5000)
    c = Chain()
    f = c.openat(p)
    parts = [c.read(f, 4096, offset=-1) for _ in range(3)]   # the file position
    c.close(f)
    r = ring.run(c)
    assert r.ok and [r[d].res for d in parts] == [4096, 904, 0]
    assert b"".join(r[d].data for d in parts) == p.read_bytes()


def test_exact_read_breaks_the_chain_but_the_close_still_runs(ring, tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 10)
    c = Chain()
    f = c.openat(p)
    d = c.read(f, 100, exact=True)
    cl = c.close(f)
    r = ring.run(c)
    assert not r.ok and r.failed_step is r[d] and r[d].short and r[d].exact
    assert r[cl].res == 0                 # hard-linked cleanup
    with pytest.raises(su.StepFailed, match=r"moved 10 bytes, fewer than the 100 it must"):
        r.raise_for_error()
    assert_pools_full(ring)


def test_a_failed_step_still_runs_the_closing_closes(ring, tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 10)
    c = Chain()
    f = c.openat(p)                         # read-only: the write fails with EBADF
    w = c.write(f, b"data")
    cl = c.close(f)
    r = ring.run(c)
    assert r[w].error.errno == errno.EBADF and r.failed_step is r[w]
    assert r[cl].res == 0
    assert_pools_full(ring)


def test_a_failed_open_cancels_the_rest(ring, tmp_path):
    c = Chain()
    f = c.openat(tmp_path / "missing")
    d = c.read(f, 10)
    cl = c.close(f)
    r = ring.run(c)
    assert r[f].error.errno == errno.ENOENT and r.failed_step is r[f]
    assert r[d].res == r[cl].res == -errno.ECANCELED
    assert_pools_full(ring)


def test_a_short_read_never_sends_stale_bytes(ring, tmp_path):
    """The read's buffer comes from the pool, where the previous chain left its bytes: a
    short read breaks the chain before the write, so none of them is sent."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"S" * 4096)
    c0 = Chain()
    g0 = c0.openat(secret)
    c0.read(g0, 4096)
    c0.close(g0)
    assert ring.run(c0).ok                   # the pool buffer now holds S...
    small = tmp_path / "small"
    small.write_bytes(b"hello")
    a, b = socket.socketpair()
    with a, b:
        c = Chain()
        f = c.openat(small)
        d = c.read(f, 4096)
        s = c.send(a, d)
        cl = c.close(f)
        assert d.exact                       # made exact by the send
        r = ring.run(c)
        assert r[d].res == 5 and r[d].broke_chain and r.failed_step is r[d]
        assert r[s].res == -errno.ECANCELED and r[cl].res == -errno.ECANCELED
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(10_000)                   # nothing was sent
    assert_pools_full(ring)                  # the ring emptied the slot itself


def test_a_whole_read_is_sent(ring, tmp_path):
    p = tmp_path / "f"
    p.write_bytes(os.urandom(4096))
    a, b = socket.socketpair()
    with a, b:
        c = Chain()
        f = c.openat(p)
        d = c.read(f, 4096)
        c.send(a, d)
        c.close(f)
        assert ring.run(c).ok
        assert b.recv(8192) == p.read_bytes()


def test_hard_and_unlinked_chains_are_left_as_asked(ring, tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 10)
    for link in (Link.HARD, Link.NONE):
        c = Chain(link=link)
        c.openat(tmp_path / "missing")
        c.nop()
        r = ring.run(c)
        assert r[0].error.errno == errno.ENOENT and r[1].res == 0
        assert r._fz.links == (link, Link.NONE)


# What a failed step does to the rest of a Link.SOFT chain, by op, on this kernel: the
# kernel decides per op whether an error fails the link (req_set_fail). docs/design.md,
# "How steps are linked", has the table.
def _failing(c: Chain, tmp_path, op: str):
    if op == "openat":
        return c.openat(tmp_path / "missing")
    if op == "statx":
        return c.statx(tmp_path / "missing")
    if op == "write":
        return c.write(9999, b"x")
    if op == "close":
        return c.close(9999)
    if op == "fsync":
        return c.fsync(9999)
    if op == "recv":
        return c.recv(9999, 10)
    if op == "send":
        return c.send(9999, b"x")
    if op == "connect":
        s = socket.socket()
        c._keep = s
        return c.connect(s, ("127.0.0.1", 1))
    if op == "socket":
        return c.socket(255)
    if op == "read-exact":
        return c.read(9999, 10, exact=True)
    raise AssertionError(op)


CANCELS = ["openat", "write", "close", "fsync", "recv", "send", "connect", "socket",
           "read-exact"]


@pytest.mark.parametrize("op", CANCELS)
def test_a_failed_step_cancels_the_rest(ring, tmp_path, op):
    c = Chain()
    s = _failing(c, tmp_path, op)
    n = c.nop()
    r = ring.run(c)
    assert r[s].res < 0 and r.failed_step is r[s]
    assert r[n].res == -errno.ECANCELED


def test_a_failed_statx_does_not_cancel_the_rest(ring, tmp_path):
    """The kernel completes a failed statx without failing its link (io_statx sets no
    REQ_F_FAIL); the library reports the statx as the failed step all the same."""
    c = Chain()
    s = _failing(c, tmp_path, "statx")
    n = c.nop()
    r = ring.run(c)
    assert r[s].error.errno == errno.ENOENT and r.failed_step is r[s] and not r.ok
    assert r[n].res in (0, -errno.ECANCELED)
    if os.uname().release.startswith("6.18"):
        assert r[n].res == 0                 # measured on 6.18: the nop ran
