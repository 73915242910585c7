"""(a) Blocking threads with plain system calls: a thread per connection does recv,
open, fstat-free read (the size is cached), send and close itself."""
from __future__ import annotations

import os
import socket
import threading

from .http import CLOSING, HEAD_MAX, Site, accept_loop, response_head, split_head

CHUNK = 65536


def handle(conn: socket.socket, site: Site) -> None:
    buf = b""
    with conn:
        while True:
            parts = split_head(buf)
            while parts is None:
                if len(buf) >= HEAD_MAX:
                    conn.sendall(response_head(431, 0, False))
                    return
                data = conn.recv(HEAD_MAX)
                if not data:
                    return
                buf += data
                parts = split_head(buf)
            head, buf = parts
            req = site.parse(head)
            if req.status != 200:
                conn.sendall(response_head(req.status, 0, req.keep and req.status not in CLOSING))
                if req.status in CLOSING or not req.keep:
                    return
                continue
            out = response_head(200, req.size, req.keep)
            if not req.head_only and req.size:
                fd = os.open(req.path, os.O_RDONLY)
                try:
                    while chunk := os.read(fd, CHUNK):
                        conn.sendall(out + chunk)       # the header goes with the first chunk
                        out = b""
                finally:
                    os.close(fd)
            if out:
                conn.sendall(out)
            if not req.keep:
                return


def serve(listener: socket.socket, site: Site, stop: threading.Event,
          ready: threading.Event) -> None:
    accept_loop(listener, stop, ready, lambda conn: threading.Thread(
        target=_guarded, args=(conn, site), daemon=True).start())


def _guarded(conn, site):
    try:
        handle(conn, site)
    except OSError:
        pass              # the client went away
