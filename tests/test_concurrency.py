"""Several threads at once, Futures, asyncio, and CQ overflow."""
import asyncio
import os
import threading

import pytest

import sakura_uring as su
from sakura_uring import Chain, Link

from helpers import assert_pools_full, cat_chain as _cat, require_link_engine


@pytest.mark.parametrize("sqpoll", [False, True])
def test_threads_submitting_at_once(tmp_path, sqpoll):
    require_link_engine()
    files = []
    for i in range(4):
        p = tmp_path / f"t{i}"
        p.write_bytes(os.urandom(4096))
        files.append(p)
    errors = []
    with su.Ring(64, slots=16, sqpoll=sqpoll) as ring:
        def worker(i):
            try:
                p = files[i]
                want = p.read_bytes()
                c = _cat(p)
                for k in range(1500):
                    if k % 2:
                        r = ring.run(c)
                    else:
                        r = ring.submit(c).result(timeout=10)
                    if r.data(1) != want:
                        errors.append((i, k, r))
                        return
            except Exception as e:   # pragma: no cover - reported below
                errors.append(e)
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=120)
        assert not errors
        assert ring.stats()["chains"] == 6000
        assert_pools_full(ring)


def test_futures(data_file):
    with su.Ring(64) as ring:
        futs = [ring.submit(_cat(data_file)) for _ in range(40)]
        want = data_file.read_bytes()
        assert all(f.result(timeout=10).data(1) == want for f in futs)


def test_asyncio(data_file):
    async def main():
        with su.Ring(64) as ring:
            rs = await asyncio.gather(*(ring.run_async(_cat(data_file)) for _ in range(200)))
            assert ring.inflight == 0
            return rs
    rs = asyncio.run(main())
    assert len(rs) == 200 and all(r.data(1) == data_file.read_bytes() for r in rs)


def test_asyncio_is_woken_not_polling():
    # the loop sleeps in epoll on the eventfd: a recv that completes later wakes it
    import socket
    a, b = socket.socketpair()

    async def main():
        with su.Ring(16) as ring:
            c = Chain()
            m = c.recv(a, 5, waitall=True)
            task = asyncio.ensure_future(ring.run_async(c))
            await asyncio.sleep(0.05)
            assert not task.done()
            b.send(b"later")
            r = await asyncio.wait_for(task, 5)
            return r[m].data
    with a, b:
        assert asyncio.run(main()) == b"later"


def test_asyncio_cancel_stops_the_chain():
    import socket
    a, b = socket.socketpair()

    async def main(ring):
        c = Chain()
        c.recv(a, 5)
        task = asyncio.ensure_future(ring.run_async(c))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):               # the cancelled recv completes in the kernel
            if ring.inflight == 0:
                break
            await asyncio.sleep(0.01)
    with a, b, su.Ring(16) as ring:
        asyncio.run(main(ring))
        assert ring.inflight == 0 and ring.free_buffers == ring.buffers


def test_cq_overflow_loses_nothing():
    # CQ of 8 entries, 64 completions posted before anyone reaps: the kernel keeps the
    # excess in its overflow backlog (IORING_FEAT_NODROP) and we must flush it.
    with su.Ring(8, cq_entries=8) as ring:
        states = []
        for _ in range(8):
            c = Chain(link=Link.NONE)
            for _ in range(8):
                c.nop()
            states.append(ring._pub.publish(c, None, False))   # publish, don't reap
        assert su.ring.SQ_CQ_OVERFLOW & su._native.lib.sk_sq_flags(ring._core.r)
        for st in states:
            ring._reaper.wait(st)
            assert st.result.ok and len(st.result) == 8
        s = ring.stats()
        assert s["cqes"] == 64
        assert_pools_full(ring)


def test_close_with_chains_in_flight():
    import socket
    a, b = socket.socketpair()
    with a, b:
        ring = su.Ring(16)
        c = Chain()
        c.recv(a, 10)
        fut = ring.submit(c)
        ring.close()                        # cancels the recv, then frees everything
        r = fut.result(timeout=5)
        assert r[0].error is not None
        assert ring.closed
