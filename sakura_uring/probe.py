"""What this kernel's io_uring can do: release, supported opcodes, feature flags."""
from __future__ import annotations

import functools
import os
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
    return KernelProbe(
        release=release, version=_ops.release_tuple(release), opcodes=opcodes,
        last_op=last[0], features=frozenset(n for b, n in FEATURES.items() if feats & (1 << b)),
        ops={op.name: op.opcode in opcodes for op in _ops.OPS}, io_uring_disabled=disabled)
