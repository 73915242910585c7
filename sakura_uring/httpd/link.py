"""(c) Sakura link: Python receives and parses the request line; the rest of the handler --
open, read, close, send the header, send the body -- is one linked chain, the file's fd
flowing through a direct slot and its bytes through a registered buffer."""
from __future__ import annotations

import socket

from .aioserve import ring_call, serve as _serve
from .http import CLOSING, HEAD_MAX, response_head, split_head

BUFFER = 65536


async def handle(ring, fd, site) -> None:
    buf = b""
    while True:
        parts = split_head(buf)
        while parts is None:
            if len(buf) >= HEAD_MAX:
                await _send(ring, fd, response_head(431, 0, False))
                return
            res, h = await ring_call(ring, lambda c: c.recv(fd, HEAD_MAX))
            if res[h].res <= 0:
                return
            buf += res.data(h)
            parts = split_head(buf)
        head, buf = parts
        req = site.parse(head)
        if req.status != 200:
            await _send(ring, fd, response_head(req.status, 0, req.keep and req.status not in CLOSING))
            if req.status in CLOSING or not req.keep:
                return
            continue
        hdr = response_head(200, req.size, req.keep)
        if req.head_only or not req.size:
            await _send(ring, fd, hdr)
        else:
            def build(c, req=req, hdr=hdr):
                f = c.openat(req.path)
                data = c.read(f, req.size)       # a short read (the file shrank) breaks it
                c.close(f)
                c.send(fd, hdr, flags=socket.MSG_MORE)   # one segment with the body
                return c.send(fd, data)
            res, last = await ring_call(ring, build)
            if not res.ok or res[last].res != req.size:
                return                            # the length sent would be a lie: close
        if not req.keep:
            return


async def _send(ring, fd, data: bytes) -> None:
    while data:
        res, h = await ring_call(ring, lambda c: c.send(fd, data))
        n = res[h].res
        if n <= 0:
            raise OSError(-n, "send")
        data = data[n:]


def serve(listener, site, stop, ready) -> None:
    _serve(listener, site, stop, ready, handle, entries=512, sqpoll=True, slots=512, buffers=256,
           buffer_size=BUFFER)
