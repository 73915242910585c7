"""What this kernel's io_uring can do: release, supported opcodes, feature flags."""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

from . import ops as _ops
from ._native import ffi, lib
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


TRACEPOINT_DIRS = ("/sys/kernel/tracing/events/io_uring/io_uring_complete",
                   "/sys/kernel/debug/tracing/events/io_uring/io_uring_complete")
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


def can_trace() -> bool:
    """Whether this process may load tracing BPF programs: CAP_SYS_ADMIN, or CAP_BPF and
    CAP_PERFMON, in its effective set."""
    caps = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
    except OSError:
        pass
    return bool(caps >> CAP_SYS_ADMIN & 1 or (caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1))


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
    if not any(os.path.isdir(d) for d in TRACEPOINT_DIRS):
        return ("the io_uring:io_uring_complete tracepoint is not visible: mount tracefs "
                "(mount -t tracefs tracefs /sys/kernel/tracing, or `make setup`)")
    from .trace.bccenv import TracingUnavailable, load_bcc
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


def bpf_prog_load(prog_type: int, insns, *, license: bytes = b"GPL", log_level: int = 0,
                  log_size: int = 0) -> tuple[int, int, str]:
    """bpf(BPF_PROG_LOAD) with nothing but instructions: (fd or -1, errno, verifier log).
    `insns` is bytes or (address, byte length) of instructions already relocated (bcc's).
    Retries the EAGAIN a load gets right after a ring closed (its pending task_work)."""
    import ctypes
    import struct
    if isinstance(insns, bytes):
        keep = ctypes.create_string_buffer(insns, len(insns))
        addr, size = ctypes.addressof(keep), len(insns)
    else:
        addr, size = insns
    lic = ctypes.create_string_buffer(license)
    log = ctypes.create_string_buffer(log_size) if log_size else None
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level,
    # log_size, log_buf (the rest zero)
    attr = ctypes.create_string_buffer(struct.pack(
        "<IIQQIIQ", prog_type, size // 8, addr, ctypes.addressof(lic), log_level if log else 0,
        log_size, ctypes.addressof(log) if log else 0), 128)
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(5):
        fd = libc.syscall(321, 5, attr, 128)        # SYS_bpf, BPF_PROG_LOAD
        err = 0 if fd >= 0 else ctypes.get_errno()
        if err != 11:
            break
        time.sleep(0.05)
    return fd, err, log.value.decode(errors="replace") if log else ""


@functools.lru_cache(maxsize=1)
def bpf_atomic_fetch() -> bool:
    """Whether the BPF verifier takes atomics that return the old value (BPF_FETCH,
    cmpxchg: Linux 5.12). LLVM emits them for a __sync_fetch_and_add whose result is
    used; a kernel without them refuses the whole program ("BPF_STX uses reserved
    fields"). Asked of the kernel with a four-instruction socket filter."""
    import struct
    # r1 = 0; *(u64 *)(r10 - 8) = r1; r2 = 1;
    # r2 = atomic_fetch_add((u64 *)(r10 - 8), r2); r0 = 0; exit
    insns = b"".join(struct.pack("<BBhi", code, regs, off, imm) for code, regs, off, imm in (
        (0xb7, 0x01, 0, 0), (0x7b, 0x1a, -8, 0), (0xb7, 0x02, 0, 1),
        (0xdb, 0x2a, -8, 0x01), (0xb7, 0x00, 0, 0), (0x95, 0x00, 0, 0)))
    fd, _, _ = bpf_prog_load(1, insns)                  # a socket filter
    if fd >= 0:
        os.close(fd)
    return fd >= 0
