"""asyncio integration: the loop watches an eventfd registered with the ring, so it
sleeps in epoll until the kernel posts a completion (no polling)."""
from __future__ import annotations

import asyncio

from .errors import RingFull


async def run_async(ring, chain, *, timeout: float | None = None):
    loop = ring._loop_here() or asyncio.get_running_loop()
    ring._attach_loop(loop)
    fut = loop.create_future()
    delay = 0.0005
    while True:
        try:
            st = ring._publish(chain, timeout, block=False, aio=(loop, fut))
            ring._arm_watch(loop)
            break
        except RingFull:
            # completions free room; they arrive through the eventfd reader on this loop
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        ring._cancel(st)       # the task was cancelled: stop the chain in the kernel too
        raise
