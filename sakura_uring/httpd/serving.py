"""What every model's serve() is given, and the accept loop of the models that accept in
Python (threads, kernel)."""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from .conns import RESOURCE_ERRNOS, Conns
from .http import Limits
from .privileges import User
from .site import Site

BACKOFF_S = 0.05              # after EMFILE and friends, before accepting again


@dataclass
class Context:
    site: Site
    limits: Limits
    conns: Conns
    user: User | None         # whose file permissions apply (None: the process's own)


def accept_loop(listener: socket.socket, ctx: Context, stop: threading.Event,
                ready: threading.Event, on_connection) -> None:
    """Blocking accepts; wakes every 0.2 s to see `stop`. on_connection(sock) takes each
    accepted socket. Out of fds (EMFILE, ...): end an idle connection, back off, go on.
    Any other failure is fatal and raised (the server then exits non-zero)."""
    listener.settimeout(0.2)
    ready.set()
    while not stop.is_set():
        try:
            sock, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError as e:
            if stop.is_set():
                return
            if e.errno is not None and ctx.conns.accept_failed(e.errno):
                if e.errno in RESOURCE_ERRNOS:       # a client's abort needs no pause
                    time.sleep(BACKOFF_S)
                continue
            raise
        sock.settimeout(None)
        on_connection(sock)
