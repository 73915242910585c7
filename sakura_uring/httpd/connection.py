"""One connection, request after request: the same code for the three Python-side models.

The models differ only in how they move bytes, which each gives as an `io` object:

    await io.recv()                        -> bytes (b"" when the client closed)
    await io.respond(head, opened, then_recv)
        send `head`, then exactly opened.size bytes of opened.fd (None: no body), in
        bounded chunks, resending after short sends; raises Truncated when the file
        shrank under us (the length sent is then a lie: the connection must end).
        then_recv: the model may receive the next request in the same round trip and
        return it (b"": the client closed); otherwise it returns None.
    await io.linger()                      shut our side, read what the client still sends
                                           until it closes (the reaper bounds the time)

The blocking model's io never suspends, so `drive()` runs this coroutine to its end in
one step; the asyncio models await it."""
from __future__ import annotations

import os

from .conns import BUSY, HEAD, IDLE, LINGER, Conn, Conns
from .http import CLOSING, HEAD_MAX, parse, response_head, split_head
from .site import Opened, Site

CHUNK = 65536                 # the most any model holds of a file per connection


class Truncated(OSError):
    """The file ended before the length its response announced."""


def drive(coro) -> None:
    """Run a coroutine that never suspends (blocking io) to its end."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("a blocking connection handler suspended")


async def serve_connection(io, site: Site, conns: Conns, conn: Conn) -> None:
    limits = conns.limits
    buf = b""
    while True:
        conns.set(conn, HEAD if buf else IDLE)
        parts = split_head(buf)
        while parts is None:
            if len(buf) >= HEAD_MAX:
                return await _error(io, conns, conn, 431)
            data = await io.recv()
            if not data:
                return
            conns.set(conn, HEAD)
            buf += data
            parts = split_head(buf)
        head, buf = parts
        if len(head) > HEAD_MAX:
            return await _error(io, conns, conn, 431)
        req = parse(head, limits.body_max)
        if req.status in CLOSING:
            return await _error(io, conns, conn, req.status)
        left = req.body                          # read and drop the body: never a request
        take = min(left, len(buf))
        buf, left = buf[take:], left - take
        while left:
            data = await io.recv()
            if not data:
                return
            if len(data) > left:
                buf = data[left:]
                data = data[:left]
            left -= len(data)
        conns.set(conn, BUSY)
        status, opened = req.status, None
        if status == 200:
            got = site.open(req.target)
            if isinstance(got, Opened):
                opened = got
            else:
                status = got
            if status in CLOSING:
                return await _error(io, conns, conn, status)
        keep = req.keep
        then_recv = keep and not buf
        try:
            if opened is not None:
                head_out = response_head(200, opened.size, keep)
                body = None if req.head_only or not opened.size else opened
                more = await io.respond(head_out, body, then_recv)
            else:
                more = await io.respond(response_head(status, 0, keep), None, then_recv)
        finally:
            if opened is not None:
                os.close(opened.fd)
        if not keep:
            return
        if more is not None:
            if not more:
                return                           # the client closed
            buf += more


async def _error(io, conns: Conns, conn: Conn, status: int) -> None:
    """Answer, then linger: closing with unread input would send a reset that can overtake
    the answer."""
    await io.respond(response_head(status, 0, False), None, False)
    conns.set(conn, LINGER)
    await io.linger()
