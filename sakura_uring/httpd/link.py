"""(c) Sakura link: Python receives and parses the request and opens the file (beneath the
root, see site.py); sending the response -- read a chunk, send the header, send the chunk
-- and receiving the next request of a keep-alive connection is one linked chain, the
bytes flowing through a registered buffer. One round trip through Python per request (per
64 KiB chunk for larger files)."""
from __future__ import annotations

import socket

from .aioserve import RingIO, serve as _serve
from .connection import CHUNK, Truncated
from .. import Chain

BUFFERS = 512
PREPARED_MAX = 16
# MSG_WAITALL: io_uring resends a short send itself, and a send still short fails the link
SEND_FLAGS = socket.MSG_NOSIGNAL | socket.MSG_WAITALL


class LinkIO(RingIO):
    def __init__(self, ring, fd):
        super().__init__(ring, fd)
        # chains built for this connection, reused when a request repeats (same file fd
        # number, chunk, header): building a chain costs more than running it
        self.prepared: dict = {}

    def _chain(self, ffd: int, off: int, n: int, head: bytes, recv_next: bool):
        key = (ffd, off, n, head, recv_next)
        got = self.prepared.get(key)
        if got is not None:
            return got
        c = Chain()
        data = c.read(ffd, n, off) if n else None   # a short read (the file shrank) breaks it
        hstep = c.send(self.fd, head, flags=SEND_FLAGS | (socket.MSG_MORE if n else 0)) \
            if head else None
        bstep = c.send(self.fd, data, flags=SEND_FLAGS) if n else None
        nxt = c.recv(self.fd, CHUNK) if recv_next else None
        got = (c, data, hstep, bstep, nxt)
        if len(self.prepared) >= PREPARED_MAX:
            self.prepared.clear()
        self.prepared[key] = got
        return got

    async def respond(self, head: bytes, opened, then_recv: bool):
        off, size = 0, opened.size if opened is not None else 0
        ffd = opened.fd if opened is not None else -1
        while True:
            n = min(CHUNK, size - off)
            last = off + n >= size
            c, data, hstep, bstep, nxt = self._chain(ffd, off, n, head, last and then_recv)
            res = await self.ring.run_async(c)
            if nxt is not None and res.ok:
                # the common case, checked without a StepResult: a soft link ran to the
                # recv, so every read and send before it moved all its bytes
                return res.data(nxt) or b""
            if data is not None and res[data].res != n:
                raise Truncated(f"the file ended at {off} of {size} bytes")
            if hstep is not None:
                sent = res[hstep].res
                if sent != len(head):
                    await self._rest(sent, head)
                    if bstep is not None:            # cancelled with the header: send it now
                        await self.send(res.data(data) or b"")
                    bstep = nxt = None
            if bstep is not None and res[bstep].res != n:
                await self._rest(res[bstep].res, res.data(data) or b"")
                nxt = None
            head = b""
            off += n
            if last:
                break
        if nxt is not None and res[nxt].res >= 0:
            return res.data(nxt) if res[nxt].res > 0 else b""
        if then_recv:
            return await self.recv()
        return None

    async def _rest(self, sent: int, data: bytes) -> None:
        if sent < 0 and sent != -125:                # -ECANCELED: not tried; resend it all
            raise OSError(-sent, "send")
        await self.send(data[max(sent, 0):])


def serve(listener, ctx, stop, ready) -> None:
    _serve(listener, ctx, stop, ready, LinkIO, entries=1024, sqpoll=True, slots=64,
           buffers=BUFFERS, buffer_size=CHUNK)
