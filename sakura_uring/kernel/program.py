"""Turning a handler's C source into a loaded, attached BPF program (bcc).

The text bcc compiles is: layout macros and opcode numbers (from ops.py), bpf/sakura.h,
the handler, and the dispatch program — each introduced by a #line directive, so that a
compiler or verifier message points at the handler's own file and line."""
from __future__ import annotations

import errno
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import ops as _ops
from ..errors import SakuraError

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
SDK = BPF_DIR / "sakura.h"
DISPATCH = BPF_DIR / "dispatch.c"
EVENTS = "/sys/kernel/tracing/events/io_uring"
EMITTED_OPS = ("nop", "openat", "close", "statx", "read", "write", "send", "recv", "accept")


class HandlerCompileError(SakuraError):
    """The handler did not compile, or the verifier refused it. `.log` holds the full
    compiler/verifier output; the message shows the lines that name the handler."""

    def __init__(self, what: str, source_name: str, log: str, hint: str = ""):
        self.log = log
        self.source_name = source_name
        lines = _relevant(log, source_name)
        msg = f"{what} ({source_name})"
        if lines:
            msg += ":\n  " + "\n  ".join(lines)
        if hint:
            msg += f"\n{hint}"
        super().__init__(msg)


@dataclass(frozen=True)
class Layout:
    entries: int
    cq_entries: int
    reqs: int
    buf_size: int

    @property
    def ring_pages(self) -> int:
        # struct io_rings' header is well under a page; the CQEs follow it
        return (self.cq_entries * 16 + 4096 + 4095) // 4096


def _format(event: str) -> str | None:
    try:
        return Path(EVENTS, event, "format").read_text()
    except OSError:
        return None


def program_text(handler: str, source_name: str, layout: Layout, boot_ud: int) -> str:
    macros = {
        "SK_ENTRIES": layout.entries, "SK_CQ_ENTRIES": layout.cq_entries,
        "SK_RING_PAGES": layout.ring_pages, "SK_REQS": layout.reqs,
        "SK_BUF_SIZE": layout.buf_size, "SK_BOOT_UD": f"{boot_ud:#x}ULL",
        # old kernels' io_uring_complete has no cflags field
        "SK_CQE_FLAGS": "args->cflags" if "cflags;" in (_format("io_uring_complete") or "") else "0",
    }
    if _format("io_uring_cqe_overflow"):
        macros["SK_HAVE_OVERFLOW_TP"] = 1
    by_name = {op.name: op for op in _ops.OPS}
    macros.update({f"SK_OP_{n.upper()}": by_name[n].opcode for n in EMITTED_OPS})
    pre = "".join(f"#define {k} {v}\n" for k, v in macros.items())
    return (pre + f'#line 1 "{SDK}"\n' + SDK.read_text()
            + f'\n#line 1 "{source_name}"\n' + handler
            + f'\n#line 1 "{DISPATCH}"\n' + DISPATCH.read_text())


def _relevant(log: str, source_name: str) -> list[str]:
    """The error lines, the handler's first; the verifier's last words when none."""
    lines = [ln.rstrip() for ln in log.splitlines() if ln.strip()]
    mine = [ln for ln in lines if source_name in ln and ("error" in ln or "warning" not in ln)]
    errs = [ln for ln in lines if "error:" in ln]
    if mine or errs:
        return (mine + [e for e in errs if e not in mine])[:12]
    return lines[-12:]


class _CapturedStderr:
    """libbcc prints compiler errors and the verifier log on fd 2, not in the exception."""

    def __enter__(self):
        self.file = tempfile.TemporaryFile(mode="w+b")
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace")
        self.file.close()


def load(bcc, handler: str, source_name: str, layout: Layout, boot_ud: int):
    """Compile, load and attach; returns the bcc.BPF object."""
    text = program_text(handler, source_name, layout, boot_ud)
    # BPF_PROG_LOAD can fail with EAGAIN right after an io_uring is closed (its pending
    # task_work counts as a pending signal): retry as libbpf does
    for attempt in range(5):
        with _CapturedStderr() as err:
            try:
                return bcc.BPF(text=text.encode())
            except Exception as exc:  # bcc raises bare Exception
                failure = str(exc)
        if "Failed to compile" in failure:
            raise HandlerCompileError("the kernel handler does not compile", source_name, err.text)
        if "Failed to load" in failure:
            if "Resource temporarily unavailable" in failure and attempt < 4:
                time.sleep(0.05 * (attempt + 1))
                continue
            raise HandlerCompileError(
                "the BPF verifier refused the kernel handler", source_name,
                err.text + "\n" + failure,
                "hint: keep buffer offsets checked against SK_BUF_SIZE and loops bounded")
        raise HandlerCompileError(f"bcc failed: {failure}", source_name, err.text)
    raise AssertionError("unreachable")
