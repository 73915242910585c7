"""DispatchTracer: how the kernel dispatches each io_uring request of a program (bcc).

Loads bpf/tracer.c, adapted to this kernel's tracepoint formats, and reads its maps into
a Report (report.py). The command line is command.py (`sakura-uring trace`).

    from sakura_uring.trace import DispatchTracer
    with DispatchTracer() as tr:            # this process and the ones it starts
        work()
    report = tr.final                       # counts, histograms, syscalls per request
"""
from __future__ import annotations

import ctypes as ct
import os
import re
import time
from pathlib import Path
from typing import Any

from .. import fork as _fork
from .. import ops as _ops
from ..errors import InheritedAfterFork
from ..bpfenv import (TracingUnavailable, bpf_atomic_fetch, load_bcc, tracepoint_fields,
                      tracepoint_format)
from ..resources import bpf_file
from .report import COLUMNS, TOTALS, OpStats, ProcStats, Report
from .syscount import syscall_name

OPS = 256
ENTER = 426                              # io_uring_enter's number
CTL_FOLLOWING = 0                        # ctl[] in the program
LAT_SLOTS = 32                           # lat[] in the program: [opcode][log2 slot]
# events that only add columns: name -> macro
OPTIONAL = {"io_uring_queue_async_work": "HAVE_QUEUE_ASYNC", "io_uring_poll_arm": "HAVE_POLL_ARM",
            "io_uring_link": "HAVE_LINK", "io_uring_fail_link": "HAVE_FAIL_LINK",
            "io_uring_cqe_overflow": "HAVE_CQE_OVERFLOW", "io_uring_create": "HAVE_CREATE"}
# the fields each optional event's probe reads besides the request's name
NEEDS = {"io_uring_queue_async_work": {"ctx"}, "io_uring_poll_arm": {"ctx"},
         "io_uring_link": {"ctx", "req", "target_req"},
         "io_uring_fail_link": {"ctx", "req", "link", "opcode"},
         "io_uring_cqe_overflow": {"ctx", "user_data", "res", "cflags"},
         "io_uring_create": {"ctx"}}
# events whose probe names a request (and so must name it as the submit event does)
KEYED = {"io_uring_queue_async_work", "io_uring_poll_arm", "io_uring_link",
         "io_uring_fail_link"}


def opname(opcode: int) -> str:
    if opcode == OPS - 1:
        return "?"                       # a completion whose submission was not seen
    names = _ops.KERNEL_OP_NAMES
    return names[opcode] if opcode < len(names) else f"op{opcode}"


def _format(event: str) -> str | None:
    return tracepoint_format("io_uring", event)


def _fields(event: str) -> set:
    return tracepoint_fields("io_uring", event)


def kernel_macros() -> tuple[dict, list[str]]:
    """The program's macros for this kernel's tracepoints, and what they leave out.
    Requests are named by address (`req`) where the submit event has it (>= 5.19), else
    by user_data ^ ctx, and every event must name them the same way to be used."""
    macros: dict[str, object] = {}
    missing: list[str] = []
    submit = "io_uring_submit_req" if _format("io_uring_submit_req") else "io_uring_submit_sqe"
    sub = _fields(submit)
    complete = _fields("io_uring_complete")
    if not sub or not complete:
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
    if by_req and "req" in complete:
        macros["HAVE_COMPLETE_REQ"] = 1
    if "cflags" in complete:
        macros["HAVE_CFLAGS"] = 1
    else:
        missing.append("io_uring_complete's cflags (a multishot request's CQEs after the "
                       "first count as unmatched)")
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
        # chain accounting numbers chains and counts members down with atomics that
        # return a value
        del macros["HAVE_LINK"], macros["KEY_LINK"]
        missing.append("io_uring_link (chain columns need BPF atomics that return a value, "
                       "Linux 5.12)")
    if "HAVE_FAIL_LINK" in macros and "HAVE_LINK" not in macros:
        del macros["HAVE_FAIL_LINK"], macros["KEY_FAIL_LINK"]   # found through links
        missing.append("io_uring_fail_link (needs io_uring_link)")
    return macros, missing


