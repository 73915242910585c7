"""ChainResult / StepResult: a completed chain turned back into Python values."""
from __future__ import annotations

import errno
import os
import struct
from typing import NamedTuple

from .chain import Step
from .errors import StepFailed, StepTimedOut, describe_errno

_ECANCELED = -errno.ECANCELED
_STATX = struct.Struct("<IIQIIIHHQQQQ" + "qIi" * 4 + "IIII")


class Statx(NamedTuple):
    mask: int
    blksize: int
    nlink: int
    uid: int
    gid: int
    mode: int
    ino: int
    size: int
    blocks: int
    atime_ns: int
    btime_ns: int
    ctime_ns: int
    mtime_ns: int
    dev_major: int
    dev_minor: int

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Statx":
        v = _STATX.unpack_from(raw)
        ts = [v[12 + 3 * i] * 1_000_000_000 + v[13 + 3 * i] for i in range(4)]
        return cls(v[0], v[1], v[3], v[4], v[5], v[6], v[8], v[9], v[10],
                   ts[0], ts[1], ts[2], ts[3], v[26], v[27])


class StepResult:
    """What one step returned.

    res    the CQE result: >= 0 on success (bytes moved, an fd, 0), -errno on failure
    error  None, or an OSError carrying the errno (TimeoutError when its timeout fired,
           whatever the interrupted call returned; kernel-internal errnos such as
           ERESTARTSYS 512 are mapped to the errno a user can act on, EINTR)
    data   bytes for read/recv/statx steps that succeeded, else None
    short  a read/write/recv/send moved fewer bytes than asked
    exact  a short result is a failure for this step (exact reads, writes, waitall recvs)
    broke_chain  this step's short result cancelled the rest of a Link.SOFT chain
    """
    __slots__ = ("index", "op", "res", "error", "data", "short", "exact", "broke_chain",
                 "timed_out")

    def __init__(self, index: int, op: str, res: int, data: bytes | None = None,
                 short: bool = False, timed_out: bool = False, exact: bool = False):
        self.index = index
        self.op = op
        self.res = res
        self.data = data
        self.short = short
        self.exact = exact
        self.broke_chain = False
        self.timed_out = timed_out
        self.error: OSError | None
        if timed_out:
            how = "" if res == _ECANCELED else \
                f" (the interrupted call returned {describe_errno(-res)[1]})"
            self.error = TimeoutError(errno.ETIME, f"step {index} ({op}) timed out{how}")
        elif res < 0:
            err, text = describe_errno(-res)
            self.error = OSError(err, f"step {index} ({op}): {text}")
        else:
            self.error = None

    @property
    def ok(self) -> bool:
        return self.error is None and not (self.short and self.exact)

    @property
    def stat(self) -> Statx | None:
        """Parsed statx fields (statx steps only)."""
        if self.op != "statx" or self.data is None:
            return None
        return Statx.from_bytes(self.data)

    def __repr__(self) -> str:
        extra = " short" if self.short else ""
        if self.error is not None:
            return f"<StepResult {self.index} {self.op} error={self.error.errno}{extra}>"
        n = "" if self.data is None else f" data={len(self.data)}B"
        return f"<StepResult {self.index} {self.op} res={self.res}{n}{extra}>"


class ChainResult:
    """The outcome of a whole chain: one StepResult per step, in order.

    Built lazily from the raw CQE results: a caller that only checks `.ok` or reads one
    step's data pays for nothing else."""
    __slots__ = ("_fz", "_vals", "_datas", "_steps", "_lengths")

    def __init__(self, fz, vals: list, datas: dict, lengths: dict | None = None):
        self._fz = fz          # chain.Frozen: where each step's result sits in `vals`
        self._vals = vals      # raw CQE results, in SQE order (timeouts included)
        self._datas = datas    # step index -> bytes
        self._lengths = lengths  # step -> the length this run asked for (Params), or None
        self._steps: list[StepResult] | None = None

    def _length(self, i: int) -> int:
        """What step i was asked to move in this run."""
        lengths = self._lengths
        if lengths is not None and i in lengths:
            return lengths[i]
        return self._fz.steps[i].length

    @property
    def steps(self) -> list[StepResult]:
        if self._steps is None:
            fz, vals = self._fz, self._vals
            out = []
            prev = None
            soft = fz.links
            sized_exact = {step for step, _, exact in fz.sized if exact}
            for i, info in enumerate(fz.steps):
                r = vals[fz.step_pos[i]]
                tp = fz.timeout_pos[i]
                # A linked timeout that did not fire completes with -ECANCELED. One that
                # fired gives -ETIME when it cancelled the step, or the cancel's own error
                # (-EALREADY, -ENOENT) when the step was running in an io-wq worker; the
                # step then returns what the interrupted call gave (EINTR, ERESTARTSYS...).
                timed_out = tp >= 0 and vals[tp] != _ECANCELED and r < 0
                short = 0 <= r < self._length(i)
                sr = StepResult(i, info.op.name, r, self._datas.get(i), short, timed_out,
                                i in fz.exact or i in sized_exact)
                if (prev is not None and prev.short and prev.exact and r == _ECANCELED
                        and soft[i - 1] == 1):
                    prev.broke_chain = True
                out.append(sr)
                prev = sr
            self._steps = out
        return self._steps

    @property
    def timed_out(self) -> bool:
        return any(s.timed_out for s in self.steps)

    @property
    def ok(self) -> bool:
        if self._steps is None:
            vals = self._vals
            if min(vals) >= 0:   # fast path: every CQE succeeded, nothing was cancelled
                fz = self._fz
                for pos, length in fz.exact_pos:
                    if vals[pos] < length:
                        return False
                for step, _, exact in fz.sized:
                    if exact and vals[fz.step_pos[step]] < self._length(step):
                        return False
                return True
        return self.failed_step is None

    @property
    def failed_step(self) -> StepResult | None:
        """The first step that failed (an error, or a short result where it must be whole)."""
        for s in self.steps:
            if not s.ok:
                return s
        return None

    def __getitem__(self, key) -> StepResult:
        if isinstance(key, Step):
            if key.index is None or key.chain is not self._fz.chain:
                raise KeyError(f"{key!r} is not a step of this chain")
            return self.steps[key.index]
        return self.steps[key]

    def data(self, key) -> bytes | None:
        """Bytes a read/recv/statx step produced (fast: builds no StepResult)."""
        idx = key.index if isinstance(key, Step) else key
        return self._datas.get(idx)

    def __len__(self) -> int:
        return len(self._fz.steps)

    def __iter__(self):
        return iter(self.steps)

    def raise_for_error(self) -> "ChainResult":
        if self.ok:
            return self
        s = self.failed_step
        assert s is not None            # not ok: some step failed
        if s.timed_out and s.error is not None:
            raise StepTimedOut(errno.ETIME, str(s.error.strerror), s)
        if s.error is None:
            then = (", so the steps after it were cancelled (a short transfer breaks a "
                    "linked chain)" if s.broke_chain else "")
            raise StepFailed(errno.EIO if s.op == "write" else errno.ECANCELED,
                             f"step {s.index} ({s.op}) moved {s.res} bytes, fewer than the "
                             f"{self._length(s.index)} it must{then}", s)
        raise StepFailed(s.error.errno or errno.EIO, str(s.error.strerror), s)

    def __repr__(self) -> str:
        if self.ok:
            return f"<ChainResult {len(self)} steps, ok>"
        f = self.failed_step
        assert f is not None
        return f"<ChainResult {len(self)} steps, failed at step {f.index} ({f.op})>"
