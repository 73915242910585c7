"""(b) The FlexSC model: every system call is its own io_uring request, and its result comes
back to Python before the next one is submitted (exception-less, but one round trip each)."""
from __future__ import annotations

from .aioserve import RingIO, ring_call, serve as _serve
from .connection import CHUNK, Truncated


class FlexscIO(RingIO):
    async def respond(self, head: bytes, opened, then_recv: bool):
        out = head
        if opened is not None:
            off = 0
            while off < opened.size:
                n = min(CHUNK, opened.size - off)
                res, h = await ring_call(self.ring, lambda c: c.read(opened.fd, n, off))
                if res[h].res <= 0:
                    raise Truncated(f"the file ended at {off} of {opened.size} bytes")
                data = res.data(h) or b""
                await self.send(out + data)      # the header goes with the first chunk
                out = b""
                off += len(data)
        if out:
            await self.send(out)
        return None


def serve(listener, ctx, stop, ready) -> None:
    # 2048 chains in flight (2 x entries): more than max_connections' pending receives
    _serve(listener, ctx, stop, ready, FlexscIO, entries=1024, sqpoll=True, buffers=64,
           buffer_size=CHUNK)
