"""Link semantics: soft links cancel the rest, hard links go on, short transfers break
soft links, timeouts per step and per chain, chains of 1 to 32 steps."""
import errno
import os
import socket
import time

import pytest

import sakura_uring as su
from sakura_uring import Chain, Link


@pytest.mark.parametrize("n", [1, 2, 3, 8, 16, 31, 32])
def test_chains_of_n_steps(any_ring, tmp_path, n):
    # n steps that depend on each other: open, (read)*, close
    p = tmp_path / "f"
    payload = os.urandom(64 * max(n, 1))
    p.write_bytes(payload)
    c = Chain()
    if n == 1:
        c.nop()
        assert any_ring.run(c).ok
        return
    f = c.openat(p)
    reads = [c.read(f, 64, offset=64 * i) for i in range(n - 2)]
    c.close(f)
    r = any_ring.run(c)
    assert r.ok and len(r) == n
    assert b"".join(r[h].data for h in reads) == payload[:64 * (n - 2)]


def test_failing_middle_step_cancels_the_rest(any_ring, tmp_path):
    c = Chain()
    c.nop()
    f = c.openat(tmp_path / "missing")
    d = c.read(f, 10)
    cl = c.close(f)
    r = any_ring.run(c)
    assert not r.ok
    assert r.failed_step.index == 1 and r.failed_step.op == "openat"
    assert r[f].error.errno == errno.ENOENT
    assert r[d].error.errno == errno.ECANCELED and r[cl].error.errno == errno.ECANCELED
    assert r[0].ok
    with pytest.raises(su.StepFailed) as ei:
        r.raise_for_error()
    assert ei.value.errno == errno.ENOENT and "openat" in str(ei.value)
    assert any_ring.free_slots == any_ring.slots


def test_hard_link_goes_on_after_a_failure(ring, tmp_path):
    c = Chain(link=Link.HARD)
    c.openat(tmp_path / "missing")
    n = c.nop()
    r = ring.run(c)
    assert r[0].error.errno == errno.ENOENT and r[n].ok


def test_unlinked_steps_are_independent(ring, tmp_path):
    c = Chain(link=Link.NONE)
    bad = c.statx(tmp_path / "missing")
    good = c.statx(tmp_path)
    r = ring.run(c)
    assert r[bad].error.errno == errno.ENOENT and r[good].ok


def test_short_exact_read_breaks_the_chain_and_says_so(ring, tmp_path):
    p = tmp_path / "small"
    p.write_bytes(b"x" * 100)
    c = Chain()
    f = c.openat(p)
    d = c.read(f, 4096, exact=True)
    c.nop()
    c.close(f)
    r = ring.run(c)
    assert r[d].res == 100 and r[d].short and r[d].broke_chain
    assert r[d].data == b"x" * 100
    assert r.failed_step is r[d] and not r.ok
    with pytest.raises(su.StepFailed, match="short transfer breaks a linked chain"):
        r.raise_for_error()
    assert ring.free_slots == ring.slots     # the open slot was emptied by the library


def test_short_read_at_the_end_is_fine(ring, tmp_path):
    p = tmp_path / "small"
    p.write_bytes(b"y" * 10)
    fd = os.open(p, os.O_RDONLY)
    try:
        c = Chain()
        d = c.read(fd, 4096)
        r = ring.run(c)
        assert r.ok and r[d].short and not r[d].broke_chain
    finally:
        os.close(fd)


def test_step_timeout(any_ring):
    a, b = socket.socketpair()
    with a, b:
        c = Chain()
        m = c.recv(a, 10, timeout=0.05)
        after = c.nop()
        t0 = time.monotonic()
        r = any_ring.run(c)
        assert 0.04 < time.monotonic() - t0 < 2
        assert r[m].timed_out and isinstance(r[m].error, TimeoutError)
        assert r[after].error.errno == errno.ECANCELED
        assert r.timed_out and r.failed_step is r[m]


def test_step_timeout_not_reached(ring):
    c = Chain()
    h = c.nop(timeout=5)
    r = ring.run(c)
    assert r.ok and not r[h].timed_out


@pytest.mark.parametrize("where", ["chain", "run"])
def test_chain_timeout(any_ring, where):
    a, b = socket.socketpair()
    with a, b:
        c = Chain(timeout=0.1 if where == "chain" else None)
        c.nop()
        m = c.recv(a, 10)
        c.nop()
        t0 = time.monotonic()
        r = any_ring.run(c, timeout=0.1 if where == "run" else None)
        assert 0.08 < time.monotonic() - t0 < 2
        assert r[0].ok and r[m].timed_out and r[2].error.errno == errno.ECANCELED


def test_reused_chain_runs_many_times(ring, data_file):
    c = Chain()
    f = c.openat(data_file)
    d = c.read(f, 4096)
    c.close(f)
    want = data_file.read_bytes()
    for _ in range(50):
        assert ring.run(c)[d].data == want
    assert ring.free_slots == ring.slots


def test_sakura_call_mirrors_the_seed(ring, data_file):
    def request_handler(chain, path):
        f = chain.openat(path)
        chain.read(f, 4096)
        chain.close(f)

    fut = su.sakura_call(ring, request_handler, data_file)
    r = fut.result(timeout=5)
    assert r.ok and r[1].data == data_file.read_bytes()
