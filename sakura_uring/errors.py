"""Exception types. Each message names the cause and, where there is one, the fix."""
from __future__ import annotations

import errno as _errno
import os


class SakuraError(Exception):
    """Base class of every sakura_uring error."""


class IoUringUnavailable(SakuraError, OSError):
    """The kernel refused io_uring itself (disabled, filtered, or too old)."""

    def __init__(self, err: int, what: str = "io_uring_setup"):
        cause, fix = _explain(err)
        super().__init__(err, f"{what} failed: {os.strerror(err)} ({cause}). Fix: {fix}")
        self.cause = cause
        self.fix = fix


def _explain(err: int) -> tuple[str, str]:
    disabled = _read("/proc/sys/kernel/io_uring_disabled")
    if err == _errno.ENOSYS:
        return ("this kernel has no io_uring (older than 5.1, or built without CONFIG_IO_URING)",
                "run on Linux 5.6 or newer built with CONFIG_IO_URING=y")
    if err == _errno.EPERM:
        if disabled == "2":
            return ("io_uring is disabled system-wide: kernel.io_uring_disabled = 2",
                    "as root: sysctl -w kernel.io_uring_disabled=0")
        if disabled == "1":
            return ("kernel.io_uring_disabled = 1 allows io_uring only to root and the group in "
                    "kernel.io_uring_group",
                    "run as root, join that group, or sysctl -w kernel.io_uring_disabled=0")
        return ("a seccomp filter or LSM denies io_uring to this process (containers often do)",
                "run outside the sandbox or allow io_uring_setup/io_uring_enter/io_uring_register")
    if err == _errno.ENOMEM:
        return ("the ring or its registered buffers exceed the locked-memory limit",
                "raise RLIMIT_MEMLOCK (ulimit -l) or pass Ring(buffers=..., buffer_size=...) smaller")
    if err == _errno.EINVAL:
        return ("the kernel rejected a setup parameter (an old kernel lacks a flag)",
                "use a smaller entries value or drop sqpoll=True; see sakura_uring.probe()")
    return ("the kernel refused the request", "see the errno above")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


class ChainError(SakuraError, ValueError):
    """A chain that can't be laid into this ring (bad argument, too long, foreign handle)."""


class UnsupportedOperation(ChainError):
    """The chain uses an operation this kernel does not have."""


class RingClosed(SakuraError, RuntimeError):
    """The ring was closed; nothing more can be submitted to it."""


class RingFull(SakuraError):
    """block=False was asked and the ring has no room for the chain right now."""


class StepFailed(SakuraError, OSError):
    """Raised by ChainResult.raise_for_error(): a step of the chain failed."""

    def __init__(self, err: int, message: str, step=None):
        super().__init__(err, message)
        self.step = step
