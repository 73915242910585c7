"""(a) Blocking threads with plain system calls: a thread per connection does recv, open,
read, send and close itself."""
from __future__ import annotations

import os
import socket
import threading

from . import privileges
from .connection import CHUNK, Truncated, drive, serve_connection
from .serving import accept_loop


class BlockingIO:
    def __init__(self, sock: socket.socket):
        self.sock = sock

    async def recv(self) -> bytes:
        return self.sock.recv(CHUNK)

    async def respond(self, head: bytes, opened, then_recv: bool):
        out = head
        if opened is not None:
            off = 0
            while off < opened.size:
                chunk = os.pread(opened.fd, min(CHUNK, opened.size - off), off)
                if not chunk:
                    raise Truncated(f"the file ended at {off} of {opened.size} bytes")
                self.sock.sendall(out + chunk)      # the header goes with the first chunk
                out = b""
                off += len(chunk)
        if out:
            self.sock.sendall(out)
        return None

    async def linger(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)
        while self.sock.recv(CHUNK):
            pass


def serve(listener: socket.socket, ctx, stop: threading.Event, ready: threading.Event) -> None:
    def connection(sock: socket.socket) -> None:
        conn = ctx.conns.add(sock.fileno())
        try:
            threading.Thread(target=_run, args=(sock, conn), daemon=True).start()
        except RuntimeError:                # no more threads: drop this one
            ctx.conns.remove(conn)
            sock.close()

    def _run(sock, conn):
        try:
            privileges.become(ctx.user)
            drive(serve_connection(BlockingIO(sock), ctx.site, ctx.conns, conn))
        except OSError:
            pass                # the client went away, or the reaper ended the connection
        finally:
            ctx.conns.remove(conn)
            sock.close()

    accept_loop(listener, ctx, stop, ready, connection)
