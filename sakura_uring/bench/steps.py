"""Cost per step of a chain of 1..32 steps, NOPs and 4 KiB reads, in three engines, side by
side in one process (rounds interleaved, median kept), with system calls per chain.

FlexSC model    each step is its own request; its result comes back to Python before the
                next step is submitted (SQPOLL ring)
link engine     the steps as one linked chain, prepared once (SQPOLL ring)
kernel handler  bpf/handlers/steps.c pushes each step from kernel context when the one
                before it completes (KernelRing, SQPOLL)
kernel handler (Python)
                the same handler written in Python (sakura_uring.kernel.handlers.steps),
                translated to C: its column against the C one is the translation's cost

All three run one chain at a time: the time per chain is its latency. The per-step cost of
an engine is the slope between the shortest and the longest chain, which removes the fixed
cost of starting a chain from Python. A last row runs one kernel-handler request of many
NOP steps (C and Python handler): the cost of a step with no Python at all. A last table
puts each shipped handler in C and in Python side by side on its own job (pyhandlers.py).
"""
from __future__ import annotations

from typing import Any

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from .. import Chain, Ring
from ..kernel import KernelRing, handler_path
from ..kernel import handlers as py_handlers
from . import pyhandlers

LENGTHS = (1, 2, 4, 8, 16, 32)
KINDS = ("nop", "read")
ENGINES = ("FlexSC model", "link engine", "kernel handler", "kernel handler (Python)")
KERNEL = ENGINES[2:]
IDLE_MS = 20


def _step(kind: str, fd: int) -> Chain:
    c = Chain()
    if kind == "nop":
        c.nop()
    else:
        c.read(fd, 4096, offset=0)
    return c


def _chain(kind: str, fd: int, length: int) -> Chain:
    c = Chain()
    for _ in range(length):
        if kind == "nop":
            c.nop()
        else:
            c.read(fd, 4096, offset=0)
    return c


def _runner(engine: str, kind: str, length: int, ring: Ring, krs: dict, fd: int):
    if engine == "FlexSC model":
        one = _step(kind, fd)
        run = ring.run

        def go(n):
            for _ in range(n):
                for _ in range(length):
                    run(one).raise_for_error()
    elif engine == "link engine":
        chain = _chain(kind, fd, length)
        run = ring.run

        def go(n):
            for _ in range(n):
                run(chain).raise_for_error()
    else:
        kind_arg = 0 if kind == "nop" else 1
        krun = krs[engine].run

        def go(n):
            for _ in range(n):
                r = krun(length, kind_arg, fd)
                if r.result != length:
                    r.raise_for_error()
                    raise RuntimeError(f"steps handler ran {r.result} of {length} steps")
    return go


def _counter():
    try:
        from ..trace import SyscallCounter
        return SyscallCounter(), None
    except Exception as exc:
        return None, str(exc)


