"""Count the system calls a process makes, by number, with a bcc program on the
raw_syscalls:sys_enter tracepoint (the interrupts Sakura Call exists to remove).

    with SyscallCounter() as sc:         # this process, every thread
        work()
    sc.total, sc.by_name()["io_uring_enter"]
"""
from __future__ import annotations

import os

from .bccenv import TracingUnavailable, load_bcc  # noqa: F401

_PROG = r"""
BPF_ARRAY(counts, u64, 512);
TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    if ((bpf_get_current_pid_tgid() >> 32) != TGID)
        return 0;
    u32 nr = args->id;
    if (nr == 321)      /* bpf(): the counter reading its own map */
        return 0;
    if (nr >= 512)
        nr = 511;
    u64 *c = counts.lookup(&nr);
    if (c)
        __sync_fetch_and_add(c, 1);
    return 0;
}
"""

# x86_64 numbers of the calls worth naming
NAMES = {0: "read", 1: "write", 2: "open", 3: "close", 9: "mmap", 11: "munmap", 202: "futex",
         228: "clock_gettime", 257: "openat", 262: "newfstatat", 425: "io_uring_setup",
         426: "io_uring_enter", 427: "io_uring_register", 232: "epoll_wait", 7: "poll",
         23: "select", 281: "epoll_pwait", 8: "lseek", 5: "fstat", 332: "statx", 14: "rt_sigprocmask",
         230: "clock_nanosleep", 35: "nanosleep", 24: "sched_yield", 39: "getpid", 4: "stat",
         6: "lstat", 10: "mprotect", 12: "brk", 13: "rt_sigaction", 16: "ioctl", 17: "pread64",
         44: "sendto", 45: "recvfrom", 72: "fcntl", 217: "getdents64",
         321: "bpf", 298: "perf_event_open", 56: "clone", 435: "clone3", 59: "execve",
         61: "wait4", 62: "kill", 15: "rt_sigreturn", 318: "getrandom", 302: "prlimit64",
         334: "rseq", 273: "set_robust_list", 218: "set_tid_address", 89: "readlink",
         79: "getcwd", 102: "getuid", 107: "geteuid", 104: "getgid", 108: "getegid",
         158: "arch_prctl", 20: "writev", 19: "readv"}


class SyscallCounter:
    """Counts system calls of process `pid` (default: this one) while active."""

    def __init__(self, pid: int | None = None):
        self.pid = os.getpid() if pid is None else pid
        bcc = load_bcc()
        try:
            self._bpf = bcc.BPF(text=_PROG.replace("TGID", str(self.pid)).encode())
        except Exception as exc:
            raise TracingUnavailable(f"bcc could not load the syscall counter: {exc}") from exc
        self._counts = self._bpf[b"counts"]
        self._base = self._snapshot()
        self._end = None

    def _snapshot(self) -> dict[int, int]:
        return {k.value: v.value for k, v in self._counts.items() if v.value}

    def reset(self) -> None:
        self._base = self._snapshot()
        self._end = None

    def stop(self) -> dict[int, int]:
        now = self._snapshot()
        self._end = {nr: n - self._base.get(nr, 0) for nr, n in now.items()
                     if n - self._base.get(nr, 0)}
        return self._end

    @property
    def counts(self) -> dict[int, int]:
        return self._end if self._end is not None else self.stop()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def by_name(self) -> dict[str, int]:
        return {NAMES.get(nr, f"sys_{nr}"): n for nr, n in self.counts.items()}

    def __enter__(self) -> "SyscallCounter":
        self.reset()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
