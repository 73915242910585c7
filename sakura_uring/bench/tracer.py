"""The dispatch tracer's own cost: the same workloads with and without it attached, side
by side in one process (rounds interleaved, median kept).

chains, inline    open -> read 4 KiB -> close as one linked chain, io_uring_enter per chain
chains, SQPOLL    the same, taken up by the SQPOLL thread
kernel handler    requests of 8 NOP steps pushed by a BPF handler (KernelRing.map)
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

from .. import Ring
from ..kernel import KernelRing, handler_path
from ..trace import DispatchTracer
from .chains import _cat_chain


def main(args) -> int:
    n = 2000 if args.quick else args.n
    rounds = 2 if args.quick else args.rounds
    two_cores = (os.cpu_count() or 1) >= 2
    if two_cores:        # the app on CPU 0, the SQPOLL threads (which inherit it) on CPU 1
        os.sched_setaffinity(0, {0})
    tmp = tempfile.mkdtemp(prefix="sakura-trace-")
    path = os.path.join(tmp, "f4k").encode()
    with open(path, "wb") as f:
        f.write(os.urandom(4096))
    sq_cpu = 1 if two_cores else None
    inline, sq = Ring(64), Ring(64, sqpoll=True, sq_cpu=sq_cpu)
    kr = KernelRing(handler_path("steps"), sq_cpu=sq_cpu)
    chain = _cat_chain(path)
    work = {
        "chains, inline": (lambda k: [inline.run(chain) for _ in range(k)], 3),
        "chains, SQPOLL": (lambda k: [sq.run(chain) for _ in range(k)], 3),
        "kernel handler, 8 NOPs": (lambda k: kr.map([(8, 0, 0)] * k), 9),
    }
    times = {(w, t): [] for w in work for t in (False, True)}
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    log(f"tracer overhead: n={n} per workload, {rounds} rounds, kernel {os.uname().release}")
    try:
        for rnd in range(rounds):
            for name, (fn, _) in work.items():
                # alternate which goes first: the second run of a pair tends to be warmer
                for traced in ((False, True) if rnd % 2 == 0 else (True, False)):
                    tracer = DispatchTracer() if traced else None
                    fn(min(n, 200))
                    t0 = time.perf_counter()
                    fn(n)
                    times[(name, traced)].append((time.perf_counter() - t0) / n * 1e6)
                    if tracer:
                        tracer.close()
            log(f"  round {rnd + 1}/{rounds} done")
    finally:
        kr.close()
        inline.close()
        sq.close()
        os.unlink(path)
        os.rmdir(tmp)
    rows = []
    for name, (_, events) in work.items():
        off, on = statistics.median(times[(name, False)]), statistics.median(times[(name, True)])
        rows.append(dict(workload=name, us_untraced=round(off, 2), us_traced=round(on, 2),
                         ratio=round(on / off, 3),
                         ns_per_request_event=round((on - off) * 1000 / events)))
    if args.json:
        print(json.dumps(dict(n=n, rounds=rounds, rows=rows)))
        return 0
    hdr = ("workload", "us/op untraced", "us/op traced", "traced / untraced",
           "ns added per io_uring request")
    if args.markdown:
        print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for r in rows:
        cells = (r["workload"], f"{r['us_untraced']:.2f}", f"{r['us_traced']:.2f}",
                 f"{r['ratio']:.2f}x", str(r["ns_per_request_event"]))
        print(("| " + " | ".join(cells) + " |") if args.markdown else
              f"{cells[0]:<26}{cells[1]:>15}{cells[2]:>14}{cells[3]:>19}{cells[4]:>22}")
    return 0
