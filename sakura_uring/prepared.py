"""Ring.prepare(chain): a chain that owns its tag, slots and buffers on one ring, so a run
is one native call (sk_call_run: lay, submit, reap until it completes) and one result --
no lease, no pool, no per-run Python bookkeeping. Other threads' chains that the call reaps
on the way are handed back and delivered as usual."""
from __future__ import annotations

import errno
import os
import time

from . import params as _params
from ._native import ffi, lib
from .chain import STATX_SIZE, Chain, _check_timeout, _timeout_ns, native_views
from .errors import RingClosed
from .publish import _NOT_LAID
from .reaper import SLICE_NS, TAGS_MAX, copy_out
from .result import ChainResult

_NULL = ffi.NULL
_EBUSY = errno.EBUSY


class Prepared:
    """A chain prepared on a ring (Ring.prepare). run(**values) -> ChainResult; close()
    gives its tag, slots and buffers back (so does the ring's close)."""

    def __init__(self, ops, chain: Chain, timeout: float | None):
        if not isinstance(chain, Chain):
            raise TypeError(f"expected a sakura_uring.Chain, not {type(chain).__name__}")
        self._ops = ops
        core, pools, pub = ops.core, ops.pools, ops.pub
        core.check_open()
        t = chain.timeout if timeout is None else _check_timeout(timeout)
        self._timeout_ns = _timeout_ns(t) if t is not None else 0
        fz = chain._freeze(t is not None)
        pub.validate(fz)
        if fz.cdata is None:
            fz.cdata = native_views(fz)
        self.chain = chain
        self._fz = fz
        while True:                       # wait for room like a blocking publish
            with core.lock:
                core.check_open()
                if pools.room(fz.nslots):
                    lease = pools.lease(fz, None, None)
                    break
            pub.make_progress()
        self._lease = lease
        steps, arena, buf_len, binds = fz.cdata
        nb = len(fz.buffers)
        c = ffi.new("struct sk_call *")
        self._arrays = (ffi.new("int32_t[]", list(lease.slots) or [0]),
                        ffi.new("uint64_t[]", list(lease.buf_addrs) or [0]),
                        ffi.new("int32_t[]", [pools.scratch_idx[k] for k in range(nb)] or [0]),
                        steps, arena, buf_len, binds, lease.keep)
        c.steps, c.n, c.nslots, c.nbufs = steps, fz.nsteps, fz.nslots, nb
        c.arena, c.arena_len, c.nts, c.total = arena, len(fz.arena), fz.ntimeouts, fz.total
        c.slots, c.buf_addr, c.buf_index, c.buf_len = (self._arrays[0], self._arrays[1],
                                                       self._arrays[2], buf_len)
        c.ts, c.binds, c.nbinds, c.tag, c.res = lease.ts, binds, len(fz.binds), lease.tag, lease.res
        self._c = c
        self._core, self._reaper = core, ops.reaper
        self._words = ffi.new("uint64_t[]", max(1, 2 * len(fz.params)))
        # (step, SQE position, buffer, fixed size or 0) of each step whose bytes come back
        self._data_at = tuple((i, fz.step_pos[i], ffi.cast("char *", lease.buf_addrs[b]),
                               STATX_SIZE if is_statx else 0)
                              for i, b, is_statx in fz.data_steps)
        self._others = ffi.new("int *")
        self._closed = False
        ops.reaper.prepared.add(self)

    def __repr__(self) -> str:
        return f"<Prepared {self.chain!r}{' closed' if self._closed else ''}>"

    def run(self, **values) -> ChainResult:
        """Run the chain once (with these values for its Params) and return its result."""
        if self._closed:
            raise RingClosed("this Prepared was closed; prepare the chain again")
        fz = self._fz
        lengths = None
        if fz.params or values:
            varena, lengths = _params.fill(fz, values, self._words)
            vals, vlen = self._words, len(varena)
        else:
            vals, varena, vlen = _params.NO_VALUES, _params.NO_ARENA, 0
        deadline = time.monotonic_ns() + self._timeout_ns if self._timeout_ns else 0
        core, reaper, c, others = self._core, self._reaper, self._c, self._others
        reaper.lead()
        try:
            core.check_open()
            ret = lib.sk_call_run(core.r, c, vals, varena, vlen, deadline, SLICE_NS,
                                  reaper.spin_ns, reaper.tags, TAGS_MAX, others)
            if ret != 1 or others[0]:
                self._finish(ret)
        finally:
            reaper.release()
        res = ffi.unpack(c.res, fz.total)
        datas = {}
        for i, pos, ptr, size in self._data_at:     # copied out before the next run
            r = res[pos]
            if r >= 0:
                datas[i] = ffi.unpack(ptr, size or r)
        if fz.nslots and min(res) < 0:
            reaper.release_unclosed(fz, res, self._lease.slots)
        if core.closing:
            raise RingClosed("the ring was closed before the chain finished")
        return ChainResult(fz, res, datas, lengths)

    def _finish(self, ret: int) -> None:
        """The slow part of a run (caller reaps): see wait_own."""
        if ret in _NOT_LAID:
            raise OSError(-ret, f"the native layer refused the prepared chain: "
                                f"{os.strerror(-ret)}; nothing was laid")
        c = self._c
        try:
            wait_own(self._core, self._reaper, c.tag, c.total, c.res, self._others, ret)
        except BaseException:
            if not self._done(c.res, c.total):
                self._abandon()      # e.g. KeyboardInterrupt between slices: don't wait
            raise

    @staticmethod
    def _done(res, total: int) -> bool:
        return all(v != _PENDING for v in ffi.unpack(res, total))

    def _abandon(self) -> None:
        """The run is still in flight and nobody will wait for it: cancel it and let the
        reaper free the lease when its CQEs arrive (this Prepared is closed)."""
        ops = self._ops
        core = ops.core
        self._closed = True
        ops.reaper.prepared.discard(self)
        ops.reaper.orphans[self._c.tag] = (self._lease, (self._c, self._arrays))
        with core.lock:
            if not core.closing:
                lib.sk_cancel_pending(core.r, self._c.tag, self._fz.total, self._c.res)

    def close(self) -> None:
        """Give the tag, slots and buffers back to the ring's pools."""
        if self._closed:
            return
        ops = self._ops
        self._closed = True
        ops.reaper.prepared.discard(self)
        with ops.core.lock:
            if not ops.core.closed:
                ops.pools.give_back(self._lease)

    def __enter__(self) -> "Prepared":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_PENDING = -2**31          # a result slot no CQE has filled (SK_PENDING in shim.c)


