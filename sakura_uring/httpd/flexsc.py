"""(b) The FlexSC model: every system call is its own io_uring request, and its result comes
back to Python before the next one is submitted (exception-less, but one round trip each)."""
from __future__ import annotations

from .aioserve import TOO_LARGE, read_head, ring_call, serve as _serve
from .http import CLOSING, response_head

CHUNK = 65536


async def handle(ring, fd, site) -> None:
    buf = b""
    while True:
        parts = await read_head(ring, fd, buf)
        if parts is TOO_LARGE:
            await _send(ring, fd, response_head(431, 0, False))
            return
        if parts is None:
            return
        head, buf = parts
        req = site.parse(head)
        if req.status != 200:
            await _send(ring, fd, response_head(req.status, 0, req.keep and req.status not in CLOSING))
            if req.status in CLOSING or not req.keep:
                return
            continue
        out = response_head(200, req.size, req.keep)
        if not req.head_only and req.size:
            res, h = await ring_call(ring, lambda c: c.openat(req.path, direct=False))
            f = res[h].res
            if f < 0:
                return
            off = 0
            try:
                while off < req.size:
                    n = min(CHUNK, req.size - off)
                    res, h = await ring_call(ring, lambda c: c.read(f, n, off))
                    data = res.data(h)
                    if not data:
                        return
                    await _send(ring, fd, out + data)
                    out = b""
                    off += len(data)
            finally:
                await ring_call(ring, lambda c: c.close(f))
        else:
            await _send(ring, fd, out)
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
    _serve(listener, site, stop, ready, handle, entries=256, sqpoll=True, buffers=64,
           buffer_size=CHUNK)
