"""The dispatch tracer's own cost: the same workloads with and without it attached, side
by side in one process (rounds interleaved, median kept).

chains, inline    open -> read 4 KiB -> close as one linked chain, io_uring_enter per chain
chains, SQPOLL    the same, taken up by the SQPOLL thread
kernel handler    requests of 8 NOP steps pushed by a BPF handler (KernelRing.map)
fio               fio's io_uring engine, 4 KiB random reads from the page cache, QD 1 and
                  QD 32, traced as a child of this process; fio's own IOPS
other process     what every *untraced* process pays: ns per getppid() in a process the
                  tracer does not trace, while it traces another one (raw_syscalls runs
                  for every system call on the machine), follows that one's children, or
                  counts no system calls (--no-syscalls)
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
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
    times: dict[tuple, list] = {(w, t): [] for w in work for t in (False, True)}
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
    fio_rows = fio_cost(tmp_dir=tempfile.gettempdir(), rounds=rounds, log=log,
                        seconds=1 if args.quick else 2)
    sys_rows = syscall_cost(rounds=rounds, log=log, n=200_000 if args.quick else 1_000_000)
    rows = []
    for name, (_, events) in work.items():
        off, on = statistics.median(times[(name, False)]), statistics.median(times[(name, True)])
        rows.append(dict(workload=name, us_untraced=round(off, 2), us_traced=round(on, 2),
                         ratio=round(on / off, 3),
                         ns_per_request_event=round((on - off) * 1000 / events)))
    if args.json:
        print(json.dumps(dict(n=n, rounds=rounds, rows=rows, fio=fio_rows, syscalls=sys_rows)))
        return 0
    hdr = ("workload", "us/op untraced", "us/op traced", "traced / untraced",
           "ns added per io_uring request")
    print_rows(args, hdr, [(r["workload"], f"{r['us_untraced']:.2f}", f"{r['us_traced']:.2f}",
                            f"{r['ratio']:.2f}x", str(r["ns_per_request_event"])) for r in rows])
    print_rows(args, ("fio job", "IOPS untraced", "IOPS traced", "traced / untraced"),
               [(r["job"], str(r["iops_untraced"]), str(r["iops_traced"]), f"{r['ratio']:.2f}x")
                for r in fio_rows])
    print_rows(args, ("an untraced process, while the tracer", "ns per getppid()",
                      "vs no tracer"),
               [(r["case"], f"{r['ns']:.0f}", f"{r['ratio']:.2f}x") for r in sys_rows])
    return 0


def print_rows(args, hdr, rows) -> None:
    print()
    if args.markdown:
        print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
        for cells in rows:
            print("| " + " | ".join(cells) + " |")
        return
    width = [max(len(str(r[i])) for r in (hdr, *rows)) + 2 for i in range(len(hdr))]
    for cells in (hdr, *rows):
        print("".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in
                      enumerate(zip(cells, width))))


FIO_JOBS = {"QD 1": ["--iodepth=1"], "QD 32": ["--iodepth=32"]}


def fio_cost(tmp_dir: str, rounds: int, log, seconds: int) -> list[dict]:
    """fio's IOPS with and without the tracer, rounds interleaved (median kept)."""
    if shutil.which("fio") is None:
        log("  fio is not installed (make test/bench install it): no fio rows")
        return []
    data = os.path.join(tmp_dir, "sakura-trace-fio.data")
    with open(data, "wb") as f:
        f.write(os.urandom(64 << 20))
    iops: dict[tuple, list] = {(j, t): [] for j in FIO_JOBS for t in (False, True)}
    try:
        for rnd in range(rounds):
            for job, extra in FIO_JOBS.items():
                for traced in ((False, True) if rnd % 2 == 0 else (True, False)):
                    # fio is this process's child: a tracer of this process follows it
                    tracer = DispatchTracer() if traced else None
                    try:
                        out = subprocess.run(
                            ["fio", "--name=j", "--ioengine=io_uring", "--rw=randread",
                             "--bs=4k", f"--filename={data}", "--size=64M", "--time_based",
                             f"--runtime={seconds}", "--output-format=json", *extra],
                            capture_output=True, text=True, check=True)
                    finally:
                        if tracer:
                            seen = tracer.report().requests
                            tracer.close()
                    got = json.loads(out.stdout)["jobs"][0]["read"]
                    if traced and seen < got["total_ios"]:
                        raise RuntimeError(f"the tracer saw {seen} of fio's {got['total_ios']}")
                    iops[(job, traced)].append(got["iops"])
            log(f"  fio round {rnd + 1}/{rounds} done")
    finally:
        os.unlink(data)
    rows = []
    for job in FIO_JOBS:
        off, on = statistics.median(iops[(job, False)]), statistics.median(iops[(job, True)])
        rows.append(dict(job=f"randread 4 KiB, {job}", iops_untraced=round(off),
                         iops_traced=round(on), ratio=round(on / off, 3)))
    return rows


_GETPPID = ("import os, time\nn = {n}\nf = os.getppid\nt = time.perf_counter_ns()\n"
            "for _ in range(n): f()\nprint((time.perf_counter_ns() - t) / n)")


def syscall_cost(rounds: int, log, n: int) -> list[dict]:
    """ns per getppid() in a process nobody traces, under each tracer set-up."""
    lone = subprocess.Popen(["sleep", "600"])                        # traced, childless
    parent = subprocess.Popen(["sh", "-c", "sleep 600 & wait"])       # traced, with a child
    cases = {
        "is not attached": None,
        "traces another process": lambda: DispatchTracer(lone.pid, children=False),
        "follows another's children": lambda: DispatchTracer(parent.pid),
        "runs with --no-syscalls": lambda: DispatchTracer(lone.pid, syscalls=False),
    }
    ns: dict[str, list] = {c: [] for c in cases}
    code = _GETPPID.format(n=n)
    try:
        time.sleep(0.2)                                   # the sh has forked its sleep
        for rnd in range(rounds):
            order = list(cases) if rnd % 2 == 0 else list(reversed(cases))
            for case in order:
                make = cases[case]
                tracer = make() if make else None
                try:
                    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                         text=True, check=True)
                finally:
                    if tracer:
                        tracer.close()
                ns[case].append(float(out.stdout))
            log(f"  system-call round {rnd + 1}/{rounds} done")
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], capture_output=True)
        for p in (lone, parent):
            p.kill()
            p.wait()
    base = statistics.median(ns["is not attached"])
    return [dict(case=c, ns=round(statistics.median(v), 1),
                 ratio=round(statistics.median(v) / base, 3)) for c, v in ns.items()]
