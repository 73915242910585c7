"""asyncio never loses a wakeup, with no poll to hide one (the 10 ms safety net is gone).

The cause that was found: a reap woken by the eventfd consumed the eventfd's count and then
stopped after one batch of 256 CQEs that completed no chain, leaving CQEs in the ring that no
later signal would announce. Each case fails on that code within its time."""
import asyncio
import os
import socket
import threading
import time

import pytest

import sakura_uring as su
from sakura_uring import Chain, Link

from helpers import assert_pools_full


def test_more_than_a_batch_of_cqes_that_complete_nothing(any_ring_big):
    """300 chains (nop, then recv): the loop is kept busy while every nop and then every recv
    completes, so 600 CQEs wait at once and the first 256 complete no chain."""
    ring = any_ring_big
    pairs = [socket.socketpair() for _ in range(300)]

    async def one(a):
        c = Chain(link=Link.HARD)
        c.nop()
        d = c.recv(a, 1)
        return (await ring.run_async(c))[d].data

    async def main():
        tasks = [asyncio.create_task(one(a)) for a, _ in pairs]
        await asyncio.sleep(0)        # every task has published its chain
        time.sleep(0.2)               # the loop is busy: the nops complete meanwhile
        for _, b in pairs:
            b.send(b"x")
        time.sleep(0.2)               # and so do the recvs
        return await asyncio.wait_for(asyncio.gather(*tasks), 10)

    try:
        assert asyncio.run(main()) == [b"x"] * 300
    finally:
        for a, b in pairs:
            a.close()
            b.close()
    assert_pools_full(ring)


@pytest.fixture(params=[False, True], ids=["inline", "sqpoll"])
def any_ring_big(request):
    with su.Ring(1024, sqpoll=request.param, sq_idle_ms=1, cq_entries=4096) as r:
        yield r


@pytest.mark.parametrize("sqpoll", [False, True], ids=["inline", "sqpoll"])
def test_cq_overflow_from_one_loop(sqpoll):
    """Every tag in flight with 8 CQEs each on a 64-entry CQ: the overflow backlog posts no
    eventfd signal, so the reap must flush it."""
    with su.Ring(64, sqpoll=sqpoll, cq_entries=64) as ring:
        async def one():
            c = Chain(link=Link.NONE)
            for _ in range(8):
                c.nop()
            return (await ring.run_async(c)).ok

        async def main():
            return await asyncio.wait_for(asyncio.gather(*[one() for _ in range(2000)]), 20)

        assert all(asyncio.run(main()))
        assert_pools_full(ring)


def test_stress_one_loop_sqpoll_sleeping_and_other_reapers():
    """Thousands of chains from one loop, the SQPOLL thread made to sleep all the time
    (sq_idle_ms=0), and two threads running and reaping chains of their own meanwhile."""
    with su.Ring(256, sqpoll=True, sq_idle_ms=0, slots=64) as ring, \
            open("/etc/hostname", "rb") as fh:
        want = fh.read(64)
        stop = threading.Event()
        others = [0, 0]

        def reaper(i):
            while not stop.is_set():
                c = Chain()
                c.nop()
                c.nop()
                assert ring.run(c).ok
                others[i] += 1

        threads = [threading.Thread(target=reaper, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()

        async def one(i):
            c = Chain()
            if i % 3 == 0:
                f = c.openat("/etc/hostname")
                d = c.read(f, 64)
                c.close(f)
                return (await ring.run_async(c))[d].data == want
            for _ in range(i % 5 + 1):
                c.nop()
            return (await ring.run_async(c)).ok

        async def main():
            t0 = time.monotonic()
            done = 0
            while time.monotonic() - t0 < 8 and done < 20_000:
                res = await asyncio.wait_for(asyncio.gather(*[one(i) for i in range(500)]), 10)
                assert all(res)
                done += len(res)
            return done

        try:
            done = asyncio.run(main())
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert done >= 1000 and all(others)
        assert_pools_full(ring)


def test_waiting_for_room_needs_no_poll():
    """More chains than slots: a refused run_async is queued and laid by the completion
    that gives a slot back, not by a sleep or a retry loop."""
    with su.Ring(64, slots=4) as ring:
        async def one():
            c = Chain()
            f = c.openat("/etc/hostname")
            d = c.read(f, 16)
            c.close(f)
            return (await ring.run_async(c))[d].ok

        async def main():
            t0 = time.monotonic()
            res = await asyncio.wait_for(asyncio.gather(*[one() for _ in range(2000)]), 20)
            return res, time.monotonic() - t0

        res, took = asyncio.run(main())
        assert all(res)
        assert_pools_full(ring)
        waiters = ring._aio.room_waiters
        assert not waiters or all(w.fut.done() for w in waiters)


def test_a_completion_wakes_the_next_waiter_that_still_waits(tmp_path):
    """A completion lays the next queued run_async chain (waking all of them made 10,000
    retry per completion); one cancelled meanwhile is skipped, so the room reaches the next."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with su.Ring(64, slots=1) as ring:
        def cat():
            c = Chain()
            f = c.openat("/etc/hostname")
            d = c.read(f, 16)
            c.close(f)
            return c, d

        async def main():
            hold = Chain()
            f = hold.openat(str(fifo))          # blocks in the kernel until a writer opens
            hold.read(f, 1)
            hold.close(f)
            a = asyncio.ensure_future(ring.run_async(hold))
            await asyncio.sleep(0.3)            # a holds the ring's only slot
            (cb, _), (cc, dc) = cat(), cat()
            b = asyncio.ensure_future(ring.run_async(cb))
            c = asyncio.ensure_future(ring.run_async(cc))
            await asyncio.sleep(0.3)
            assert not b.done() and not c.done() and len(ring._aio.room_waiters) == 2
            b.cancel()
            await asyncio.sleep(0)
            w = os.open(fifo, os.O_WRONLY)      # lets a's open and read finish
            os.write(w, b"x")
            os.close(w)
            assert (await asyncio.wait_for(a, 10)).ok
            res = await asyncio.wait_for(c, 10)
            assert res[dc].data == open("/etc/hostname", "rb").read()[:16]
            assert b.cancelled()

        asyncio.run(main())
        assert_pools_full(ring)
        assert not ring._aio.room_waiters


def test_queued_run_async_chains_get_ring_closed_when_the_ring_closes():
    """Chains queued for room when the ring closes are never laid: each gets RingClosed."""
    r_fd, w_fd = os.pipe()
    ring = su.Ring(64, slots=1)
    try:
        async def main():
            hold = Chain(link=Link.HARD)
            f = hold.openat("/etc/hostname")    # takes the only slot...
            hold.read(r_fd, 1)                  # ...and keeps it while this read waits
            hold.close(f)
            a = asyncio.ensure_future(ring.run_async(hold))
            await asyncio.sleep(0.2)
            assert not a.done() and ring.free_slots == 0
            queued = []
            for _ in range(3):
                c = Chain()
                c.close(c.openat("/etc/hostname"))
                queued.append(asyncio.ensure_future(ring.run_async(c)))
            await asyncio.sleep(0.2)
            assert len(ring._aio.room_waiters) == 3
            ring.close()
            for q in queued:
                with pytest.raises(su.RingClosed):
                    await asyncio.wait_for(q, 5)
            try:                                # cancelled by close(): it ends either way
                assert not (await asyncio.wait_for(a, 5)).ok
            except su.RingClosed:
                pass
        asyncio.run(main())
    finally:
        ring.close()
        os.close(r_fd)
        os.close(w_fd)
