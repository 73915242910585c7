"""Ring.prepare(chain): a chain that owns its tag, slots and buffers on one ring; each run
is one native call (sk_call_run). Checked against ring.run of the same chain and plain os.*."""
import contextlib
import os
import signal
import threading
import time

import pytest

import sakura_uring as su
from sakura_uring import Chain, RingClosed


class Stop(Exception):
    pass


@contextlib.contextmanager
def _raising_alarm(seconds: float):
    """A SIGALRM handler that raises Stop after `seconds`: an interrupt in a native wait."""
    def boom(*_):
        raise Stop
    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _cat(path):
    c = Chain()
    f = c.openat(path)
    d = c.read(f, 4096)
    c.close(f)
    return c, d


def test_prepared_runs_give_what_run_gives(any_ring, data_file):
    c, d = _cat(str(data_file))
    slots, bufs = any_ring.free_slots, any_ring.free_buffers
    with any_ring.prepare(c) as p:
        assert any_ring.free_slots == slots - 1 and any_ring.free_buffers == bufs - 1
        for _ in range(200):
            r = p.run()
            assert r.ok and r[d].data == data_file.read_bytes()
            assert [s.res for s in r] == [s.res for s in any_ring.run(c)]
    assert any_ring.free_slots == slots and any_ring.free_buffers == bufs


def test_prepared_with_params_reads_each_file(any_ring, tmp_path):
    c = Chain()
    f = c.openat(c.param("path"))
    d = c.read(f, 4096)
    c.close(f)
    p = any_ring.prepare(c)
    for i in range(50):
        q = tmp_path / f"f{i}"
        q.write_bytes(os.urandom(i * 50))
        assert p.run(path=str(q))[d].data == q.read_bytes()
    r = p.run(path=str(tmp_path / "missing"))
    assert not r.ok and r.failed_step.error.errno == 2
    assert any_ring.free_slots == any_ring.slots - 1       # the failed open left no slot full
    with pytest.raises(su.ChainError, match="no value"):
        p.run()
    p.close()
    with pytest.raises(RingClosed, match="prepare the chain again"):
        p.run(path="x")


@pytest.mark.needs("link")
def test_other_threads_chains_complete_while_a_prepared_one_reaps(any_ring, data_file):
    c, d = _cat(str(data_file))
    p = any_ring.prepare(c)
    other, od = _cat(str(data_file))
    got, errors = [], []

    def runner():
        try:
            for _ in range(300):
                got.append(any_ring.run(other)[od].data)
        except Exception as exc:          # pragma: no cover
            errors.append(exc)
    t = threading.Thread(target=runner)
    t.start()
    for _ in range(600):
        assert p.run()[d].data == data_file.read_bytes()
    t.join(30)
    assert not errors and len(got) == 300 and set(got) == {data_file.read_bytes()}


def test_prepared_timeout_is_per_run(ring):
    r_fd, w_fd = os.pipe()
    try:
        c = Chain()
        d = c.read(r_fd, 10)
        p = ring.prepare(c, timeout=0.05)
        for _ in range(3):
            t0 = time.monotonic()
            assert p.run()[d].timed_out
            assert time.monotonic() - t0 < 1
        os.write(w_fd, b"hi")
        assert p.run()[d].data == b"hi"
    finally:
        os.close(r_fd)
        os.close(w_fd)


def test_an_interrupted_run_is_cancelled_and_its_lease_comes_back(ring):
    """A signal handler that raises while the run waits: the run is abandoned (cancelled),
    and the reaper frees its tag and slot when its CQEs arrive."""
    r_fd, w_fd = os.pipe()
    try:
        c = Chain()
        c.read(r_fd, 10)
        tags = len(ring._pools.free_tags)
        p = ring.prepare(c)
        with pytest.raises(Stop), _raising_alarm(0.1):
            p.run()
        with pytest.raises(RingClosed):
            p.run()
        nop = Chain()
        nop.nop()
        deadline = time.monotonic() + 5
        while ring._reaper.orphans and time.monotonic() < deadline:
            ring.run(nop)               # someone reaps: the cancelled read's CQE frees it
        assert not ring._reaper.orphans
        assert len(ring._pools.free_tags) == tags
    finally:
        os.close(r_fd)
        os.close(w_fd)


def test_ring_close_stops_a_prepared_run(tmp_path):
    r_fd, w_fd = os.pipe()
    try:
        ring = su.Ring(16)
        c = Chain()
        c.read(r_fd, 10)
        p = ring.prepare(c)
        caught = []

        def go():
            try:
                p.run()
            except Exception as exc:
                caught.append(exc)
        t = threading.Thread(target=go)
        t.start()
        time.sleep(0.2)
        ring.close()
        t.join(10)
        assert not t.is_alive() and len(caught) == 1 and isinstance(caught[0], RingClosed)
        p.close()                       # after the ring: nothing to give back, no error
    finally:
        os.close(r_fd)
        os.close(w_fd)


def test_prepare_refuses_what_publish_refuses(ring):
    with pytest.raises(TypeError):
        ring.prepare("not a chain")
    with pytest.raises(su.ChainError, match="no steps"):
        ring.prepare(Chain())
    big = Chain()
    for _ in range(65):
        big.nop()
    with pytest.raises(su.ChainError, match="SQ entries"):
        ring.prepare(big)
    assert ring.free_slots == ring.slots


def test_ring_run_of_a_chain_run_before_takes_the_one_call_path(ring, data_file):
    """The second run() of a chain is laid and reaped by this thread alone (run_once):
    same results, the lease back after each run."""
    c, d = _cat(str(data_file))
    first = ring.run(c)
    for _ in range(100):
        r = ring.run(c)
        assert [s.res for s in r] == [s.res for s in first] and r[d].data == data_file.read_bytes()
        assert ring.free_slots == ring.slots and ring.inflight == 0


def test_an_interrupted_ring_run_is_handed_to_the_reaper(ring):
    r_fd, w_fd = os.pipe()
    try:
        c = Chain()
        d = c.read(r_fd, 10)
        nop = Chain()
        nop.nop()
        ring.run(nop)
        tags = len(ring._pools.free_tags)
        os.write(w_fd, b"x")
        assert ring.run(c)[d].data == b"x"   # frozen on this run
        os.write(w_fd, b"y")
        assert ring.run(c)[d].data == b"y"   # laid by run_once
        with pytest.raises(Stop), _raising_alarm(0.1):
            ring.run(c)
        assert ring.inflight == 1             # the reaper has it, cancelled
        deadline = time.monotonic() + 5
        while ring.inflight and time.monotonic() < deadline:
            ring.run(nop)
        assert ring.inflight == 0 and len(ring._pools.free_tags) == tags
        assert ring.free_slots == ring.slots
    finally:
        os.close(r_fd)
        os.close(w_fd)
