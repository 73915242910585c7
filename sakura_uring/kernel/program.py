"""Turning a handler's C source into a loaded, attached BPF program (bcc).

The text bcc compiles is: layout macros and opcode numbers (from ops.py), bpf/sakura.h,
the handler, and the dispatch program — each introduced by a #line directive, so that a
compiler or verifier message points at the handler's own file and line."""
from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import ops as _ops
from ..bpfenv import tracepoint_format
from ..errors import SakuraError
from ..resources import bpf_dir

BPF_DIR = bpf_dir()
SDK = BPF_DIR / "sakura.h"
DISPATCH = BPF_DIR / "dispatch.c"


class HandlerCompileError(SakuraError):
    """The handler did not compile, or the verifier refused it. The message names the
    handler's file and line and the compiler's or verifier's words; `.log` holds the full
    output, `.line` the handler line (None when unknown)."""

    def __init__(self, what: str, source_name: str, log: str, hint: str = "",
                 line: int | None = None):
        self.log = log
        self.source_name = source_name
        self.line, lines = _locate(log, source_name)
        self.line = self.line or line
        msg = what + (f" at {source_name}:{self.line}" if self.line else f" ({source_name})")
        if lines:
            msg += ":\n  " + "\n  ".join(lines)
        if hint:
            msg += f"\n{hint}"
        super().__init__(msg)


def _locate(log: str, source_name: str) -> tuple[int | None, list[str]]:
    """(the handler line the log blames, the lines worth showing)."""
    lines = [ln.rstrip() for ln in log.splitlines() if ln.strip()]
    at = re.compile(re.escape(source_name) + r":(\d+)")
    errs = [ln for ln in lines if "error:" in ln]
    if errs:                                     # clang: "file:line:col: error: ..."
        m = next((at.search(e) for e in errs if at.search(e)), None)
        return (int(m.group(1)) if m else None), errs[:12]
    # verifier: the message sits just before "processed N insns"; the last source
    # annotation ("; code @ file:line") before it is the handler line being checked
    end = next((i for i, ln in enumerate(lines) if ln.startswith("processed ")), len(lines))
    line = None
    for ln in lines[:end]:
        m = at.search(ln)
        if m and ln.lstrip().startswith(";"):
            line = int(m.group(1))
    return line, lines[max(0, end - 8):end + 1]


@dataclass(frozen=True)
class Layout:
    entries: int
    cq_entries: int
    reqs: int
    buf_size: int

    @staticmethod
    def default_cq(entries: int, reqs: int) -> int:
        """KernelRing's CQ when none is given: twice the SQ, or 16 CQEs per request."""
        return max(2 * entries, 1 << (16 * reqs - 1).bit_length())

    @property
    def ring_pages(self) -> int:
        # struct io_rings' header is well under a page; the CQEs follow it
        return (self.cq_entries * 16 + 4096 + 4095) // 4096


def _format(event: str) -> str | None:
    return tracepoint_format("io_uring", event)


def program_parts(handler: str, source_name: str, layout: Layout,
                  boot_ud: int) -> list[tuple[str, str]]:
    """[(file name, text)] in compile order: layout macros, sakura.h, handler, dispatch."""
    macros = {
        "SK_ENTRIES": layout.entries, "SK_CQ_ENTRIES": layout.cq_entries,
        "SK_RING_PAGES": layout.ring_pages, "SK_REQS": layout.reqs,
        "SK_BUF_SIZE": layout.buf_size, "SK_BOOT_UD": f"{boot_ud:#x}ULL",
        # old kernels' io_uring_complete has no cflags field
        "SK_CQE_FLAGS": "args->cflags" if "cflags;" in (_format("io_uring_complete") or "") else "0",
    }
    if _format("io_uring_cqe_overflow"):
        macros["SK_HAVE_OVERFLOW_TP"] = 1
    macros.update({f"SK_OP_{op.name.upper()}": op.opcode for op in _ops.OPS if op.kernel})
    pre = "".join(f"#define {k} {v}\n" for k, v in macros.items())
    return [("<layout>", pre), (str(SDK), SDK.read_text()), (source_name, handler),
            (str(DISPATCH), DISPATCH.read_text())]


def _c_string(name: str) -> str:
    return name.replace("\\", "/").replace('"', "'").replace("\n", " ")


def program_text(parts: list[tuple[str, str]], line_directives: bool = True) -> str:
    out = []
    for name, text in parts:
        if line_directives and name != "<layout>":
            out.append(f'#line 1 "{_c_string(name)}"\n')
        out.append(text if text.endswith("\n") else text + "\n")
    return "".join(out)


def _insn_source(bcc, parts, source_name: str, insn: int) -> int | None:
    """The handler line that compiled to instruction `insn`, from bcc's source-annotated
    dump (DEBUG_SOURCE, which works only without #line directives), or None. The dump
    numbers lines of bcc's rewritten text, so the line is found by its code."""
    with _CapturedStderr() as dump:
        try:
            _compile(bcc, program_text(parts, False), debug=0x8).cleanup()
        except Exception:
            pass
    code = None
    for ln in dump.text.splitlines():
        m = re.match(r"; (.*) // Line\s+\d+", ln)
        if m:
            code = m.group(1).strip()
            continue
        m = re.match(r"\s*(\d+):\s", ln)
        if m and int(m.group(1)) == insn:
            break
    else:
        return None
    handler = dict(parts)[source_name].splitlines()
    for i, ln in enumerate(handler, 1):
        if code and ln.strip() == code:
            return i
    return None


def _failed_insn(log: str) -> int | None:
    last = None
    for ln in log.splitlines():
        if ln.startswith("processed "):
            break
        m = re.match(r"(\d+): \(", ln)
        if m:
            last = int(m.group(1))
    return last


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


