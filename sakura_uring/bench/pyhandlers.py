"""`bench steps`, last table: each shipped handler that exists in C and in Python on its own
job, the two side by side (rounds interleaved, median kept): microseconds per request.

follow     a pointer file naming a 4 KiB file: open, read, close, open, read, close
copy       a 256 KiB file copied to another in 64 KiB chunks
sendfile   a 256 KiB file sent over a socketpair (a thread drains the other end)
steps      32 NOP steps
"""
from __future__ import annotations

import os
import socket
import statistics
import threading
import time

from ..kernel import KernelRing, handler_path
from ..kernel import handlers as py

NAMES = ("follow", "copy", "sendfile", "steps")
BODY = 256 * 1024


class _Jobs:
    """The files and sockets the jobs use, and one runner per (handler, ring)."""

    def __init__(self, tmp: str):
        target = os.path.join(tmp, "target")
        with open(target, "wb") as f:
            f.write(os.urandom(4096))
        self.ptr = os.path.join(tmp, "ptr")
        with open(self.ptr, "w") as f:
            f.write(target)
        self.src_path = os.path.join(tmp, "src")
        with open(self.src_path, "wb") as f:
            f.write(os.urandom(BODY))
        self.src = os.open(self.src_path, os.O_RDONLY)
        self.dst = os.open(os.path.join(tmp, "dst"), os.O_WRONLY | os.O_CREAT, 0o600)
        self.a, self.b = socket.socketpair()
        self.draining = True
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self) -> None:
        while self.draining:
            try:
                if not self.b.recv(1 << 20):
                    return
            except OSError:
                return

    def runner(self, name: str, kr: KernelRing):
        data = self.ptr.encode() + b"\0"
        want = {"follow": 4096, "copy": BODY, "sendfile": BODY, "steps": 32}[name]
        call = {"follow": lambda: kr.run(data=data, timeout=30),
                "copy": lambda: kr.run(self.src, self.dst, timeout=30),
                "sendfile": lambda: kr.run(self.src, self.a.fileno(), timeout=30),
                "steps": lambda: kr.run(32, 0, 0, timeout=30)}[name]

        def go(n: int) -> None:
            for _ in range(n):
                r = call()
                if r.result != want:
                    r.raise_for_error()
                    raise RuntimeError(f"{name} ({kr.name}): result {r.result}, not {want}")
        return go

    def close(self) -> None:
        self.draining = False
        self.a.close()
        self.drain.join(5)
        self.b.close()
        os.close(self.src)
        os.close(self.dst)


def measure(tmp: str, rounds: int, quick: bool, sq_cpu, idle_ms: int, log) -> dict:
    """{handler: (C us/request, Python us/request)}, medians over the rounds."""
    jobs = _Jobs(tmp)
    rings = {}
    times: dict = {}
    try:
        for name in NAMES:
            for lang, h in (("C", handler_path(name)), ("Python", getattr(py, name))):
                rings[(name, lang)] = KernelRing(h, sq_cpu=sq_cpu, sq_idle_ms=idle_ms)
        count = {"follow": 2000, "copy": 200, "sendfile": 200, "steps": 2000}
        for rnd in range(rounds):
            for (name, lang), kr in rings.items():
                go = jobs.runner(name, kr)
                n = count[name] // (5 if quick else 1)
                time.sleep(idle_ms * 2 / 1000)
                go(max(1, n // 10))                                   # warm up
                t0 = time.perf_counter()
                go(n)
                times.setdefault((name, lang), []).append((time.perf_counter() - t0) / n * 1e6)
            log(f"  handlers round {rnd + 1}/{rounds} done")
    finally:
        for kr in rings.values():
            kr.close()
        jobs.close()
    return {name: (statistics.median(times[(name, "C")]),
                   statistics.median(times[(name, "Python")])) for name in NAMES}


def table(res: dict, md: bool) -> str:
    hdr = ["handler", "C us/request", "Python us/request", "Python / C"]
    rows = [[n, f"{c:.2f}", f"{p:.2f}", f"{p / c:.3f}x"] for n, (c, p) in res.items()]
    if md:
        return "\n".join(["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)] +
                         ["| " + " | ".join(r) + " |" for r in rows])
    return "\n".join("  ".join(f"{c:>18}" for c in r) for r in [hdr] + rows)