def main(args) -> int:
    quick = args.quick
    rounds = 2 if quick else args.rounds
    steps_budget = 6_000 if quick else args.steps      # steps per cell and round
    two_cores = (os.cpu_count() or 1) >= 2
    if two_cores:        # the app on CPU 0, the SQPOLL threads on CPU 1
        os.sched_setaffinity(0, {0})
    sq_cpu = 1 if two_cores else None
    tmp = tempfile.mkdtemp(prefix="sakura-steps-")
    path = os.path.join(tmp, "f4k")
    with open(path, "wb") as f:
        f.write(os.urandom(4096))
    fd = os.open(path, os.O_RDONLY)
    counter, why = _counter()
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    log(f"steps per chain {LENGTHS}, NOP and 4 KiB read, {rounds} rounds of ~{steps_budget} "
        f"steps per cell, kernel {os.uname().release}; syscalls counted by "
        f"{'a bcc raw_syscalls tracepoint program' if counter else 'nothing: ' + why}")
    # short idle times: each engine's SQPOLL thread falls asleep before the other one runs
    # (both share CPU 1), see IDLE below
    ring = Ring(256, sqpoll=True, sq_cpu=sq_cpu, sq_idle_ms=IDLE_MS, buffers=64,
                buffer_size=4096)
    krs = {"kernel handler": KernelRing(handler_path("steps"), sq_cpu=sq_cpu, sq_idle_ms=IDLE_MS)}
    krs["kernel handler (Python)"] = KernelRing(py_handlers.steps, sq_cpu=sq_cpu,
                                                sq_idle_ms=IDLE_MS)
    cells = [(k, L, e) for k in KINDS for L in LENGTHS for e in ENGINES]
    times: dict[tuple, list] = {c: [] for c in cells}
    calls: dict[tuple, list] = {c: [] for c in cells}
    long_ns: dict[str, list] = {e: [] for e in KERNEL}
    try:
        for rnd in range(rounds):
            for kind, length, engine in cells:
                go = _runner(engine, kind, length, ring, krs, fd)
                time.sleep(IDLE_MS * 2 / 1000)     # the other engine's SQPOLL thread sleeps
                n = max(50, steps_budget // length)
                go(min(n, 100))                                   # warm up
                if counter:
                    counter.reset()
                t0 = time.perf_counter()
                go(n)
                el = time.perf_counter() - t0
                times[(kind, length, engine)].append(el / n * 1e6)
                if counter:
                    counter.stop()
                    calls[(kind, length, engine)].append(counter.total / n)
            long_n = 20_000 if quick else 200_000
            for e in KERNEL:
                time.sleep(IDLE_MS * 2 / 1000)
                t0 = time.perf_counter()
                r = krs[e].run(long_n, 0, fd, timeout=60)
                long_ns[e].append((time.perf_counter() - t0) / long_n * 1e9)
                assert r.result == long_n, r
            log(f"  round {rnd + 1}/{rounds} done; one request of {long_n} NOP steps: "
                + ", ".join(f"{e} {v[-1]:.0f} ns/step" for e, v in long_ns.items()))
        for kr in krs.values():
            kr.close()
        krs = {}
        per_handler = pyhandlers.measure(tmp, rounds, quick, sq_cpu, IDLE_MS, log)
    finally:
        for kr in krs.values():
            kr.close()
        ring.close()
        if counter:
            counter.close()
        os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)

    med = {c: statistics.median(v) for c, v in times.items()}
    sc: dict[tuple, Any] = {c: (statistics.median(v) if v else None) for c, v in calls.items()}
    rows = [dict(kind=k, steps=L, engine=e, us_per_chain=round(med[(k, L, e)], 2),
                 ns_per_step=round(med[(k, L, e)] * 1000 / L),
                 syscalls_per_chain=None if sc[(k, L, e)] is None else round(sc[(k, L, e)], 3))
            for k, L, e in cells]
    lo, hi = LENGTHS[0], LENGTHS[-1]
    slope = {(k, e): round((med[(k, hi, e)] - med[(k, lo, e)]) * 1000 / (hi - lo))
             for k in KINDS for e in ENGINES}
    long_step = {e: round(statistics.median(v)) for e, v in long_ns.items()}
    if args.json:
        print(json.dumps(dict(rounds=rounds, kernel=os.uname().release, rows=rows,
                              ns_per_added_step={f"{k}/{e}": v for (k, e), v in slope.items()},
                              kernel_long_chain_ns_per_nop=long_step["kernel handler"],
                              python_long_chain_ns_per_nop=long_step["kernel handler (Python)"],
                              handlers_us={n: dict(C=round(c, 2), Python=round(p, 2))
                                           for n, (c, p) in per_handler.items()})))
        return 0
    md = args.markdown
    for kind in KINDS:
        hdr = ["steps"] + [f"{e} us/chain (syscalls)" for e in ENGINES] + \
              ["FlexSC / kernel", "link / kernel", "Python / C handler"]
        print(f"\n{kind.upper()} steps" + (":" if not md else "\n"))
        if md:
            print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
        for L in LENGTHS:
            cellsr = [str(L)]
            for e in ENGINES:
                s = sc[(kind, L, e)]
                cellsr.append(f"{med[(kind, L, e)]:.2f} ({'n/a' if s is None else f'{s:.3f}'})")
            k_t = med[(kind, L, "kernel handler")]
            cellsr.append(f"{med[(kind, L, 'FlexSC model')] / k_t:.2f}x")
            cellsr.append(f"{med[(kind, L, 'link engine')] / k_t:.2f}x")
            cellsr.append(f"{med[(kind, L, 'kernel handler (Python)')] / k_t:.3f}x")
            print(("| " + " | ".join(cellsr) + " |") if md else
                  f"  {cellsr[0]:>3}  " + "  ".join(f"{c:>22}" for c in cellsr[1:]))
        added = ", ".join(f"{e} {slope[(kind, e)]} ns" for e in ENGINES)
        print(f"\ncost of one more {kind} step (slope {lo}->{hi} steps): {added}")
    c_ns, py_ns = long_step["kernel handler"], long_step["kernel handler (Python)"]
    print(f"\nkernel handler, one request of {200_000 if not quick else 20_000} NOP steps: "
          f"C {c_ns} ns, Python {py_ns} ns per step (no Python between steps; "
          f"Python / C {py_ns / c_ns:.3f}x)")
    print("\nEach shipped handler on its own job, C and Python (us per request):" +
          ("\n" if md else ""))
    print(pyhandlers.table(per_handler, md))
    return 0
