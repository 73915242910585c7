"""dispatch: how the kernel dispatches each io_uring request of a process (bcc).

USAGE: sakura-uring trace [-h] [-p PID | -- COMMAND ...] [-i INTERVAL] [-d SECONDS] [--json]

Per opcode: who submitted each request (an application thread or the SQPOLL thread,
iou-sqp-*), how many were punted to an io-wq worker (iou-wrk-*), where each completed
(inline in an application thread, inline in the SQPOLL thread, in an io-wq worker, through
task_work, or after waiting in poll), the chains it broke, and a log2 histogram of the time
from submission to completion. For the process: system calls (io_uring_enter apart) per
completed request -- the interrupts Sakura Call exists to remove --, chains started,
completed and broken, CQ overflows. Tracepoints only (io_uring:*, raw_syscalls:sys_enter).

EXAMPLES:
    sakura-uring trace -p 1234              # trace PID 1234 until Ctrl-C, then summarize
    sakura-uring trace -p 1234 -i 1         # a table every second
    sakura-uring trace -d 5 -- python3 app.py   # run a command, trace it for at most 5 s
    sakura-uring trace -p 1234 -i 1 --json  # one JSON line per interval and at the end

API:
    from sakura_uring.trace import DispatchTracer
    with DispatchTracer() as tr:            # this process (or DispatchTracer(pid))
        work()
    report = tr.report()                    # counts, histograms, syscalls per request
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import fork as _fork
from .. import ops as _ops
from ..errors import InheritedAfterFork
from ..probe import bpf_atomic_fetch
from .bccenv import TracingUnavailable, load_bcc
from .syscount import NAMES

PROGRAM = Path(__file__).resolve().parents[2] / "bpf" / "tracer.c"
# where the tracepoint formats are read from (a test points this at an edited copy)
EVENT_DIRS = [Path("/sys/kernel/tracing/events/io_uring"),
              Path("/sys/kernel/debug/tracing/events/io_uring")]
OPS = 256
COLUMNS = ("sub_app", "sub_sqpoll", "punted", "done_app", "done_sqpoll", "done_iowq",
           "done_task_work", "done_poll", "done", "broke")
TOTALS = ("syscalls", "io_uring_enter", "cq_overflows", "chains", "chains_done",
          "chains_broken", "linked", "unmatched")
# events that only add columns: name -> macro
OPTIONAL = {"io_uring_queue_async_work": "HAVE_QUEUE_ASYNC", "io_uring_poll_arm": "HAVE_POLL_ARM",
            "io_uring_task_add": "HAVE_TASK_ADD", "io_uring_link": "HAVE_LINK",
            "io_uring_fail_link": "HAVE_FAIL_LINK", "io_uring_cqe_overflow": "HAVE_CQE_OVERFLOW"}
# the fields each optional event's probe reads besides the request's name
NEEDS = {"io_uring_queue_async_work": {"ctx"}, "io_uring_poll_arm": {"ctx"},
         "io_uring_task_add": {"ctx"}, "io_uring_link": {"ctx", "req", "target_req"},
         "io_uring_fail_link": {"ctx", "link", "opcode"},
         "io_uring_cqe_overflow": {"ctx", "user_data"}}
# events whose probe names a request (and so must name it as the submit event does)
KEYED = {"io_uring_queue_async_work", "io_uring_poll_arm", "io_uring_task_add",
         "io_uring_link", "io_uring_fail_link"}


def opname(opcode: int) -> str:
    if opcode == OPS - 1:
        return "?"                       # a completion whose submission was not seen
    names = _ops.KERNEL_OP_NAMES
    return names[opcode] if opcode < len(names) else f"op{opcode}"


def _format(event: str) -> str | None:
    base = next((d for d in EVENT_DIRS if d.is_dir()), None)
    try:
        return (base / event / "format").read_text() if base else None
    except OSError:
        return None


def _fields(event: str) -> set:
    """The field names of an event's format (empty when the event doesn't exist)."""
    return set(re.findall(r"field:[^;]*?(\w+)(?:\[\w*\])?;", _format(event) or ""))


def kernel_macros() -> tuple[dict, list[str]]:
    """The program's macros for this kernel's tracepoints, and what they leave out.
    Requests are named by address (`req`) where the submit event has it (>= 5.19), else
    by user_data ^ ctx, and every event must name them the same way to be used."""
    macros, missing = {}, []
    submit = "io_uring_submit_req" if _format("io_uring_submit_req") else "io_uring_submit_sqe"
    sub = _fields(submit)
    if not sub or not _fields("io_uring_complete"):
        raise TracingUnavailable("this kernel has no io_uring submit/complete tracepoints "
                                 "(CONFIG_IO_URING with tracepoints is needed)")
    by_req = "req" in sub

    def key(fields: set) -> str | None:
        if by_req and "req" in fields:
            return "((u64)args->req)"
        if not by_req and {"user_data", "ctx"} <= fields:
            return "(args->user_data ^ (u64)args->ctx)"
        return None

    macros["SUBMIT_TP"] = submit
    macros["KEY_SUBMIT"] = key(sub)
    if "sq_thread" in sub:
        macros["HAVE_SQ_THREAD"] = 1
    if by_req and "req" in _fields("io_uring_complete"):
        macros["HAVE_COMPLETE_REQ"] = 1
    for event, macro in OPTIONAL.items():
        fields = _fields(event)
        need = NEEDS.get(event, set())
        k = key(fields)
        if not fields:
            missing.append(event)
        elif not need <= fields or (event in KEYED and k is None):
            lacking = ", ".join(sorted(need - fields))
            missing.append(f"{event} (no {lacking})" if lacking else
                           f"{event} (names requests unlike the submit event)")
        else:
            macros[macro] = 1
            if event in KEYED:
                macros["KEY_" + macro[len("HAVE_"):]] = k
    if "HAVE_LINK" in macros and not bpf_atomic_fetch():
        # chain accounting counts members down with atomics that return a value
        del macros["HAVE_LINK"], macros["KEY_LINK"]
        missing.append("io_uring_link (chain columns need BPF atomics that return a value, "
                       "Linux 5.12)")
    if "HAVE_FAIL_LINK" in macros and "HAVE_LINK" not in macros:
        del macros["HAVE_FAIL_LINK"], macros["KEY_FAIL_LINK"]   # found through links
        missing.append("io_uring_fail_link (needs io_uring_link)")
    return macros, missing


@dataclass
class OpStats:
    name: str
    counts: dict = field(default_factory=dict)     # column -> count
    hist: dict = field(default_factory=dict)       # log2(us) slot -> count

    def percentile(self, p: float) -> float | None:
        """Upper bound (us) of the log2 bucket holding the p-th percentile: bucket s holds
        latencies from 2**s to 2**(s+1) - 1 us (bucket 0: 0 and 1)."""
        n = sum(self.hist.values())
        if not n:
            return None
        seen = 0
        for slot in sorted(self.hist):
            seen += self.hist[slot]
            if seen >= p * n:
                return float((1 << (slot + 1)) - 1)
        return None


@dataclass
class Report:
    pid: int
    seconds: float
    ops: dict                                       # name -> OpStats
    totals: dict
    missing: list
    syscalls: dict = field(default_factory=dict)    # name -> count

    @property
    def requests(self) -> int:
        return sum(o.counts.get("done", 0) for o in self.ops.values())

    @property
    def syscalls_per_request(self) -> float | None:
        return self.totals["syscalls"] / self.requests if self.requests else None

    def to_json(self) -> dict:
        return dict(pid=self.pid, seconds=round(self.seconds, 3), requests=self.requests,
                    syscalls_per_request=self.syscalls_per_request, totals=self.totals,
                    ops={n: dict(o.counts, p50_us=o.percentile(0.5), p99_us=o.percentile(0.99),
                                 hist_log2_us={str(k): v for k, v in sorted(o.hist.items())})
                         for n, o in self.ops.items()},
                    syscalls=self.syscalls, missing=self.missing)

    def table(self) -> str:
        head = (f"{'OP':<13}{'SUB:APP':>8}{'SUB:SQP':>8}{'PUNTED':>7} | {'APP':>7}{'SQPOLL':>7}"
                f"{'IO-WQ':>7}{'TWORK':>7}{'POLL':>7} | {'DONE':>8}{'BROKE':>6}{'p50us':>7}{'p99us':>7}")
        lines = [f"{'':<36}| completed where{'':<19}|", head]
        for name in sorted(self.ops, key=lambda n: -self.ops[n].counts.get("done", 0)):
            o = self.ops[name]
            c = o.counts.get
            p50, p99 = o.percentile(0.5), o.percentile(0.99)
            lines.append(
                f"{name:<13}{c('sub_app', 0):>8}{c('sub_sqpoll', 0):>8}{c('punted', 0):>7} | "
                f"{c('done_app', 0):>7}{c('done_sqpoll', 0):>7}{c('done_iowq', 0):>7}"
                f"{c('done_task_work', 0):>7}{c('done_poll', 0):>7} | {c('done', 0):>8}"
                f"{c('broke', 0):>6}{'-' if p50 is None else int(p50):>7}"
                f"{'-' if p99 is None else int(p99):>7}")
        t = self.totals
        spr = self.syscalls_per_request
        lines.append(
            f"requests {self.requests}, system calls {t['syscalls']} "
            f"(io_uring_enter {t['io_uring_enter']}, other {t['syscalls'] - t['io_uring_enter']}), "
            f"per request {'-' if spr is None else f'{spr:.3f}'}; chains started {t['chains']}, "
            f"completed {t['chains_done']}, broken {t['chains_broken']}; "
            f"CQ overflows {t['cq_overflows']}")
        other = sorted(((n, c) for n, c in self.syscalls.items() if n != "io_uring_enter"),
                       key=lambda x: -x[1])
        if other:
            lines.append("other system calls: " + ", ".join(f"{n} {c}" for n, c in other[:5]))
        if self.missing:
            lines.append("not on this kernel: " + "; ".join(self.missing))
        return "\n".join(lines)

    def histograms(self) -> str:
        """Per-opcode log2 histograms of submit -> complete, like bcc's biolatency."""
        out = []
        for name, o in sorted(self.ops.items()):
            if not o.hist:
                continue
            out.append(f"\nop = {name}\n     usecs{'':<15}: count     distribution")
            top = max(o.hist.values())
            for slot in range(0, max(o.hist) + 1):
                lo, hi = (0 if slot == 0 else 1 << slot), (1 << (slot + 1)) - 1
                n = o.hist.get(slot, 0)
                bar = "*" * int(40 * n / top) if top else ""
                out.append(f"{lo:>10} -> {hi:<10}: {n:<9} |{bar:<40}|")
        return "\n".join(out)


