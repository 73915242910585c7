"""What the dispatch tracer saw, as numbers (Report), tables and JSON.

Latency buckets follow bcc's bpf_log2l(): slot 1 holds 0-1 us, slot s >= 2 holds
2^(s-1) .. 2^s - 1 us (so a 1 ms timeout lands in slot 11, 1024-2047 us)."""
from __future__ import annotations

from dataclasses import dataclass, field

# columns of the per-opcode counts, in the BPF program's order (bpf/tracer.c, C_*)
COLUMNS = ("sub_app", "sub_sqpoll", "punted", "polled",
           "by_submitter", "by_sqpoll", "by_iowq", "by_other",
           "done", "errors", "canceled", "short", "broke")
# totals[] in the BPF program's order (T_*); syscalls and io_uring_enter come from sysnr
TOTALS = ("cq_overflows", "chains", "chains_done", "chains_broken", "links_failed",
          "linked", "unmatched")


def bucket(slot: int) -> tuple[int, int]:
    """The latencies (us, inclusive) that bpf_log2l() puts in `slot`."""
    if slot <= 1:
        return 0, 1
    return 1 << (slot - 1), (1 << slot) - 1


@dataclass
class OpStats:
    name: str
    counts: dict = field(default_factory=dict)     # column -> count
    hist: dict = field(default_factory=dict)       # bpf_log2l(us) slot -> count

    def percentile(self, p: float) -> float | None:
        """Upper bound (us) of the log2 bucket holding the p-th percentile."""
        n = sum(self.hist.values())
        if not n:
            return None
        seen = 0
        for slot in sorted(self.hist):
            seen += self.hist[slot]
            if seen >= p * n:
                return float(bucket(slot)[1])
        return None


@dataclass
class ProcStats:
    pid: int
    comm: str
    submitted: int = 0
    done: int = 0
    syscalls: int = 0
    io_uring_enter: int = 0

    @property
    def active(self) -> bool:
        return bool(self.submitted or self.done or self.syscalls)


@dataclass
class Report:
    pid: int                                        # the process asked for (0: the system)
    seconds: float
    ops: dict                                       # name -> OpStats
    totals: dict
    missing: list
    syscalls: dict = field(default_factory=dict)    # name -> count
    procs: dict = field(default_factory=dict)       # pid -> ProcStats (active ones)

    @property
    def requests(self) -> int:
        return sum(o.counts.get("done", 0) for o in self.ops.values())

    @property
    def syscalls_per_request(self) -> float | None:
        return self.totals["syscalls"] / self.requests if self.requests else None

    def notes(self) -> list[str]:
        """What a reader could otherwise get wrong: a process that did no io_uring work."""
        if not self.pid:
            return [] if self.requests else ["no process made an io_uring request"]
        me = self.procs.get(self.pid)
        if me and me.done:
            return []
        others = sum(p.done for pid, p in self.procs.items() if pid != self.pid)
        if others:
            return [f"PID {self.pid} itself completed no io_uring request; the processes it "
                    f"started completed {others}"]
        return [f"PID {self.pid} completed no io_uring request while traced (nor did any "
                f"process it started): is it the process that uses io_uring?"]

    def to_json(self) -> dict:
        return dict(pid=self.pid, seconds=round(self.seconds, 3), requests=self.requests,
                    syscalls_per_request=self.syscalls_per_request, totals=self.totals,
                    ops={n: dict(o.counts, p50_us=o.percentile(0.5), p99_us=o.percentile(0.99),
                                 hist_us=[[*bucket(s), c] for s, c in sorted(o.hist.items())])
                         for n, o in self.ops.items()},
                    syscalls=self.syscalls,
                    procs={str(p.pid): dict(comm=p.comm, submitted=p.submitted, done=p.done,
                                            syscalls=p.syscalls,
                                            io_uring_enter=p.io_uring_enter)
                           for p in self.procs.values()},
                    notes=self.notes(), missing=self.missing)

    def table(self) -> str:
        head = (f"{'OP':<13}{'SUB:APP':>8}{'SUB:SQP':>8}{'PUNTED':>7}{'POLLED':>7} |"
                f"{'SUBMTR':>7}{'SQPOLL':>7}{'IO-WQ':>7}{'OTHER':>7} |"
                f"{'DONE':>8}{'ERR':>6}{'CANCEL':>7}{'SHORT':>6}{'BROKE':>6}"
                f"{'p50us':>7}{'p99us':>7}")
        lines = [f"{'':<44}| CQE posted by{'':<14}|", head]
        for name in sorted(self.ops, key=lambda n: -self.ops[n].counts.get("done", 0)):
            o = self.ops[name]
            c = o.counts.get
            p50, p99 = o.percentile(0.5), o.percentile(0.99)
            lines.append(
                f"{name:<13}{c('sub_app', 0):>8}{c('sub_sqpoll', 0):>8}{c('punted', 0):>7}"
                f"{c('polled', 0):>7} |{c('by_submitter', 0):>7}{c('by_sqpoll', 0):>7}"
                f"{c('by_iowq', 0):>7}{c('by_other', 0):>7} |{c('done', 0):>8}"
                f"{c('errors', 0):>6}{c('canceled', 0):>7}{c('short', 0):>6}{c('broke', 0):>6}"
                f"{'-' if p50 is None else int(p50):>7}{'-' if p99 is None else int(p99):>7}")
        t = self.totals
        spr = self.syscalls_per_request
        lines.append(
            f"requests {self.requests}, system calls {t['syscalls']} "
            f"(io_uring_enter {t['io_uring_enter']}, other {t['syscalls'] - t['io_uring_enter']}), "
            f"per request {'-' if spr is None else f'{spr:.3f}'}; chains started {t['chains']}, "
            f"completed {t['chains_done']}, broken {t['chains_broken']} "
            f"({t['links_failed']} members cancelled); CQ overflows {t['cq_overflows']}")
        other = sorted(((n, c) for n, c in self.syscalls.items() if n != "io_uring_enter"),
                       key=lambda x: -x[1])
        if other:
            lines.append("other system calls: " + ", ".join(f"{n} {c}" for n, c in other[:5]))
        if len(self.procs) > 1 or not self.pid:
            lines.append(f"{'PID':>8} {'COMM':<16}{'SUBMITTED':>10}{'DONE':>10}{'SYSCALLS':>10}"
                         f"{'ENTER':>8}")
            for p in sorted(self.procs.values(), key=lambda p: (-p.done, p.pid)):
                lines.append(f"{p.pid:>8} {p.comm[:15]:<16}{p.submitted:>10}{p.done:>10}"
                             f"{p.syscalls:>10}{p.io_uring_enter:>8}")
        lines += [f"note: {n}" for n in self.notes()]
        if self.missing:
            lines.append("not on this kernel: " + "; ".join(self.missing))
        return "\n".join(lines)

    def histograms(self) -> str:
        """Per-opcode log2 histograms of submit -> CQE, labelled like bcc's biolatency."""
        out = []
        for name, o in sorted(self.ops.items()):
            if not o.hist:
                continue
            out.append(f"\nop = {name}\n     usecs{'':<15}: count     distribution")
            top = max(o.hist.values())
            for slot in range(1, max(o.hist) + 1):
                lo, hi = bucket(slot)
                n = o.hist.get(slot, 0)
                bar = "*" * int(40 * n / top) if top else ""
                out.append(f"{lo:>10} -> {hi:<10}: {n:<9} |{bar:<40}|")
        return "\n".join(out)
