"""(d) Sakura kernel: the whole handler, parsing included, is bpf/handlers/http.c running in
kernel context; Python only accepts connections and hands each to the KernelRing."""
from __future__ import annotations

import os
import socket
import threading

from ..kernel import KernelRing, handler_path

CONNECTIONS = 1024          # request slots: one per open connection


def serve(listener: socket.socket, site, stop: threading.Event,
          ready: threading.Event) -> None:
    rootfd = os.open(site.root, os.O_RDONLY | os.O_DIRECTORY)
    kr = KernelRing(handler_path("http"), entries=4096, buffers=CONNECTIONS,
                    buffer_size=65536)
    listener.settimeout(0.2)
    ready.set()
    try:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            # the handler owns the descriptor from here, and closes it
            kr.call(conn.detach(), rootfd)
    finally:
        kr.close()
        os.close(rootfd)
