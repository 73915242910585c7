"""sakura-uring trace: how the kernel dispatches each io_uring request of a program (bcc).

USAGE: sakura-uring trace [-h] [-p PID | -a | -- COMMAND ...] [-i INTERVAL] [-d SECONDS]
                          [--json] [--no-children] [--no-syscalls]

Per opcode: who submitted each request (an application thread or the SQPOLL thread,
iou-sqp-*), how many were punted to an io-wq worker (iou-wrk-*) or waited in poll, which
task posted its CQE (the submitting thread, the SQPOLL thread, an io-wq worker, another
task or an interrupt), errors, cancellations, short transfers, the chains it broke, and a
log2 histogram of the time from the kernel taking the SQE to the CQE being posted. For
the program: system calls (io_uring_enter apart) per completed request -- the interrupts
Sakura Call exists to remove --, chains, CQ overflows, and a row per process. Children
are followed. Tracepoints only (io_uring:*, sched:*, raw_syscalls:sys_enter).

EXAMPLES:
    sakura-uring trace -p 1234              # PID 1234 (or a thread of it) and its children
    sakura-uring trace -p 1234 -i 1         # a table every second
    sakura-uring trace -d 5 -- fio job.fio  # run a command, trace it for at most 5 s
    sakura-uring trace -a -d 10             # every process, a row each
    sakura-uring trace -p 1234 -i 1 --json  # one JSON line per interval and at the end

EXIT STATUS: with -- COMMAND, the command's (127: it could not be started; 128+N: it
ended on signal N, also when -d or a signal to the tracer ended it); else 0.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import os
import shutil
import signal
import sys
import time

from ..bpfenv import TracingUnavailable, can_trace
from .dispatch import DispatchTracer

MIN_INTERVAL = 0.1          # reading the maps takes milliseconds: no point in less
GRACE_S = 5.0               # how long an ended command gets after SIGTERM, before SIGKILL
ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Held:
    """A command started but held before exec, so tracing begins before its first
    instruction: the child waits on a pipe, then execs; an exec failure comes back
    through a close-on-exec pipe (as subprocess does)."""

    def __init__(self, cmd: list[str]):
        go_r, go_w = os.pipe()
        self._go: int | None = go_w
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.pid = os.fork()
        if self.pid == 0:                   # child: nothing of the tracer's Python runs
            try:
                for s in ENDING:
                    signal.signal(s, signal.SIG_DFL)
                os.close(go_w)
                os.close(err_r)
                if os.read(go_r, 1) == b"x":
                    os.execvp(cmd[0], cmd)
            except OSError as exc:
                os.write(err_w, str(exc.errno).encode())
            finally:
                os._exit(127)
        os.close(go_r)
        os.close(err_w)
        self._err = err_r
        self.status: int | None = None

    def release(self) -> int:
        """Let it exec; returns 0, or the errno that made exec fail."""
        assert self._go is not None, "released twice"
        os.write(self._go, b"x")
        os.close(self._go)
        self._go = None
        got = os.read(self._err, 16)
        os.close(self._err)
        return int(got) if got else 0

    def poll(self) -> int | None:
        if self.status is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(st)
        return self.status

    def end(self, sig: int = signal.SIGTERM) -> int:
        """End it (if still running) and return its exit status as a shell gives it."""
        if self.poll() is None:
            if self._go is not None:       # never released: it has run nothing of its own
                sig = signal.SIGKILL
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + GRACE_S
            while self.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if self.poll() is None:
                os.kill(self.pid, signal.SIGKILL)
                _, st = os.waitpid(self.pid, 0)
                self.status = os.waitstatus_to_exitcode(st)
        status = self.status
        assert status is not None
        return status if status >= 0 else 128 - status


def _positive(what: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number of seconds, not {text!r}")
        if not math.isfinite(v) or v <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be a finite number of seconds > 0, "
                                             f"not {text}")
        if what == "INTERVAL" and v < MIN_INTERVAL:
            raise argparse.ArgumentTypeError(f"INTERVAL must be at least {MIN_INTERVAL} s "
                                             f"(reading the counters takes milliseconds)")
        return v
    return parse


def parse(argv) -> tuple[argparse.ArgumentParser, argparse.Namespace, list[str]]:
    doc = __doc__
    ap = argparse.ArgumentParser(prog="sakura-uring trace", description=doc.split("\n\n")[2],
                                 epilog=doc[doc.index("EXAMPLES:"):],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-p", "--pid", type=int, help="trace this process (a thread id: its process)")
    ap.add_argument("-a", "--all", action="store_true", help="trace every process")
    ap.add_argument("-i", "--interval", type=_positive("INTERVAL"),
                    help="print a table every INTERVAL seconds")
    ap.add_argument("-d", "--duration", type=_positive("SECONDS"), metavar="SECONDS",
                    help="stop after SECONDS")
    ap.add_argument("--json", action="store_true", help="JSON lines instead of tables")
    ap.add_argument("--no-children", action="store_true",
                    help="leave out the processes the traced one starts")
    ap.add_argument("--no-syscalls", action="store_true",
                    help="don't count system calls (no probe on every system call of the machine)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...: run and trace it")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if sum((bool(cmd), args.pid is not None, args.all)) != 1:
        ap.error("give one of -p PID, -a or -- COMMAND ...")
    if args.all and args.no_children:
        ap.error("-a traces every process already; --no-children goes with -p or a command")
    return ap, args, cmd


class Output:
    """stdout that a closed reader (`| head`) ends quietly."""

    def __init__(self):
        self.broken = False

    def __call__(self, text: str) -> None:
        if self.broken:
            return
        try:
            print(text, flush=True)
        except BrokenPipeError:
            self.broken = True
            # later flushes (at exit too) must not raise again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def main(argv=None) -> int:
    ap, args, cmd = parse(argv)

    if os.geteuid() != 0 or not can_trace():
        print("sakura-uring trace: tracing needs root with CAP_BPF and CAP_PERFMON (or "
              "CAP_SYS_ADMIN); run it as root", file=sys.stderr)
        return 1
    if cmd and "/" not in cmd[0] and shutil.which(cmd[0]) is None:
        print(f"sakura-uring trace: {cmd[0]}: command not found", file=sys.stderr)
        return 127
    # a signal from here on ends the command too; the summary still prints
    got: dict[str, int | None] = {"sig": None}

    def on_signal(sig, _frame):
        got["sig"] = sig
    for s in ENDING:
        signal.signal(s, on_signal)
    proc = Held(cmd) if cmd else None
    try:
        tracer = DispatchTracer(proc.pid if proc else args.pid, everything=args.all,
                                children=not args.no_children, syscalls=not args.no_syscalls)
    except (TracingUnavailable, ValueError, OSError) as exc:
        print(f"sakura-uring trace: {exc}", file=sys.stderr)
        if proc:
            proc.end(signal.SIGKILL)
        return 1
    out = Output()
    try:
        return _trace(args, cmd, proc, tracer, got, out)
    finally:
        tracer.close()


def _trace(args, cmd, proc, tracer, got, out) -> int:
    what = "every process" if args.all else f"PID {tracer.pid}"
    if got["sig"] is not None:             # during the compile: the command never ran
        if proc:
            proc.end(signal.SIGKILL)
        print(f"sakura-uring trace: ended by signal {got['sig']} before tracing began",
              file=sys.stderr)
        return 128 + got["sig"] if proc else 0
    if proc:
        err = proc.release()
        if err:
            print(f"sakura-uring trace: {cmd[0]}: {os.strerror(err)}", file=sys.stderr)
            proc.end()
            return 126 if err in (errno.EACCES, errno.ENOEXEC, errno.EISDIR) else 127
    if not args.json:
        print(f"Tracing io_uring dispatch of {what}" + ("" if args.all or args.no_children
                                                        else " and its children")
              + (f" for {args.duration} s" if args.duration else "") + "... Ctrl-C to end.",
              file=sys.stderr)
    start = time.monotonic()
    whole = last = tracer.zero()
    next_tick = start + (args.interval or math.inf)
    while got["sig"] is None and not out.broken:
        time.sleep(0.05)                  # -i is at least MIN_INTERVAL = 0.1 s
        now = time.monotonic()
        if args.duration and now - start >= args.duration:
            break
        if proc is not None and proc.poll() is not None:
            break
        if proc is None and not args.all and not os.path.exists(f"/proc/{tracer.pid}"):
            break
        if args.interval and now >= next_tick:
            snap = tracer.snapshot()
            rep = tracer.report(since=last, until=snap)
            last = snap
            out(json.dumps(dict(rep.to_json(), kind="interval")) if args.json else
                f"\n{time.strftime('%H:%M:%S')}\n{rep.table()}")
            next_tick += args.interval
    status = 0
    if proc is not None:
        # the command ends before the last read, so everything it did is in the summary
        sig = signal.SIGINT if got["sig"] == signal.SIGINT else signal.SIGTERM
        status = proc.end(sig)
    tracer.stop()
    rep = tracer.report(since=whole)
    if out.broken:
        return 128 + signal.SIGPIPE
    out(json.dumps(dict(rep.to_json(), kind="summary")) if args.json else
        f"\nSummary, {rep.seconds:.1f} s:\n{rep.table()}{rep.histograms()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
