"""(c) Sakura link: Python receives and parses the request line; the rest of the handler --
open, read, close, send the header, send the body, and receive the next request of a
keep-alive connection -- is one linked chain, the file's fd flowing through a direct slot
and its bytes through a registered buffer. One round trip through Python per request."""
from __future__ import annotations

import socket

from .. import Chain
from .aioserve import TOO_LARGE, read_head, serve as _serve
from .http import CLOSING, HEAD_MAX, response_head

BUFFER = 65536
BUFFERS = 512
# A chain that ends in the next recv holds two registered buffers (the file's, the next
# request's) while the client thinks; with more connections than this, responses and
# receives go in separate chains, so that waiting connections can't take every buffer.
MERGE_BELOW = BUFFERS // 2 - 32
active = 0


async def handle(ring, fd, site) -> None:
    global active
    active += 1
    try:
        await _serve_connection(ring, fd, site)
    finally:
        active -= 1


async def _serve_connection(ring, fd, site) -> None:
    buf = b""
    prepared: dict = {}       # chains built for this connection, reused for repeats
    while True:
        parts = await read_head(ring, fd, buf)
        if parts is TOO_LARGE:
            await _respond(ring, fd, response_head(431, 0, False), None, False, prepared)
            return
        if parts is None:
            return
        head, buf = parts
        req = site.parse(head)
        if req.status != 200:
            keep = req.keep and req.status not in CLOSING
            more = await _respond(ring, fd, response_head(req.status, 0, keep), None,
                                  keep and not buf and active < MERGE_BELOW, prepared)
        else:
            more = await _respond(ring, fd, response_head(200, req.size, req.keep),
                                  None if req.head_only or not req.size else req,
                                  req.keep and not buf and active < MERGE_BELOW, prepared)
            if more is None:
                return                          # the response failed: close
        if more is False or (not req.keep) or req.status in CLOSING:
            return
        if more:
            buf += more


async def _respond(ring, fd, hdr: bytes, req, recv_next: bool, prepared: dict):
    """One chain: [open, read, close,] send header[, send body][, recv the next request].
    Returns the bytes received (b"" if none were asked for), False when the client closed,
    None when the response could not be sent whole. A connection asking for the same thing
    again reuses the chain built the first time (building one costs more than running it)."""
    key = (hdr, None if req is None else req.path, recv_next)
    entry = prepared.get(key)
    if entry is None:
        c = Chain()
        if req is not None:
            f = c.openat(req.path)
            data = c.read(f, req.size)           # a short read (the file shrank) breaks it
            c.close(f)
            c.send(fd, hdr, flags=socket.MSG_MORE)   # one segment with the body
            last = c.send(fd, data)
        else:
            last = c.send(fd, hdr)
        nxt = c.recv(fd, HEAD_MAX) if recv_next else None
        entry = (c, last, nxt, req.size if req is not None else len(hdr))
        if len(prepared) < 64:
            prepared[key] = entry
    c, last, nxt, want = entry
    res = await ring.run_async(c)
    if res[last].res != want:
        return None
    if nxt is None:
        return b""
    n = res[nxt].res
    return res.data(nxt) if n > 0 else False


def serve(listener, site, stop, ready) -> None:
    _serve(listener, site, stop, ready, handle, entries=1024, sqpoll=True, slots=1024,
           buffers=BUFFERS, buffer_size=BUFFER)
