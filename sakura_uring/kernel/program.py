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
from ..bpfenv import tracepoint_fields, tracepoint_format
from ..errors import SakuraError
from ..resources import bpf_dir
from .._native import lib as _lib
from .btf import file_offsets

MAX_ARGS = _lib.SK_ARGS
# Past this share of the verifier's 1,000,000-instruction budget a handler is one kernel
# version away from refusal (7.2 walked a loop six times as far as 6.18): load warns.
BUDGET = 1_000_000
WARN_SHARE = 0.5


class VerifierBudgetWarning(UserWarning):
    """The verifier walked more than half its budget to load a handler."""

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
class Source:
    """A handler's C text, the file name messages name, and the argument count it
    declares (SK_NARGS(n) in C, the args of a Python handler; None: undeclared)."""
    name: str
    text: str
    nargs: int | None = None
    arg_names: tuple = ()


_NARGS = re.compile(r"^[ \t]*SK_NARGS\s*\(\s*(\d+)\s*\)", re.M)


def handler_source(handler, name: str | None = None) -> Source:
    """C source text, a path (os.PathLike, or a str without a newline or a brace: C
    source has both), or a Python handler (sakura_uring.kernel.handler)."""
    if callable(getattr(handler, "c_source", None)):     # a Python handler (python.Handler)
        return handler.c_source()
    if isinstance(handler, str) and "\n" not in handler and "{" not in handler:
        if not os.path.isfile(handler):
            raise FileNotFoundError(
                f"handler {handler!r}: no such file. A str without a newline or a brace is "
                f"taken as the path of a handler file (C source has both); pass the source "
                f"text itself, or a pathlib.Path")
        handler = Path(handler)
    if isinstance(handler, os.PathLike):
        name = name or str(handler)
        handler = Path(handler).read_text()
    elif not isinstance(handler, str):
        raise TypeError(f"handler must be C source (str), a path or a Python handler "
                        f"(@sakura_uring.kernel.handler), not {type(handler).__name__}")
    declared = {int(n) for n in _NARGS.findall(handler)}
    if len(declared) > 1:
        raise ValueError(f"the handler declares SK_NARGS more than once, with "
                         f"{sorted(declared)}: say once how many arguments it takes")
    nargs = declared.pop() if declared else None
    if nargs is not None and nargs > MAX_ARGS:
        raise ValueError(f"SK_NARGS({nargs}): a request takes at most {MAX_ARGS} arguments")
    return Source(name or "<handler>", handler, nargs)


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
    # the completed request's kernel pointer, and where its file's length and mode are
    # (sk_file_size); without either, sk_file_size() says -ENOSYS and handlers ask statx
    offsets = file_offsets()
    has_req = "req" in tracepoint_fields("io_uring", "io_uring_complete")
    macros["SK_KREQ"] = "(u64)args->req" if has_req and offsets else "0"
    if offsets:
        macros.update({k: v for k, v in offsets.items() if has_req or k != "SK_KOFF_REQ_FILE"})
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
    # without the handler's own #line directives too (a Python handler's C has them):
    # blank lines in their place keep the numbering
    bare = [(n, re.sub(r"(?m)^[ \t]*#line .*$", "", t)) for n, t in parts]
    with _CapturedStderr() as dump:
        try:
            _compile(bcc, program_text(bare, False), debug=0x8).cleanup()
        except Exception:
            pass
    handler = dict(parts)[source_name].splitlines()
    where: dict[str, int] = {}                # a handler line's code -> its first line
    for i, ln in enumerate(handler, 1):
        where.setdefault(ln.strip(), i)
    # the last handler line whose code came before the instruction: the line itself, or
    # the handler line that called the inlined SDK function the instruction is in
    line = None
    for ln in dump.text.splitlines():
        m = re.match(r"; (.*) // Line\s+\d+", ln)
        if m:
            code = m.group(1).strip()
            if code in where:
                line = where[code]
            continue
        m = re.match(r"\s*(\d+):\s", ln)
        if m and int(m.group(1)) == insn:
            break
    else:
        return None
    return None if line is None else _directed(handler, line)