class DispatchTracer:
    """Traces process `pid` (default: this one) while active; report() at any time."""

    def __init__(self, pid: int | None = None):
        self._bpf = None
        self.final: Report | None = None
        self.pid = os.getpid() if pid is None else pid
        if not Path(f"/proc/{self.pid}").exists():
            raise ValueError(f"no process {self.pid}")
        bcc = load_bcc()
        macros, self.missing = kernel_macros()
        macros["TGID"] = self.pid
        if self.pid == os.getpid():
            macros["SKIP_BPF_SYSCALLS"] = 1
        # bcc reads a TRACEPOINT_PROBE's event name before the preprocessor runs: the
        # submit event's name goes in by substitution, like bcc's tools do
        submit = macros.pop("SUBMIT_TP")
        pre = "".join(f"#define {k} {v}\n" for k, v in macros.items())
        text = pre + PROGRAM.read_text().replace("SUBMIT_TP", submit)
        try:
            self._bpf = bcc.BPF(text=text.encode())
        except Exception as exc:
            raise TracingUnavailable(f"bcc could not load the dispatch tracer: {exc}") from exc
        self._creator = os.getpid()
        self._inherited = False
        _fork.track(self)
        self._base = self.snapshot()

    def _after_fork_in_child(self) -> None:
        """In a fork() child (fork.py): the perf events and counters are the parent's."""
        self._inherited = True
        if self._bpf is not None:
            _fork.forget_bpf(self._bpf)

    def snapshot(self) -> tuple:
        """The counters now, for report(since=...)."""
        return self._raw() + (time.monotonic(),)

    def _raw(self) -> tuple[dict, dict, dict]:
        b = self._bpf
        if self._inherited:
            raise InheritedAfterFork("DispatchTracer", self._creator)
        if b is None:
            raise RuntimeError("this DispatchTracer is closed (its last report is .final)")
        counts = {k.value: v.value for k, v in b[b"counts"].items() if v.value}
        totals = {k.value: v.value for k, v in b[b"totals"].items()}
        totals.update({("nr", k.value): v.value for k, v in b[b"sysnr"].items() if v.value})
        hist = {(k.opcode, k.slot): v.value for k, v in b[b"lat"].items() if v.value}
        return counts, totals, hist

    def reset(self) -> None:
        self._base = self.snapshot()

    def report(self, since: tuple | None = None) -> Report:
        """What happened since `since` (a snapshot()), by default since reset()."""
        counts, totals, hist = self._raw()
        bc, bt, bh, t0 = self._base if since is None else since
        ops: dict[str, OpStats] = {}
        for idx, n in counts.items():
            n -= bc.get(idx, 0)
            if n <= 0:
                continue
            opcode, col = divmod(idx, len(COLUMNS))
            o = ops.setdefault(opname(opcode), OpStats(opname(opcode)))
            o.counts[COLUMNS[col]] = n
        for (opcode, slot), n in hist.items():
            n -= bh.get((opcode, slot), 0)
            if n > 0:
                ops.setdefault(opname(opcode), OpStats(opname(opcode))).hist[slot] = n
        tot = {name: totals.get(i, 0) - bt.get(i, 0) for i, name in enumerate(TOTALS)}
        calls = {NAMES.get(k[1], f"sys_{k[1]}"): v - bt.get(k, 0) for k, v in totals.items()
                 if isinstance(k, tuple) and v - bt.get(k, 0) > 0}
        return Report(self.pid, time.monotonic() - t0, ops, tot, self.missing, calls)

    def close(self) -> None:
        if self._bpf is not None:
            if not getattr(self, "_inherited", False):
                self._bpf.cleanup()
            self._bpf = None

    def __enter__(self) -> "DispatchTracer":
        self.reset()
        return self

    def __exit__(self, *exc) -> None:
        self.final = self.report()
        self.close()


