"""open -> read(4 KiB) -> close in each execution model, side by side in one process.

(a) plain        os.open / os.read / os.close: three system calls
(b) flexsc       the FlexSC model: one io_uring request per system call, each result back
                 in Python before the next request is made (inline, and with SQPOLL)
(c) chain        Sakura link: the three calls as one linked chain, the fd flowing through
                 a direct slot; one chain at a time (run) and 32 in flight (imap)
(c') prepared    the same chain built once and run N times
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

from .. import Chain, Ring


def _cat_chain(path: bytes) -> Chain:
    c = Chain()
    f = c.openat(path)
    c.read(f, 4096)
    c.close(f)
    return c


def model_plain(ring, path, n):
    o, r, c, flags = os.open, os.read, os.close, os.O_RDONLY
    for _ in range(n):
        fd = o(path, flags)
        r(fd, 4096)
        c(fd)


def model_flexsc(ring, path, n):
    run = ring.run
    for _ in range(n):
        c = Chain()
        h = c.openat(path, direct=False)
        fd = run(c)[h].res
        c = Chain()
        c.read(fd, 4096)
        run(c).data(0)
        c = Chain()
        c.close(fd)
        run(c)


def model_chain_run(ring, path, n):
    run = ring.run
    for _ in range(n):
        run(_cat_chain(path)).data(1)


def model_chain_imap(ring, path, n):
    for r in ring.imap((_cat_chain(path) for _ in range(n)), window=32):
        r.data(1)


def model_prepared_imap(ring, path, n):
    c = _cat_chain(path)
    for r in ring.imap((c for _ in range(n)), window=32):
        r.data(1)


MODELS = [
    # name, function, ring kind (None: no ring)
    ("(a) plain os.open/read/close", model_plain, None),
    ("(b) FlexSC model, inline", model_flexsc, "inline"),
    ("(b) FlexSC model, SQPOLL", model_flexsc, "sqpoll"),
    ("(c) chain, run(), inline", model_chain_run, "inline"),
    ("(c) chain, run(), SQPOLL", model_chain_run, "sqpoll"),
    ("(c) chain, 32 in flight, inline", model_chain_imap, "inline"),
    ("(c) chain, 32 in flight, SQPOLL", model_chain_imap, "sqpoll"),
    ("(c') prepared chain, 32 in flight, SQPOLL", model_prepared_imap, "sqpoll"),
]


def _counter():
    try:
        from ..trace import SyscallCounter
        return SyscallCounter(), None
    except Exception as exc:   # no root, no bcc, no headers: time is still measured
        return None, str(exc)


def main(args) -> int:
    n = 3000 if args.quick else args.n
    rounds = 2 if args.quick else args.rounds
    two_cores = (os.cpu_count() or 1) >= 2
    if two_cores:   # keep the SQPOLL thread (CPU 1) off the application's core (CPU 0)
        os.sched_setaffinity(0, {0})
    tmp = tempfile.mkdtemp(prefix="sakura-bench-")
    path = os.path.join(tmp, "f4k").encode()
    with open(path, "wb") as f:
        f.write(os.urandom(4096))
    counter, why = _counter()
    quiet = args.json
    if not quiet:
        print(f"open -> read 4 KiB -> close, n={n} per model, {rounds} rounds, kernel "
              f"{os.uname().release}; syscalls counted by "
              f"{'a bcc raw_syscalls tracepoint program' if counter else 'nothing: ' + why}",
              file=sys.stderr)
    rings = {"inline": Ring(256), "sqpoll": Ring(256, sqpoll=True, sq_cpu=1 if two_cores else None)}
    times: dict[str, list] = {m[0]: [] for m in MODELS}
    calls: dict[str, list] = {m[0]: [] for m in MODELS}
    enters: dict[str, list] = {m[0]: [] for m in MODELS}
    try:
        for rnd in range(rounds):
            for name, fn, kind in MODELS:
                ring = rings.get(kind) if kind else None
                fn(ring, path, min(n, 500))                 # warm up
                if counter:
                    counter.reset()
                t0 = time.perf_counter()
                fn(ring, path, n)
                el = time.perf_counter() - t0
                times[name].append(el / n * 1e6)
                if counter:
                    counter.stop()
                    calls[name].append(counter.total / n)
                    enters[name].append(counter.counts.get(426, 0) / n)
                if not quiet:
                    print(f"  round {rnd + 1}/{rounds} {name:<44} {el / n * 1e6:7.2f} us/chain",
                          file=sys.stderr)
    finally:
        for each in rings.values():
            each.close()
        if counter:
            counter.close()
        os.unlink(path)
        os.rmdir(tmp)
    base = statistics.median(times[MODELS[0][0]])
    rows = []
    for name, _, _ in MODELS:
        t = statistics.median(times[name])
        rows.append(dict(model=name, us_per_chain=round(t, 2),
                         syscalls_per_chain=round(statistics.median(calls[name]), 3) if calls[name] else None,
                         io_uring_enter_per_chain=round(statistics.median(enters[name]), 3) if enters[name] else None,
                         speedup_vs_plain=round(base / t, 2)))
    if args.json:
        print(json.dumps(dict(n=n, rounds=rounds, kernel=os.uname().release, rows=rows)))
        return 0
    hdr = ("model", "us/chain", "syscalls/chain", "io_uring_enter/chain", "speed-up vs (a)")
    if args.markdown:
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
    else:
        print(f"{hdr[0]:<44} {hdr[1]:>9} {hdr[2]:>15} {hdr[3]:>21} {hdr[4]:>16}")
    for r in rows:
        sc = "n/a" if r["syscalls_per_chain"] is None else f"{r['syscalls_per_chain']:.3f}"
        en = "n/a" if r["io_uring_enter_per_chain"] is None else f"{r['io_uring_enter_per_chain']:.3f}"
        cells = (r["model"], f"{r['us_per_chain']:.2f}", sc, en, f"{r['speedup_vs_plain']:.2f}x")
        if args.markdown:
            print("| " + " | ".join(cells) + " |")
        else:
            print(f"{cells[0]:<44} {cells[1]:>9} {cells[2]:>15} {cells[3]:>21} {cells[4]:>16}")
    return 0
