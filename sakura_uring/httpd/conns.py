"""Open connections, their timeouts, and what happens when there are too many.

Every model registers each connection here with the phase it is in. A reaper thread ends
a connection that stays too long in one phase (idle between requests, inside a request
head, sending to a client that does not read, lingering after an error) by shutting its
socket down: whatever the model has in flight on it (a blocking recv, an io_uring recv, a
kernel handler's recv) then completes, and the model closes it as if the client had. When
a new connection would exceed max_connections, the oldest idle one is ended the same way,
so a crowd of idle clients never locks out a new one. A connection leaves the registry
*before* its fd is closed, so a shutdown never reaches a reused fd number."""
from __future__ import annotations

import errno
import heapq
import os
import socket
import sys
import threading
import time

from .http import Limits

IDLE, HEAD, BUSY, LINGER = "idle", "head", "busy", "linger"
RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
TRANSIENT_ERRNOS = (errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EAGAIN)
LOG_EVERY_S = 10.0
EVICT_BATCH = 32


class Conn:
    __slots__ = ("fd", "phase", "since", "probe", "ended")

    def __init__(self, fd: int, probe=None):
        self.fd = fd
        self.phase = IDLE
        self.since = time.monotonic()
        self.probe = probe        # kernel model: () -> (phase, since) read from BPF state
        self.ended = False


class Conns:
    def __init__(self, limits: Limits, name: str = "httpd"):
        self.limits = limits
        self.name = name
        self._lock = threading.Lock()
        self._all: dict[int, Conn] = {}       # id(conn) -> conn
        self._stop = threading.Event()
        self._trouble_logged = -1e9           # when accept trouble was last reported
        self._trouble_count = 0
        self.evicted = 0                      # connections ended to make room
        self.timed_out = 0
        self._reaper = threading.Thread(target=self._reap, name=f"{name}-reaper", daemon=True)
        self._reaper.start()

    def __len__(self) -> int:
        return len(self._all)

    def add(self, fd: int, probe=None) -> Conn:
        """Register a new connection; when full, make room by ending the oldest idle ones."""
        conn = Conn(fd, probe)
        with self._lock:
            if len(self._all) >= self.limits.max_connections:
                self._evict_locked()
            self._all[id(conn)] = conn
        return conn

    def set(self, conn: Conn, phase: str) -> None:
        if conn.phase != phase:
            conn.phase = phase
            conn.since = time.monotonic()

    def remove(self, conn: Conn) -> None:
        """Before the connection's fd is closed."""
        with self._lock:
            self._all.pop(id(conn), None)

    def full(self) -> bool:
        return len(self._all) >= self.limits.max_connections

    def evict(self) -> bool:
        """End the oldest idle connections (accept hit EMFILE, or every slot is taken)."""
        with self._lock:
            return self._evict_locked()

    def _evict_locked(self) -> bool:
        # like nginx's ngx_drain_connections: up to EVICT_BATCH of the oldest idle ones at
        # once, so the next arrivals find room without another scan
        idle = []
        for c in self._all.values():
            self._refresh(c)
            if c.phase == IDLE and not c.ended:
                idle.append(c)
        for c in heapq.nsmallest(EVICT_BATCH, idle, key=lambda c: c.since):
            self._end(c)
            self.evicted += 1
        return bool(idle)

    @staticmethod
    def _refresh(c: Conn) -> None:
        if c.probe is not None:
            got = c.probe()
            if got is not None:
                c.phase, c.since = got

    @staticmethod
    def _end(c: Conn) -> None:
        c.ended = True
        s = socket.socket(fileno=c.fd)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass                              # already gone
        finally:
            s.detach()

    def _reap(self) -> None:
        lim = self.limits
        limit = {IDLE: lim.keepalive_timeout, HEAD: lim.header_timeout,
                 BUSY: lim.send_timeout, LINGER: lim.linger_timeout}
        period = min(0.25, min(limit.values()) / 4)
        while not self._stop.wait(period):
            now = time.monotonic()
            with self._lock:
                for c in list(self._all.values()):
                    self._refresh(c)
                    if not c.ended and now - c.since > limit[c.phase]:
                        self._end(c)
                        self.timed_out += 1

    # -- accept trouble -------------------------------------------------------------------
    def accept_failed(self, err: int) -> bool:
        """An accept failed with `err`. True: retry. For a resource shortage (EMFILE, ...)
        idle connections were ended and the caller should back off (BACKOFF_S) first; one
        line on stderr per burst (at most one every LOG_EVERY_S). False: fatal."""
        if err in TRANSIENT_ERRNOS:
            return True
        if err not in RESOURCE_ERRNOS:
            return False
        self._trouble_count += 1
        now = time.monotonic()
        if now - self._trouble_logged > LOG_EVERY_S:
            more = (f", {self._trouble_count - 1} more since the last report"
                    if self._trouble_logged > 0 and self._trouble_count > 1 else "")
            print(f"sakura-uring {self.name}: accept: {errno.errorcode.get(err, err)} "
                  f"({os.strerror(err)}; {len(self._all)} connections open{more}); ending "
                  f"idle connections and backing off", file=sys.stderr, flush=True)
            self._trouble_logged = now
            self._trouble_count = 0
        self.evict()
        return True

    def end_all(self, wait: float = 0.0) -> None:
        """End every connection still open; wait up to `wait` s for them to be removed."""
        with self._lock:
            for c in list(self._all.values()):
                if not c.ended:
                    self._end(c)
        end = time.monotonic() + wait
        while self._all and time.monotonic() < end:
            time.sleep(0.01)

    def close(self) -> None:
        """Stop the reaper and end every connection still open (the threads model's
        connection threads then finish and close their sockets)."""
        self._stop.set()
        self._reaper.join(2)
        self.end_all()
