"""Count the system calls a process makes, by number, with a bcc program on the
raw_syscalls:sys_enter tracepoint (the interrupts Sakura Call exists to remove).

    with SyscallCounter() as sc:         # this process, every thread
        work()
    sc.total, sc.by_name()["io_uring_enter"]
"""
from __future__ import annotations

import os

from ..bpfenv import TracingUnavailable, load_bcc  # noqa: F401

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

# x86_64 system calls newer than bcc's own table (which stops at 334, pkey_free + rseq)
NEWER = dict(enumerate((
    "pidfd_send_signal", "io_uring_setup", "io_uring_enter", "io_uring_register", "open_tree",
    "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "pidfd_open", "clone3",
    "close_range", "openat2", "pidfd_getfd", "faccessat2", "process_madvise", "epoll_pwait2",
    "mount_setattr", "quotactl_fd", "landlock_create_ruleset", "landlock_add_rule",
    "landlock_restrict_self", "memfd_secret", "process_mrelease", "futex_waitv",
    "set_mempolicy_home_node", "cachestat", "fchmodat2", "map_shadow_stack", "futex_wake",
    "futex_wait", "futex_requeue", "statmount", "listmount", "lsm_get_self_attr",
    "lsm_set_self_attr", "lsm_list_modules", "mseal", "setxattrat", "getxattrat",
    "listxattrat", "removexattrat", "open_tree_attr"), start=424))
OVERFLOW = 511          # the BPF programs count every number >= 511 here


def syscall_name(nr: int) -> str:
    """The name of x86_64 system call `nr`, from bcc's table (then ours for newer ones)."""
    if nr in NEWER:
        return NEWER[nr]
    if nr == OVERFLOW:
        return "sys_511_and_above"
    try:
        from bcc.syscall import syscalls
        name = syscalls.get(nr)
    except ImportError:
        name = None
    return name.decode() if name else f"sys_{nr}"


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
        self._end: dict[int, int] | None = None

    def _snapshot(self) -> dict[int, int]:
        return {k.value: v.value for k, v in self._counts.items() if v.value}

    def reset(self) -> None:
        self._base = self._snapshot()
        self._end = None

    def stop(self) -> dict[int, int]:
        now = self._snapshot()
        end = {nr: n - self._base.get(nr, 0) for nr, n in now.items()
               if n - self._base.get(nr, 0)}
        self._end = end
        return end

    @property
    def counts(self) -> dict[int, int]:
        return self._end if self._end is not None else self.stop()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def by_name(self) -> dict[str, int]:
        return {syscall_name(nr): n for nr, n in self.counts.items()}

    def __enter__(self) -> "SyscallCounter":
        self.reset()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
