"""(d) Sakura kernel: the whole handler, parsing included, is bpf/handlers/http.c running in
kernel context; Python only accepts connections, hands each to the KernelRing, and watches
the connection's phase, which the handler keeps in its variables (v[17] since, v[18] what),
for the timeouts and for making room (conns.py)."""
from __future__ import annotations

import os
import socket
import threading

from ..errors import RingFull
from ..kernel import KernelRing, handler_path
from . import privileges
from .http import response_head
from .conns import BUSY, HEAD, IDLE, LINGER
from .serving import accept_loop

# http.c's PH_* values -> the registry's phases (PH_SEND: waiting on a slow reader)
PHASES = {0: BUSY, 1: IDLE, 2: HEAD, 3: BUSY, 4: LINGER}
V_SINCE = 17                     # v[17] since (ns, CLOCK_MONOTONIC), v[18] the phase


def serve(listener: socket.socket, ctx, stop: threading.Event,
          ready: threading.Event) -> None:
    slots = ctx.limits.max_connections       # one request slot per open connection
    kr = KernelRing(handler_path("http"), entries=4096, requests=min(slots, 65535),
                    buffer_size=65536)
    try:
        persona = privileges.register_personality(kr.fd, ctx.user)

        def connection(sock: socket.socket) -> None:
            # the handler owns one descriptor and closes it; ours keeps the socket (not a
            # reused fd number) for shutdown() until the request has ended
            try:
                theirs = os.dup(sock.fileno())
            except OSError as e:               # out of fds: as when accept() is
                sock.close()
                if not ctx.conns.accept_failed(e.errno):
                    raise
                return
            conn = ctx.conns.add(sock.fileno())
            try:
                fut = kr.call(theirs, ctx.site.fd, persona, timeout=2.0)
            except BaseException as exc:
                os.close(theirs)
                ctx.conns.remove(conn)
                if isinstance(exc, RingFull):      # every slot busy, none of them idle
                    try:
                        sock.setblocking(False)
                        sock.send(response_head(503, 0, False))
                    except OSError:
                        pass
                    sock.close()
                    return
                sock.close()
                if stop.is_set():
                    return
                raise

            def probe():
                v = kr.variables(fut, V_SINCE, 2)
                if v is None or v[0] == 0:       # finished, or the handler has not begun
                    return None
                return PHASES.get(v[1], BUSY), v[0] / 1e9

            conn.probe = probe

            def finished(_):
                ctx.conns.remove(conn)
                sock.close()

            fut.add_done_callback(finished)

        accept_loop(listener, ctx, stop, ready, connection)
    finally:
        # each handler closes its own descriptor once its connection ends: end them all
        # and let the handlers finish before the ring goes
        ctx.conns.end_all(wait=2.0)
        kr.close()