def process_of(pid: int) -> int:
    """The process (tgid) that thread or process `pid` belongs to."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        raise ValueError(f"no process or thread {pid}") from None
    m = re.search(r"^Tgid:\s*(\d+)", status, re.M)
    if m is None:
        raise ValueError(f"/proc/{pid}/status names no Tgid")
    return int(m.group(1))


def descendants(pid: int) -> list[int]:
    """The processes `pid` started that still run, and theirs (from /proc)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _items(table) -> list:
    """A map's (key, value) pairs, in batches where the kernel has them (5.6: a tenth of
    the time of one lookup per key, which for the 8,192 latency buckets is 40 ms)."""
    def plain(x):                        # the batch gives ints, items() ctypes scalars
        return x.value if isinstance(x, (ct.c_uint32, ct.c_int32, ct.c_uint64, ct.c_int64)) else x
    try:
        pairs = list(table.items_lookup_batch())
    except Exception:                    # no batch operations for this map type here
        pairs = table.items()
    return [(plain(k), plain(v)) for k, v in pairs]


def _comm(pid: int, stored: bytes) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return stored.split(b"\0", 1)[0].decode(errors="replace") or "?"


class DispatchTracer:
    """Traces process `pid` (default: this one; a thread id means its process) while
    active, and with `children` every process it forks from then on (and those already
    started); `everything=True` traces the whole system instead. `syscalls=False` leaves
    raw_syscalls:sys_enter unattached, so other processes' system calls pay nothing."""

    def __init__(self, pid: int | None = None, *, children: bool = True,
                 everything: bool = False, syscalls: bool = True):
        self._bpf: Any = None
        self.final: Report | None = None
        if everything and pid is not None:
            raise ValueError("give a pid or everything=True, not both")
        for name, v in (("children", children), ("everything", everything),
                        ("syscalls", syscalls)):
            if not isinstance(v, bool):
                raise TypeError(f"{name} must be True or False, not {v!r}")
        self.pid = 0 if everything else process_of(os.getpid() if pid is None else pid)
        self.everything = everything
        bcc = load_bcc()
        syscall_name(0)     # bcc.syscall runs `ausyscall` once, at import: not while traced
        self._comms: dict[int, str] = {}
        macros, self.missing = kernel_macros()
        macros["TGID"] = self.pid
        if everything:
            macros["TRACE_ALL"] = 1
        elif children:
            macros["FOLLOW"] = 1
        if syscalls:
            macros["COUNT_SYSCALLS"] = 1
        if self.pid == os.getpid():
            macros["SKIP_BPF_SYSCALLS"] = 1
        self._bitmap = children and not everything and bpf_atomic_fetch()
        if self._bitmap:
            macros["HAVE_ATOMIC_OR"] = 1
        # bcc reads a TRACEPOINT_PROBE's event name before the preprocessor runs: the
        # submit event's name goes in by substitution, like bcc's tools do
        submit = macros.pop("SUBMIT_TP")
        pre = "".join(f"#define {k} {v}\n" for k, v in macros.items())
        text = pre + bpf_file("tracer.c").read_text().replace("SUBMIT_TP", submit)
        try:
            self._bpf = bcc.BPF(text=text.encode())
        except Exception as exc:
            raise TracingUnavailable(f"bcc could not load the dispatch tracer: {exc}") from exc
        self._creator = os.getpid()
        self._inherited = False
        _fork.track(self)
        if not everything:
            # the process's row first (a fork from now on is followed in the kernel), then
            # the children it already has
            procs = self._bpf[b"procs"]
            procs[procs.Key(self.pid)] = procs.Leaf()
            if children:
                for kid in descendants(self.pid):
                    self._follow(kid)
        self._base = self.zero()

    def _follow(self, pid: int) -> None:
        """Trace `pid` too, as the fork probe does for a child forked from now on."""
        b = self._bpf
        b[b"procs"][b[b"procs"].Key(pid)] = b[b"procs"].Leaf()
        if self._bitmap:
            # (not atomic with the fork probe's OR: a fork into the same 64 pids within
            # these microseconds at start could lose its bit)
            words = b[b"tracked"]
            k = words.Key(pid // 64)
            words[k] = ct.c_uint64(words[k].value | 1 << (pid % 64))
        b[b"ctl"][b[b"ctl"].Key(CTL_FOLLOWING)] = ct.c_uint64(1)

    def _after_fork_in_child(self) -> None:
        """In a fork() child (fork.py): the perf events and counters are the parent's."""
        self._inherited = True
        if self._bpf is not None:
            _fork.forget_bpf(self._bpf)

    @staticmethod
    def zero() -> tuple:
        """A snapshot of nothing: report(since=zero()) counts from the tracer's start."""
        return {}, {}, {}, {}, {}, time.monotonic()

    def snapshot(self) -> tuple:
        """The counters now, for report(since=...) or report(until=...)."""
        return self._raw() + (time.monotonic(),)

    def _raw(self) -> tuple[dict, dict, dict, dict, dict]:
        b = self._bpf
        if self._inherited:
            raise InheritedAfterFork("DispatchTracer", self._creator)
        if b is None:
            raise RuntimeError("this DispatchTracer is closed (its last report is .final)")
        counts = {k: v for k, v in _items(b[b"counts"]) if v}
        totals = {k: v for k, v in _items(b[b"totals"]) if v}
        sysnr = {k: v for k, v in _items(b[b"sysnr"]) if v}
        hist = {divmod(k, LAT_SLOTS): v for k, v in _items(b[b"lat"]) if v}
        procs = {k: (v.submitted, v.done, v.syscalls, v.enters, bytes(v.comm))
                 for k, v in _items(b[b"procs"])}
        return counts, totals, sysnr, hist, procs

    def reset(self) -> None:
        self._base = self.snapshot()

    def report(self, since: tuple | None = None, until: tuple | None = None) -> Report:
        """What happened between two snapshots: by default from reset() (or the start)
        until now. Reports of consecutive intervals (each one's `until` the next one's
        `since`) add up to the whole."""
        counts, totals, sysnr, hist, procs, t1 = self.snapshot() if until is None else until
        bc, bt, bs, bh, bp, t0 = self._base if since is None else since
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
        calls = {nr: n - bs.get(nr, 0) for nr, n in sysnr.items() if n - bs.get(nr, 0) > 0}
        # one map gives both, so the total and the per-name list always agree
        tot["syscalls"] = sum(calls.values())
        tot["io_uring_enter"] = calls.get(ENTER, 0)
        rows = {}
        for pid, (sub, done, sc, ent, comm) in procs.items():
            was = bp.get(pid, (0, 0, 0, 0, b""))
            p = ProcStats(pid, "", sub - was[0], done - was[1], sc - was[2], ent - was[3])
            if not p.active:                  # (a thread's row, or a quiet process)
                continue
            p.comm = self._comms.get(pid) or _comm(pid, comm)
            if p.comm != "?":                 # read once: reading /proc is a system call
                self._comms[pid] = p.comm
            rows[pid] = p
        return Report(self.pid, t1 - t0, ops, tot, self.missing,
                      {syscall_name(nr): n for nr, n in calls.items()}, rows)

    def stop(self) -> None:
        """Detach every probe: the counters stay as they are, so a report() read after it
        is one moment (maps read while events fire disagree by the events in between)."""
        if self._inherited:
            raise InheritedAfterFork("DispatchTracer", self._creator)
        if self._bpf is not None:
            # the system-call probe first: detaching makes system calls of our own
            for tp in list(self._bpf.raw_tracepoint_fds):
                self._bpf.detach_raw_tracepoint(tp)
            for tp in list(self._bpf.tracepoint_fds):
                self._bpf.detach_tracepoint(tp)

    def close(self) -> None:
        if self._bpf is not None:
            if not getattr(self, "_inherited", False):
                self._bpf.cleanup()
            self._bpf = None

    def __enter__(self) -> "DispatchTracer":
        self.reset()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.final = self.report()
        self.close()
