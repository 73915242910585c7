"""Where a chain is laid into the ring: checked against this ring (size, slots, the
kernel's opcodes, its registered files), given its share of the pools (a Lease), and laid
into the SQ by one native call (sk_submit_chain) -- all of it or nothing."""
from __future__ import annotations

import errno
import os
import time
import weakref

from . import ops as _ops
from . import params as _params
from ._native import ffi, lib
from .chain import Chain, Frozen, _check_timeout, _timeout_ns, native_views
from .core import RingCore
from .errors import ChainError, RingFull, UnsupportedOperation
from .pools import Lease, Pools, _next_pow2
from .probe import direct_missing, probe
from .reaper import Reaper

_NULL = ffi.NULL
# sk_submit_chain's "nothing was laid" answers
_NOT_LAID = (-errno.EBUSY, -errno.EINVAL, -errno.EEXIST, -errno.ERANGE)


class Publisher:
    def __init__(self, owner, core: RingCore, pools: Pools, reaper: Reaper, sq_entries: int):
        self._owner = weakref.ref(owner)         # the Ring (its Fixed handles name it)
        self._core = core
        self._pools = pools
        self._reaper = reaper
        self._sq_entries = sq_entries
        self._kernel = probe()
        self.supported = self._kernel.opcodes   # a test narrows it to fake an old kernel

    def publish(self, chain: Chain, timeout, block: bool, future=None, aio=None,
                values=None) -> Lease:
        """Lay `chain`; block=True waits for room, block=False raises RingFull."""
        fz, row, deadline = self._checked(chain, timeout, values)
        while True:
            st = self._try(fz, row, deadline, future, aio)
            if st is not None:
                break
            if not block:
                raise RingFull(f"no room for the chain now ({len(self._reaper.pending)} chains "
                               f"in flight, {len(self._pools.free_slots)} free slots)")
            self.make_progress()
        if future is not None:
            self._reaper.start_completer()
        return st

    def offer(self, chain: Chain, timeout, aio, values=None) -> Lease | None:
        """Lay `chain` if there is room now, else None (run_async retries after the next
        completion: no exception per refusal, whose traceback cycles the GC must find)."""
        fz, row, deadline = self._checked(chain, timeout, values)
        return self._try(fz, row, deadline, None, aio)

    def _checked(self, chain: Chain, timeout, values):
        """The chain frozen and checked against this ring, its values, its deadline."""
        if not isinstance(chain, Chain):
            raise TypeError(f"expected a sakura_uring.Chain, not {type(chain).__name__}")
        self._core.check_open()
        t = chain.timeout if timeout is None else _check_timeout(timeout)
        fz = chain._freeze(t is not None)
        self.validate(fz)
        if fz.cdata is None:
            fz.cdata = native_views(fz)
        row = None
        if isinstance(values, _params.Rows):
            row = values               # built once by a caller that retries (run_async)
        elif values or fz.params:
            row = _params.row(fz, values or {})
        return fz, row, (time.monotonic_ns() + _timeout_ns(t) if t is not None else 0)

    def _try(self, fz: Frozen, row, deadline: int, future, aio) -> Lease | None:
        core = self._core
        with core.lock:
            core.check_open()
            if self._pools.room(fz.nslots):
                return self.lay(fz, deadline, future, aio, row)
        return None

    def row_for(self, chain: Chain, timeout, values: dict):
        """A chain's values checked once (params.Rows), for a caller that may publish the
        chain several times before it fits (run_async waiting for room)."""
        if not isinstance(chain, Chain):
            raise TypeError(f"expected a sakura_uring.Chain, not {type(chain).__name__}")
        t = chain.timeout if timeout is None else _check_timeout(timeout)
        return _params.row(chain._freeze(t is not None), values)

    def validate(self, fz: Frozen) -> None:
        if fz.total > self._sq_entries:
            raise ChainError(f"the chain needs {fz.total} SQ entries ({fz.nsteps} steps, "
                             f"{fz.ntimeouts} linked timeouts) but the ring has "
                             f"{self._sq_entries}: use Ring(entries={_next_pow2(fz.total)}) or more")
        free = self._pools.chain_slots()
        if fz.nslots > free:
            raise ChainError(f"the chain opens {fz.nslots} files at once but the ring has "
                             f"{free} slots for chains: pass Ring(slots=...) larger")
        if fz.nslots and not self._kernel.linked_files:
            raise UnsupportedOperation(direct_missing(self._kernel), engine="link")
        missing = fz.opcodes - self.supported
        if missing:
            op = _ops.BY_OPCODE[min(missing)]
            raise UnsupportedOperation(
                f"{op.name} (IORING_OP {op.opcode}) needs Linux {op.since}; this kernel "
                f"({self._kernel.release}) does not support it", op=op.name)
        for h in fz.ring_slots:
            if h.ring is not self._owner():
                raise ChainError(f"{h!r} belongs to another ring")
            if not self._pools.holds(h):
                raise ChainError(f"{h!r} was unregistered")

    def lay(self, fz: Frozen, deadline: int, future, aio, row=None) -> Lease | None:
        """Lease the chain its tag, slots and buffers and lay it (caller holds the lock).
        None: the SQ has no room yet. If anything fails before the kernel has the chain,
        the lease goes back."""
        pools = self._pools
        st = pools.lease(fz, future, aio)
        try:
            self._reaper.track(st)
            if row is not None:
                st.row = row           # the kernel reads the values arena: keep it alive
        except BaseException:       # e.g. KeyboardInterrupt: nothing was laid
            self._unlay(st)
            raise
        # nothing between the try and the call can raise, so the kernel has the chain
        # exactly when the reaper's pending does (an exception after the call leaves it to
        # complete)
        ret = self.lay_now(fz, st, row, deadline)
        if ret >= 0:
            return st
        if ret in _NOT_LAID:
            self._unlay(st)
            if ret == -errno.EBUSY:   # the SQ has no room yet (SQPOLL hasn't consumed it)
                return None
        self.refused(ret)
        return None   # not reached

    def lay_now(self, fz: Frozen, st: Lease, row, deadline: int = 0) -> int:
        """The one native call that lays a leased chain (caller holds the lock): its
        answer, >= 0 laid, _NOT_LAID nothing laid, else laid but io_uring_enter failed."""
        pools = self._pools
        steps, arena, buf_len, binds = fz.cdata
        if row is None:
            vals, varena, varena_len = _params.NO_VALUES, _params.NO_ARENA, 0
        else:
            vals, varena, varena_len = row.words, row.arena, row.arena_len
        return lib.sk_submit_chain(
            self._core.r, steps, fz.nsteps, fz.nslots, pools.scratch_slots, len(fz.buffers),
            pools.scratch_addr, pools.scratch_idx, buf_len, arena, len(fz.arena), st.ts,
            fz.ntimeouts, deadline, st.tag, fz.total, st.res, binds, len(fz.binds), vals,
            varena, varena_len)

    @staticmethod
    def refused(ret: int) -> None:
        """Raise what a failed sk_submit_chain means (not -EBUSY: that is "wait")."""
        if ret == -errno.ERANGE:
            raise ChainError("the native layer refused the chain: a step names a slot, "
                             "buffer or arena offset outside what the chain was given. "
                             "This is a bug in sakura_uring; nothing was laid")
        # else: laid, but io_uring_enter failed; it stays in the SQ for the next enter
        raise OSError(-ret, f"io_uring_enter: {os.strerror(-ret)}")

    def _unlay(self, st: Lease) -> None:
        self._reaper.untrack(st)
        self._pools.give_back(st)

    def make_progress(self) -> None:
        """Free some room: reap if nobody else does, else wait for whoever does."""
        core = self._core
        if not self._reaper.pending:
            # only the SQ can be short now: the SQPOLL thread frees it without us
            if core.sqpoll:
                with core.lock:
                    if not core.closing:
                        lib.sk_sq_wakeup(core.r)     # it may sleep with the SQ full
                time.sleep(0.0001)
                return
            raise ChainError("the ring has no room for this chain and nothing in flight "
                             "would free any (slots held by register_file?)")
        self._reaper.reap_or_follow(lambda: core.closing, 10_000_000, once=True)

    def cancel(self, st: Lease) -> None:
        core = self._core
        with core.lock:
            if not st.done and not core.closing:
                lib.sk_cancel_pending(core.r, st.tag, st.fz.total, st.res)