def _directed(text: list[str], i: int) -> int:
    """Line i of a handler's text as its own #line directives number it (a Python handler's
    C names the Python lines), or i when it has none before line i."""
    for j in range(i - 1, 0, -1):
        m = re.match(r'\s*#line (\d+)', text[j - 1])
        if m:
            return int(m.group(1)) + (i - j - 1)
    return i


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
    return Program(text=text.encode(), debug=debug,
                   cflags=[f"-I{BPF_DIR}", f"-I{BPF_DIR / 'handlers'}",
                           # a misspelt SDK call is an error that names it, not a call to
                           # nothing that the BPF backend turns into "jump out of range"
                           "-Werror=implicit-function-declaration"])


def _sdk_names() -> list[str]:
    return sorted(set(re.findall(r"\b(sk_[a-z0-9_]+)\s*\(", SDK.read_text()))
                  - {n for n in re.findall(r"\b(sk__[a-z0-9_]+)", SDK.read_text())})


def _undeclared(log: str) -> str | None:
    """'the handler calls sk_fnish(), which is declared nowhere (did you mean sk_finish?)'"""
    import difflib
    m = re.search(r"implicit declaration of function '(\w+)'", log)
    if not m:
        return None
    name = m.group(1)
    close = difflib.get_close_matches(name, _sdk_names(), n=1)
    hint = f" (did you mean {close[0]}?)" if close else " (the SDK's functions: bpf/sakura.h)"
    return f"the kernel handler calls {name}(), which is declared nowhere{hint}"


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
        raise HandlerCompileError(_undeclared(err.text) or "the kernel handler does not compile",
                                  source_name, err.text)
    raise HandlerCompileError(f"bcc failed: {failure}", source_name, err.text)


def _walked(prog, source_name: str) -> int | None:
    """How far the verifier walked the dispatch program (its completion probe), with a
    VerifierBudgetWarning past WARN_SHARE of the budget."""
    import warnings
    from ..bpfenv import bpf_prog_verified_insns
    fn = prog.funcs.get(b"tracepoint__io_uring__io_uring_complete")
    walked = bpf_prog_verified_insns(fn.fd) if fn is not None else None
    if walked is not None and walked > WARN_SHARE * BUDGET:
        warnings.warn(VerifierBudgetWarning(
            f"{source_name}: the BPF verifier walked {walked:,} instructions to load this "
            f"handler, {walked / BUDGET:.0%} of its budget of {BUDGET:,}; another kernel may "
            f"walk further and refuse it. Cut long loops into slices (a NOP the handler "
            f"pushes to itself) and keep what a loop carries in map memory "
            f"(docs/kernel-handlers.md, 'Verifier budget')"), stacklevel=4)
    return walked


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
                prog.sk_verified_insns = _walked(prog, source_name)
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
                "hint: cut long loops into slices (a NOP the handler pushes to itself), let a "
                "word-at-a-time helper (sk_count_byte, sk_find_byte, sk_compare) take 8 bytes "
                "per iteration, and keep what a loop carries in map memory (bpf/handlers/http.c "
                "does both); sakura_uring.kernel.verifier_stats() measures the walk")
        line = None
        if _locate(log, source_name)[0] is None and (insn := _failed_insn(err.text)) is not None:
            # libbcc drops BTF line info when it retries a failed load: ask the dump
            line = _insn_source(bcc, parts, source_name, insn)
        jumps = re.search(r"sequence of (\d+) jumps is too complex", log)
        if jumps:
            raise HandlerCompileError(
                f"the BPF verifier gave up on the kernel handler: the sequence of "
                f"{jumps.group(1)} jumps is too complex", source_name, log,
                "hint: the verifier keeps one pending branch for every data-dependent branch "
                "of every loop iteration it walks, and stops at 8,192 however well the loop is "
                "bounded. Cut the loop into slices of at most a few hundred iterations (push "
                "sk_nop(e, STEP) to go on in the next completion), or let a word-at-a-time "
                "helper (sk_count_byte, sk_find_byte, sk_compare) take 8 bytes per iteration",
                line=line)
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
    `handler` is what KernelRing takes (C source, a path, a Python handler); `layout`
    defaults to KernelRing's defaults."""
    from ..bpfenv import bpf_prog_load
    from ..bpfenv import load_bcc
    src = handler_source(handler)
    name, handler = _c_string(src.name), src.text
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
