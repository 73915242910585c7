"""What this kernel's io_uring can do: release, supported opcodes, feature flags."""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

from . import ops as _ops
from ._native import ffi, lib
# can_trace and bpf_atomic_fetch live below everything that loads BPF; named here too
from .bpfenv import (TracingUnavailable, bpf_atomic_fetch, can_trace,  # noqa: F401
                     load_bcc, tracepoint_format)
from .errors import IoUringUnavailable

FEATURES = {
    0: "SINGLE_MMAP", 1: "NODROP", 2: "SUBMIT_STABLE", 3: "RW_CUR_POS",
    4: "CUR_PERSONALITY", 5: "FAST_POLL", 6: "POLL_32BITS", 7: "SQPOLL_NONFIXED",
    8: "EXT_ARG", 9: "NATIVE_WORKERS", 10: "RSRC_TAGS", 11: "CQE_SKIP", 12: "LINKED_FILE",
    13: "REG_REG_RING", 14: "RECVSEND_BUNDLE", 15: "MIN_TIMEOUT", 16: "RW_ATTR",
    17: "NO_IOWAIT",
}


@dataclass(frozen=True)
class KernelProbe:
    release: str                 # uname -r
    version: tuple               # (6, 18, 44)
    opcodes: frozenset           # IORING_OP_* numbers this kernel supports
    last_op: int                 # IORING_OP_LAST as the kernel reports it
    features: frozenset          # IORING_FEAT_* names
    ops: dict                    # sakura_uring op name -> supported?
    io_uring_disabled: str | None
    direct_descriptors: bool     # openat/accept/socket straight into a fixed slot (5.15)

    @property
    def linked_files(self) -> bool:
        """Whether a step may use a file an earlier step of its chain put in a slot: direct
        descriptors, and fixed files looked up when the step runs (FEAT_LINKED_FILE)."""
        return self.direct_descriptors and "LINKED_FILE" in self.features

    def supports(self, name: str) -> bool:
        return self.ops.get(name, False)

    def missing(self) -> dict:
        """Op name -> why it is unavailable here."""
        return {op.name: f"needs Linux {op.since} (IORING_OP {op.opcode}); this is {self.release}"
                for op in _ops.OPS if not self.ops[op.name]}


@functools.lru_cache(maxsize=1)
def probe() -> KernelProbe:
    """Ask the kernel (IORING_REGISTER_PROBE on a throwaway ring). Raises
    IoUringUnavailable, naming the cause and the fix, when io_uring is refused."""
    supported = ffi.new("uint8_t[]", 256)
    last = ffi.new("int *")
    feats = lib.sk_probe(supported, 256, last)
    if feats < 0:
        raise IoUringUnavailable(-feats)
    opcodes = frozenset(i for i in range(256) if supported[i])
    try:
        disabled = open("/proc/sys/kernel/io_uring_disabled").read().strip()
    except OSError:
        disabled = None
    release = os.uname().release
    direct = lib.sk_probe_direct()
    if direct < 0:          # fd 0 closed: 5.15 also brought MKDIRAT
        direct = int(37 in opcodes)
    return KernelProbe(
        release=release, version=_ops.release_tuple(release), opcodes=opcodes,
        last_op=last[0], features=frozenset(n for b, n in FEATURES.items() if feats & (1 << b)),
        ops={op.name: op.opcode in opcodes for op in _ops.OPS}, io_uring_disabled=disabled,
        direct_descriptors=bool(direct))


DIRECT_MISSING = ("passing files between steps needs direct descriptors (openat/accept/socket "
                  "into a fixed file slot, Linux 5.15) looked up when the step runs "
                  "(IORING_FEAT_LINKED_FILE, Linux 5.18); this kernel ({release}) lacks "
                  "{what}: chains that open into slots are refused, chains on plain fds "
                  "(direct=False) work")


def direct_missing(kp: KernelProbe) -> str:
    """Why chains can't pass files between steps here, or "" when they can."""
    if kp.linked_files:
        return ""
    what = ("both" if not kp.direct_descriptors and "LINKED_FILE" not in kp.features else
            "direct descriptors" if not kp.direct_descriptors else "IORING_FEAT_LINKED_FILE")
    return DIRECT_MISSING.format(release=kp.release, what=what)


@dataclass(frozen=True)
class Engine:
    """An execution engine and whether this kernel and process can use it."""
    name: str          # "link" (sakura_uring.Ring) or "kernel" (sakura_uring.kernel.KernelRing)
    available: bool
    reason: str        # why not, naming the fix; "" when available

    def __bool__(self) -> bool:
        return self.available


def _kernel_engine(kp: KernelProbe) -> str:
    """"" when kernel handlers work here, else the first reason they don't."""
    if not can_trace():
        return ("this process has neither CAP_SYS_ADMIN nor CAP_BPF + CAP_PERFMON, which "
                "loading a tracing BPF program needs: run as root with full capabilities, or "
                "grant them (e.g. setcap cap_bpf,cap_perfmon+ep on the interpreter)")
    # The real probe decides (a vendor kernel may carry the features back); the
    # version only explains a refusal.
    stage = ffi.new("int *")
    rc = lib.sk_kr_probe(stage)
    if rc:
        what = {1: "creating a BPF_F_MMAPABLE array map", 2: "mapping it",
                3: "io_uring_setup(NO_MMAP | NO_SQARRAY | SQPOLL) on its pages"}[stage[0]]
        why = os.strerror(-rc)
        if stage[0] == 3 and rc == -22:
            why += (" (this kernel does not accept a ring in non-contiguous memory, as BPF "
                    "map pages are)")
            if kp.version < (6, 6):
                why = (f"this kernel is {kp.release}: rings in BPF map memory need "
                       "IORING_SETUP_NO_MMAP (Linux 6.5) and IORING_SETUP_NO_SQARRAY (Linux 6.6)")
                return why
        return f"{what} failed: {why}"
    if tracepoint_format("io_uring", "io_uring_complete") is None:
        return ("the io_uring:io_uring_complete tracepoint is not visible: mount tracefs "
                "(mount -t tracefs tracefs /sys/kernel/tracing, or `make setup`)")
    try:
        load_bcc()
    except TracingUnavailable as exc:
        return str(exc)
    return ""


@functools.lru_cache(maxsize=1)
def engines() -> dict:
    """Which engines this kernel and process can use: {"link": Engine, "kernel": Engine};
    each unavailable one says exactly why."""
    try:
        kp = probe()
    except IoUringUnavailable as exc:
        return {"link": Engine("link", False, str(exc)),
                "kernel": Engine("kernel", False, str(exc))}
    kernel = _kernel_engine(kp)
    link = direct_missing(kp)
    return {"link": Engine("link", not link, link),
            "kernel": Engine("kernel", not kernel, kernel)}
