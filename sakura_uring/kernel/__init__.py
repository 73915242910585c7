"""The kernel-handler engine: BPF programs (bcc) that carry out a request's system calls
in kernel context, deciding each next step from the data of the last one.

    from sakura_uring.kernel import KernelRing, handler_path
    with KernelRing(handler_path("follow")) as kr:            # the C handler
        print(kr.run(data=b"/tmp/pointer\\0").data)

    from sakura_uring.kernel.handlers import follow              # the same, in Python

See docs/kernel-handlers.md and bpf/sakura.h."""
from __future__ import annotations

from pathlib import Path

from . import sdk
from .program import (BPF_DIR, HandlerCompileError, VerifierBudgetWarning, VerifierStats,
                      verifier_stats)
from .python import Arg, Handler, HandlerTranslateError, Step, handler
from .ring import HandlerResult, HandlerStalled, KernelHandlersUnavailable, KernelRing

HANDLERS_DIR = BPF_DIR / "handlers"


def handler_path(name: str) -> Path:
    """The path of a handler shipped in bpf/handlers/ (follow, sendfile, copy, http, ...)."""
    p = HANDLERS_DIR / f"{name}.c"
    if not p.is_file():
        have = sorted(x.stem for x in HANDLERS_DIR.glob("*.c"))
        raise ValueError(f"no shipped handler named {name!r}; there are: {', '.join(have)}")
    return p


__all__ = ["KernelRing", "HandlerResult", "HandlerStalled", "HandlerCompileError",
           "KernelHandlersUnavailable", "handler_path", "HANDLERS_DIR", "VerifierStats",
           "verifier_stats", "VerifierBudgetWarning", "handler", "Handler", "Arg", "Step",
           "HandlerTranslateError", "sdk"]
