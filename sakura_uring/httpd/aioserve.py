"""The asyncio frame shared by the io_uring models (b) and (c): accepts come from the ring
too, one task per connection; the loop sleeps on the ring's eventfd. Each model gives its
io class (see connection.py); recv, linger and plain sends are the same for both."""
from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from typing import Any

from .. import Chain, ChainResult, Ring
from . import privileges
from .connection import CHUNK, serve_connection
from .conns import RESOURCE_ERRNOS
from .serving import BACKOFF_S, Context


async def ring_call(ring: Ring, build) -> tuple[ChainResult, Any]:
    """One chain built by build(chain) -> handle; returns (ChainResult, handle)."""
    c = Chain()
    h = build(c)
    return await ring.run_async(c), h


class RingIO:
    """Each system call one io_uring request, its result back in Python (the FlexSC model;
    the link model overrides respond())."""

    def __init__(self, ring: Ring, fd: int):
        self.ring, self.fd = ring, fd

    async def recv(self) -> bytes:
        res, h = await ring_call(self.ring, lambda c: c.recv(self.fd, CHUNK))
        return (res.data(h) or b"") if res[h].res > 0 else b""

    async def send(self, data: bytes) -> None:
        """All of data, resending after short sends."""
        while data:
            res, h = await ring_call(self.ring, lambda c: c.send(self.fd, data,
                                                                  flags=socket.MSG_NOSIGNAL))
            n = res[h].res
            if n <= 0:
                raise OSError(-n or errno.EPIPE, "send")
            data = data[n:]

    async def linger(self) -> None:
        s = socket.socket(fileno=self.fd)
        try:
            s.shutdown(socket.SHUT_WR)
        finally:
            s.detach()
        while await self.recv():
            pass


def serve(listener: socket.socket, ctx: Context, stop: threading.Event,
          ready: threading.Event, io_class, **ring_kw) -> None:
    # this thread, and the SQPOLL thread and io-wq workers its ring creates, open files
    # with the serving user's permissions
    privileges.become(ctx.user)
    asyncio.run(_main(listener, ctx, stop, ready, io_class, ring_kw))


async def _main(listener, ctx, stop, ready, io_class, ring_kw):
    tasks: set[asyncio.Task] = set()
    with Ring(**ring_kw) as ring:
        acceptor = asyncio.create_task(_accept(ring, listener, ctx, io_class, tasks))
        ready.set()
        while not stop.is_set() and not acceptor.done():
            await asyncio.sleep(0.05)
        acceptor.cancel()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not acceptor.cancelled() and acceptor.done() and acceptor.exception():
            raise acceptor.exception()


async def _accept(ring, listener, ctx, io_class, tasks):
    lfd = listener.fileno()
    while True:
        res, h = await ring_call(ring, lambda c: c.accept(lfd, direct=False))
        fd = res[h].res
        if fd < 0:
            if ctx.conns.accept_failed(-fd):
                if -fd in RESOURCE_ERRNOS:           # a client's abort needs no pause
                    await asyncio.sleep(BACKOFF_S)
                continue
            raise OSError(-fd, f"accept on the listening socket failed: {os.strerror(-fd)} "
                          f"({errno.errorcode.get(-fd, -fd)})")
        t = asyncio.create_task(_connection(io_class(ring, fd), ctx))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


async def _connection(io, ctx):
    conn = ctx.conns.add(io.fd)
    try:
        await serve_connection(io, ctx.site, ctx.conns, conn)
    except (OSError, asyncio.CancelledError):
        pass                    # the client went away, or the reaper ended the connection
    finally:
        ctx.conns.remove(conn)
        c = Chain()
        c.close(io.fd)
        try:
            await io.ring.run_async(c)
        except BaseException:
            pass