TRACEPOINTS = ("io_uring_complete", "io_uring_cqe_overflow")


def _compile(bcc, text: str, debug: int = 0):
    """bcc.BPF without its automatic load-and-attach, which on failure leaves the maps
    it created open until exit; returns the compiled module, maps created. A handler may
    #include files from bpf/handlers/."""
    class Program(bcc.BPF):
        def _trace_autoload(self):
            pass
    return Program(text=text.encode(), debug=debug, cflags=[f"-I{BPF_DIR}", f"-I{BPF_DIR / 'handlers'}"])


def _attach(prog) -> None:
    for tp in TRACEPOINTS:
        name = f"tracepoint__io_uring__{tp}".encode()
        try:
            fn = prog.load_func(name, prog.TRACEPOINT)
        except Exception as exc:
            if "Unknown program" in str(exc):
                continue              # the overflow probe is compiled only where it exists
            raise
        prog.attach_tracepoint(tp=f"io_uring:{tp}".encode(), fn_name=fn.name)


def _compiled(bcc, parts, source_name: str):
    """The compiled module (maps created, nothing loaded), or HandlerCompileError with the
    compiler's words and the handler's line."""
    with _CapturedStderr() as err:
        try:
            return _compile(bcc, program_text(parts))
        except Exception as exc:  # bcc raises bare Exception
            failure = str(exc)
    if "Failed to compile" in failure:
        raise HandlerCompileError("the kernel handler does not compile", source_name, err.text)
    raise HandlerCompileError(f"bcc failed: {failure}", source_name, err.text)


def load(bcc, handler: str, source_name: str, layout: Layout, boot_ud: int):
    """Compile, load and attach; returns the bcc.BPF object. Nothing stays behind when
    any step fails."""
    source_name = _c_string(source_name)
    parts = program_parts(handler, source_name, layout, boot_ud)
    prog = _compiled(bcc, parts, source_name)
    # BPF_PROG_LOAD can fail with EAGAIN right after an io_uring is closed (its pending
    # task_work counts as a pending signal): retry as libbpf does
    for attempt in range(5):
        with _CapturedStderr() as err:
            try:
                _attach(prog)
                return prog
            except Exception as exc:
                failure = str(exc)
        if "Resource temporarily unavailable" in failure and attempt < 4:
            time.sleep(0.05 * (attempt + 1))
            continue
        prog.cleanup()
        if "Failed to load" not in failure:
            raise HandlerCompileError(f"bcc could not attach the program: {failure}",
                                      source_name, err.text)
        log = err.text + "\n" + failure
        if "Argument list too long" in failure:
            # E2BIG: the verifier walked its budget of 1,000,000 instructions (bcc's
            # "at most 4096 insns" is a guess that does not apply to root)
            raise HandlerCompileError(
                "the BPF verifier gave up on the kernel handler: on this kernel it walks more "
                "than 1,000,000 instructions through the program", source_name, "",
                "hint: cut long loops into slices (a NOP the handler pushes to itself) and keep "
                "what a loop carries in map memory (bpf/handlers/http.c does both); "
                "sakura_uring.kernel.verifier_stats() measures the walk")
        line = None
        if _locate(log, source_name)[0] is None and (insn := _failed_insn(err.text)) is not None:
            # libbcc drops BTF line info when it retries a failed load: ask the dump
            line = _insn_source(bcc, parts, source_name, insn)
        raise HandlerCompileError(
            "the BPF verifier refused the kernel handler", source_name, log,
            "hint: keep buffer offsets checked against SK_BUF_SIZE and loops bounded", line=line)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class VerifierStats:
    """The BPF verifier's work on a handler's program, on this kernel."""
    loaded: bool
    processed: int       # instructions walked; Linux gives up past 1,000,000
    states: int          # states it kept for pruning
    peak_states: int
    usec: int            # verification time
    log: str             # its statistics lines (or its refusal)


def verifier_stats(handler, *, layout: Layout | None = None) -> VerifierStats:
    """Load a handler's program with only the verifier's statistics logged (log level 4)
    and return them; nothing is attached, nothing stays loaded. The walk differs between
    kernels (Linux 7.2 walked over six times what 6.18 did through a loop whose values
    were kept in registers), so a handler should leave the budget a wide margin.
    `handler` is C source or a path; `layout` defaults to KernelRing's defaults."""
    from ..bpfenv import bpf_prog_load
    from ..bpfenv import load_bcc
    if isinstance(handler, os.PathLike):
        name, handler = _c_string(str(handler)), Path(handler).read_text()
    else:
        name = "<handler>"
    # KernelRing's defaults: 256 entries, 64 requests of 64 KiB
    layout = layout or Layout(256, Layout.default_cq(256, 64), 64, 65536)
    bcc = load_bcc()
    from bcc.libbcc import lib
    prog = _compiled(bcc, program_parts(handler, name, layout, 1), name)
    try:
        fn = b"tracepoint__io_uring__io_uring_complete"
        start, size = lib.bpf_function_start(prog.module, fn), lib.bpf_function_size(prog.module, fn)
        fd, errno_, log = bpf_prog_load(5, (start, size),           # BPF_PROG_TYPE_TRACEPOINT
                                        license=lib.bpf_module_license(prog.module),
                                        log_level=4, log_size=1 << 16)
    finally:
        prog.cleanup()
    if fd >= 0:
        os.close(fd)

    def num(pattern: str) -> int:
        m = re.search(pattern, log)
        return int(m.group(1)) if m else -1
    return VerifierStats(fd >= 0, num(r"processed (\d+) insns"), num(r"total_states (\d+)"),
                         num(r"peak_states (\d+)"), num(r"verification time (\d+) usec"),
                         log.strip() or os.strerror(errno_))
