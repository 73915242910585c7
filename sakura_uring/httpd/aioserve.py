"""The asyncio frame shared by the io_uring models (b) and (c): accepts come from the ring
too, one task per connection; the loop sleeps on the ring's eventfd."""
from __future__ import annotations

import asyncio
import socket
import threading

from .. import Chain, Ring
from .http import HEAD_MAX, split_head


async def ring_call(ring: Ring, build) -> object:
    """One chain built by build(chain) -> handle; returns (ChainResult, handle)."""
    c = Chain()
    h = build(c)
    return await ring.run_async(c), h


def serve(listener: socket.socket, site, stop: threading.Event, ready: threading.Event,
          handle, **ring_kw) -> None:
    asyncio.run(_main(listener, site, stop, ready, handle, ring_kw))


async def _main(listener, site, stop, ready, handle, ring_kw):
    tasks: set[asyncio.Task] = set()
    with Ring(**ring_kw) as ring:
        acceptor = asyncio.create_task(_accept(ring, listener, site, handle, tasks))
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        acceptor.cancel()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(acceptor, *tasks, return_exceptions=True)


async def _accept(ring, listener, site, handle, tasks):
    lfd = listener.fileno()
    while True:
        res, h = await ring_call(ring, lambda c: c.accept(lfd, direct=False))
        fd = res[h].res
        if fd < 0:
            continue
        t = asyncio.create_task(_guarded(handle, ring, fd, site))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


async def _guarded(handle, ring, fd, site):
    try:
        await handle(ring, fd, site)
    except (OSError, asyncio.CancelledError):
        pass
    finally:
        c = Chain()
        c.close(fd)
        try:
            await ring.run_async(c)
        except Exception:
            pass


TOO_LARGE = object()


async def read_head(ring: Ring, fd: int, buf: bytes):
    """Receive until `buf` holds a whole request head: (head, rest); None when the client
    closed; TOO_LARGE when the head outgrew HEAD_MAX (431)."""
    parts = split_head(buf)
    while parts is None:
        if len(buf) >= HEAD_MAX:
            return TOO_LARGE
        res, h = await ring_call(ring, lambda c: c.recv(fd, HEAD_MAX))
        if res[h].res <= 0:
            return None
        buf += res.data(h)
        parts = split_head(buf)
    return parts
