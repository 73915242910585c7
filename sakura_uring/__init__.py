"""sakura_uring: Sakura Call on a stock Linux kernel.

A handler's system calls become one chain of io_uring requests whose file descriptors and
buffers flow from step to step inside the kernel; with SQPOLL the kernel thread picks the
chain up from shared memory without a system call.

    import sakura_uring as su
    with su.Ring(sqpoll=True) as ring:
        chain = su.Chain()
        f = chain.openat("/etc/hostname")
        data = chain.read(f, 4096)
        chain.close(f)
        print(ring.run(chain)[data].data)
"""
from .chain import BufferStep, Chain, Fixed, Link, Param, Step
from .errors import (ChainError, InheritedAfterFork, IoUringUnavailable, RingClosed, RingFull,
                     SakuraError, StepFailed, StepTimedOut, UnsupportedOperation)
from .ops import OPS
from .probe import Engine, KernelProbe, engines, probe
from .result import ChainResult, StepResult, Statx
from .maps import MapResult
from .ring import Ring, sakura_call

__version__ = "0.1.0"

__all__ = [
    "Ring", "Chain", "Link", "Fixed", "Step", "BufferStep", "Param", "ChainResult",
    "StepResult", "MapResult",
    "Statx", "sakura_call", "probe", "KernelProbe", "engines", "Engine", "OPS", "SakuraError",
    "IoUringUnavailable", "ChainError", "UnsupportedOperation", "RingClosed", "RingFull",
    "StepFailed", "StepTimedOut", "InheritedAfterFork",
]
