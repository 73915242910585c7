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
    """The chain uses an operation (`op`, its name) or an engine (`engine`: "link") this
    kernel does not have."""

    def __init__(self, message: str, *, op: str | None = None, engine: str | None = None):
        super().__init__(message)
        self.op, self.engine = op, engine


class RingClosed(SakuraError, RuntimeError):
    """The ring was closed; nothing more can be submitted to it."""


class InheritedAfterFork(RingClosed):
    """A ring (or tracer) created by another process and inherited through fork().

    Its queues and maps are shared with the parent: the child must not use them."""

    def __init__(self, what: str, creator: int):
        super().__init__(
            f"this {what} was created by process {creator} and inherited by fork(); its "
            f"queues are shared with that process, so process {os.getpid()} must not use "
            f"it: create a new {what} in the child (closing the inherited one only unmaps it)")
        self.creator = creator


class RingFull(SakuraError):
    """block=False was asked and the ring has no room for the chain right now."""


class StepFailed(SakuraError, OSError):
    """Raised by ChainResult.raise_for_error(): a step of the chain failed."""

    def __init__(self, err: int, message: str, step=None):
        super().__init__(err, message)
        self.step = step


class StepTimedOut(StepFailed, TimeoutError):
    """Raised by ChainResult.raise_for_error(): a step was stopped by its timeout (its own
    or the chain's), whatever errno the interrupted system call returned."""


# Kernel-internal errnos (include/linux/errno.h) that can leak out of a CQE, e.g. from a
# request an io-wq worker was running when its timeout cancelled it: each is reported
# as the errno a user can act on, under its kernel name.
KERNEL_ERRNOS = {
    512: ("ERESTARTSYS", _errno.EINTR), 513: ("ERESTARTNOINTR", _errno.EINTR),
    514: ("ERESTARTNOHAND", _errno.EINTR), 515: ("ENOIOCTLCMD", _errno.ENOTTY),
    516: ("ERESTART_RESTARTBLOCK", _errno.EINTR), 517: ("EPROBE_DEFER", _errno.EAGAIN),
    518: ("EOPENSTALE", _errno.ESTALE), 519: ("ENOPARAM", _errno.EINVAL),
    521: ("EBADHANDLE", _errno.EBADF), 522: ("ENOTSYNC", _errno.EIO),
    523: ("EBADCOOKIE", _errno.EINVAL), 524: ("ENOTSUPP", _errno.EOPNOTSUPP),
    525: ("ETOOSMALL", _errno.EINVAL), 526: ("ESERVERFAULT", _errno.EIO),
    527: ("EBADTYPE", _errno.EINVAL), 528: ("EJUKEBOX", _errno.EAGAIN),
    529: ("EIOCBQUEUED", _errno.EIO), 530: ("ERECALLCONFLICT", _errno.EIO),
}


def describe_errno(err: int) -> tuple[int, str]:
    """(errno a user sees, its description): kernel-internal values are mapped and named,
    unknown ones say so instead of "Unknown error N"."""
    known = KERNEL_ERRNOS.get(err)
    if known is not None:
        name, user = known
        return user, f"{os.strerror(user)} (the kernel-internal {name}, {err})"
    text = os.strerror(err)
    if text.startswith("Unknown error"):
        return err, f"errno {err}, which Linux does not document for user space"
    return err, text