class _Held:
    """A command started but held before exec, so that tracing begins before its first
    request: the child waits on a pipe, then execs."""

    def __init__(self, cmd: list[str]):
        r, self._go = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:                   # child
            try:
                os.close(self._go)
                os.read(r, 1)
                os.execvp(cmd[0], cmd)
            finally:
                os._exit(127)
        os.close(r)
        self.status = None

    def release(self) -> None:
        os.write(self._go, b"x")
        os.close(self._go)

    def poll(self) -> int | None:
        if self.status is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(st)
        return self.status

    def end(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="sakura-uring trace", description=__doc__.split("\n\n")[1],
                                 epilog=__doc__[__doc__.index("EXAMPLES:"):__doc__.index("API:")],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-p", "--pid", type=int, help="trace this process")
    ap.add_argument("-i", "--interval", type=float, help="print a table every INTERVAL seconds")
    ap.add_argument("-d", "--duration", type=float, help="stop after SECONDS")
    ap.add_argument("--json", action="store_true", help="JSON lines instead of tables")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...: run and trace it")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if bool(cmd) == (args.pid is not None):
        ap.error("give either -p PID or -- COMMAND ...")
    from ..probe import can_trace
    if os.geteuid() != 0 or not can_trace():
        print("sakura-uring trace: tracing needs root with CAP_BPF and CAP_PERFMON (or "
              "CAP_SYS_ADMIN); run it as root", file=sys.stderr)
        return 1
    proc = _Held(cmd) if cmd else None
    pid = proc.pid if proc else args.pid
    try:
        tracer = DispatchTracer(pid)
    except (TracingUnavailable, ValueError, OSError) as exc:
        print(f"sakura-uring trace: {exc}", file=sys.stderr)
        if proc:
            proc.end()
        return 1
    if proc:
        proc.release()
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *a: stop.update(now=True))
    if not args.json:
        print(f"Tracing io_uring dispatch of PID {pid}"
              + (f" for {args.duration} s" if args.duration else "") + "... Ctrl-C to end.",
              file=sys.stderr)
    start = time.monotonic()
    whole = last = tracer.snapshot()
    next_tick = start + (args.interval or 3600)
    while not stop["now"]:
        time.sleep(0.05)
        now = time.monotonic()
        if args.duration and now - start >= args.duration:
            break
        if proc is not None and proc.poll() is not None:
            break
        if proc is None and not Path(f"/proc/{pid}").exists():
            break
        if args.interval and now >= next_tick:
            rep = tracer.report(since=last)
            last = tracer.snapshot()
            print(json.dumps(dict(rep.to_json(), kind="interval")) if args.json else
                  f"\n{time.strftime('%H:%M:%S')}\n{rep.table()}", flush=True)
            next_tick += args.interval
    rep = tracer.report(since=whole)
    tracer.close()
    if args.json:
        print(json.dumps(dict(rep.to_json(), kind="summary")))
    else:
        print(f"\nSummary, {rep.seconds:.1f} s:\n{rep.table()}{rep.histograms()}")
    if proc is not None:
        proc.end()
    return 0


if __name__ == "__main__":
    sys.exit(main())
