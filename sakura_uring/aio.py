"""asyncio integration: the loop watches an eventfd registered with the ring, so it
sleeps in epoll until the kernel posts a completion (no polling)."""
from __future__ import annotations

import asyncio

from .errors import RingFull


async def run_async(ring, chain, *, timeout: float | None = None):
    loop = ring._loop_here() or asyncio.get_running_loop()
    ring._attach_loop(loop)
    fut = loop.create_future()
    while True:
        try:
            st = ring._publish(chain, timeout, block=False, aio=(loop, fut))
            break
        except RingFull:
            pass
        # Wait for the next completion, which gives room back. The waiter is registered
        # before the retry, so a completion between the refusal and the wait is not missed.
        room = ring._wait_room(loop)
        try:
            st = ring._publish(chain, timeout, block=False, aio=(loop, fut))
            break
        except RingFull:
            if ring.inflight:
                await room
            else:               # only the SQ is short: the SQPOLL thread frees it alone
                ring._make_progress()
                await asyncio.sleep(0)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        ring._cancel(st)       # the task was cancelled: stop the chain in the kernel too
        raise