def wait_own(core, reaper, tag: int, total: int, res, others, ret: int) -> None:
    """After a native call that laid chain `tag` and reaped for a slice (ret: 1 it is
    done, 0 not yet, < 0 laid but io_uring_enter failed): deliver the other chains reaped
    on the way, wait out more slices, stop the chain if the ring closes, and raise what
    failed once the chain is done. The caller holds the reaper's lock."""
    err = None
    if ret < 0:              # laid, but io_uring_enter failed: it waits in the SQ
        err = OSError(-ret, f"io_uring_enter: {os.strerror(-ret)}")
        ret = 0
    while True:
        if others[0]:
            reaper.complete(others[0])
            others[0] = 0
        if ret == 1:
            break
        if core.closing:     # close() waits for us: stop the chain
            lib.sk_cancel_pending(core.r, tag, total, res)
        ret = lib.sk_tag_wait(core.r, tag, SLICE_NS, reaper.spin_ns, reaper.tags, TAGS_MAX,
                              others)
        if ret < 0:
            raise OSError(-ret, f"waiting for completions: {os.strerror(-ret)}")
    if err is not None:
        raise err


def run_once(ops, fz, row, lengths) -> ChainResult | None:
    """Ring.run's fast path for a frozen chain without a deadline: lease, lay and reap in
    this thread with no Lease in the reaper's books; None when the pools or the SQ have
    no room now (the caller takes the path that waits for it). An interrupted wait hands
    the chain to the reaper (it is cancelled and completes like any other)."""
    core, pools, reaper = ops.core, ops.pools, ops.reaper
    others = reaper.others
    reaper.lead()
    try:
        with core.lock:
            if core.closing:
                core.check_open()
            if not pools.room(fz.nslots):
                return None
            st = pools.lease(fz, None, None)
            ret = ops.pub.lay_now(fz, st, row)
            if ret in _NOT_LAID:
                pools.give_back(st)
                if ret == -_EBUSY:
                    return None
                ops.pub.refused(ret)
        try:
            ret = lib.sk_tag_wait(core.r, st.tag, SLICE_NS, reaper.spin_ns, reaper.tags,
                                  TAGS_MAX, others)
            if ret != 1 or others[0]:      # not done in one slice, or others were reaped
                wait_own(core, reaper, st.tag, fz.total, st.res, others, ret)
        except BaseException:
            if not Prepared._done(st.res, fz.total):
                st.row = row
                reaper.track(st)       # whoever reaps next completes (and frees) it
                ops.pub.cancel(st)
            raise
    finally:
        reaper.release()
    res = ffi.unpack(st.res, fz.total)
    datas = copy_out(fz, res, st.buf_addrs) if fz.data_steps else {}
    if fz.nslots and not (fz.closes_all and min(res) >= 0):
        reaper.release_unclosed(fz, res, st.slots)
    pools.give_back(st)
    reaper.room_given()
    return ChainResult(fz, res, datas, lengths)
