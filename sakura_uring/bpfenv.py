"""The BPF environment, below everything that loads BPF (probe, kernel, trace): bcc and
the kernel headers it compiles against, tracefs and the tracepoint formats, the
capabilities, and raw bpf(BPF_PROG_LOAD, BPF_OBJ_GET_INFO_BY_FD) for questions bcc can't
ask. Imports nothing of
the package but errors and resources; every failure names the fix."""
from __future__ import annotations

import functools
import glob
import os
import re
import subprocess
import time
from pathlib import Path

from .errors import SakuraError
from .resources import checkout

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39
# where tracefs shows the events (a test points this at an edited copy of the formats)
EVENT_ROOTS = [Path("/sys/kernel/tracing/events"), Path("/sys/kernel/debug/tracing/events")]


class TracingUnavailable(SakuraError):
    """bcc can't trace here; the message says why and what to do."""


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


def kernel_headers() -> str | None:
    """The header tree bcc compiles against: $BCC_KERNEL_SOURCE, else a checkout's merged
    Debian tree (`make setup` builds .cache/kernel-headers), else None (bcc then looks in
    /lib/modules/$(uname -r)/build itself)."""
    if os.environ.get("BCC_KERNEL_SOURCE"):
        return os.environ["BCC_KERNEL_SOURCE"]
    root = checkout()
    tree = root / ".cache" / "kernel-headers" if root else None
    return str(tree) if tree and (tree / ".done").exists() else None


def _mount_tracing() -> None:
    """Mount tracefs and debugfs where they are missing (bcc reads both)."""
    for fstype, where, probe in (("tracefs", "/sys/kernel/tracing", "events"),
                                 ("debugfs", "/sys/kernel/debug", "tracing")):
        if os.path.exists(os.path.join(where, probe)) or not os.path.isdir(where):
            continue
        subprocess.run(["mount", "-t", fstype, fstype, where], capture_output=True)


def load_bcc():
    """Import bcc with its environment in place; returns the bcc module."""
    if os.geteuid() != 0:
        raise TracingUnavailable("tracing needs root (CAP_BPF and CAP_PERFMON); run as root")
    hdrs = kernel_headers()
    if hdrs is None and not os.path.exists(f"/lib/modules/{os.uname().release}/build"):
        raise TracingUnavailable(
            "bcc needs kernel headers and this kernel has none: run `make setup` in a checkout "
            "(it merges Debian's linux-headers-*-common and -amd64 under .cache/) or set "
            "BCC_KERNEL_SOURCE to such a tree")
    if hdrs:
        os.environ["BCC_KERNEL_SOURCE"] = hdrs
    _mount_tracing()
    if not os.path.isdir("/sys/kernel/debug/tracing") and not glob.glob("/sys/kernel/tracing/events"):
        raise TracingUnavailable("tracefs is not mounted and could not be: mount -t tracefs tracefs "
                                 "/sys/kernel/tracing and mount -t debugfs debugfs "
                                 "/sys/kernel/debug (or run `make setup`)")
    try:
        import bcc
    except ImportError:
        raise TracingUnavailable(
            "the bcc Python module is missing: apt-get install python3-bpfcc, then `make setup` "
            "(it links Debian's bcc package into the venv)") from None
    return bcc


def tracepoint_format(category: str, event: str) -> str | None:
    """The tracefs format of category:event, or None when this kernel has no such event."""
    for root in EVENT_ROOTS:
        try:
            return (root / category / event / "format").read_text()
        except OSError:
            continue
    return None


def tracepoint_fields(category: str, event: str) -> set[str]:
    """The field names of an event's format (empty when the event doesn't exist)."""
    fmt = tracepoint_format(category, event) or ""
    return set(re.findall(r"field:[^;]*?(\w+)(?:\[\w*\])?;", fmt))


def _sys_bpf(cmd: int, attr) -> tuple[int, int]:
    """bpf(cmd, attr, sizeof attr): (its return value, errno)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.syscall(321, cmd, attr, len(attr))     # SYS_bpf
    return rc, 0 if rc >= 0 else ctypes.get_errno()


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
    for _ in range(5):
        fd, err = _sys_bpf(5, attr)                 # BPF_PROG_LOAD
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


def bpf_prog_verified_insns(prog_fd: int) -> int | None:
    """How many instructions the verifier walked to load the program `prog_fd`
    (bpf_prog_info.verified_insns, Linux 5.16+), or None where the kernel does not say."""
    import ctypes
    import struct
    info = ctypes.create_string_buffer(232)          # sizeof(struct bpf_prog_info), 6.x
    attr = ctypes.create_string_buffer(struct.pack("<IIQ", prog_fd, len(info),
                                                   ctypes.addressof(info)), 16)
    if _sys_bpf(15, attr)[0] < 0:                    # BPF_OBJ_GET_INFO_BY_FD
        return None
    got = struct.unpack_from("<I", attr.raw, 4)[0]   # the kernel writes back the size it filled
    if got < 220:
        return None
    return struct.unpack_from("<I", info.raw, 216)[0] or None
