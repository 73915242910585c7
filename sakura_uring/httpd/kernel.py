"""(d) Sakura kernel: the whole handler, parsing included, is bpf/handlers/http.c running in
kernel context; Python only accepts connections and hands each to the KernelRing."""
from __future__ import annotations

import os
import socket
import threading

from ..kernel import KernelRing, handler_path
from .http import accept_loop

CONNECTIONS = 1024          # request slots: one per open connection


def serve(listener: socket.socket, site, stop: threading.Event,
          ready: threading.Event) -> None:
    rootfd = os.open(site.root, os.O_RDONLY | os.O_DIRECTORY)
    kr = KernelRing(handler_path("http"), entries=4096, buffers=CONNECTIONS,
                    buffer_size=65536)
    try:
        # the handler owns each descriptor from here, and closes it
        accept_loop(listener, stop, ready, lambda conn: kr.call(conn.detach(), rootfd))
    finally:
        kr.close()
        os.close(rootfd)
