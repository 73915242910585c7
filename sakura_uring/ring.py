"""Ring: the shared submission/completion queue (Sakura Call's request queue).

Where things happen:
  Ring._publish   a frozen chain is given slots, buffers and a tag, then laid into the SQ
                  by one native call (sk_submit_chain) -- all of it or nothing
  Ring._reap      one native call (sk_reap) consumes a batch of CQEs into per-chain arrays
                  and returns the chains that finished
  Ring._complete  a finished chain's raw results become a ChainResult; its slots, buffers
                  and tag go back to the pools

Any thread that waits for a result reaps (leader/follower on `_reap_lock`), so a lone
`run()` never hops threads; Futures from `submit()` are completed by a helper thread that
exists only while such Futures are pending; asyncio is woken by an eventfd.
"""
from __future__ import annotations

import errno
import os
import resource
import threading
import time
from typing import Any
from collections import deque
from concurrent.futures import Future

from . import fork as _fork
from . import ops as _ops
from ._native import ffi, lib
from .aio import LoopBridge, RingOps
from .chain import (_KEY, MAX_FD, MAX_STEPS, STATX_SIZE, Chain, Fixed, Frozen, _check_bool,
                    _check_int, _check_timeout, _timeout_ns)
from .errors import (ChainError, InheritedAfterFork, IoUringUnavailable, RingClosed, RingFull,
                     UnsupportedOperation)
from .probe import direct_missing, probe
from .result import ChainResult

SETUP_SQPOLL = 1 << 1
SQ_NEED_WAKEUP = 1 << 0
SQ_CQ_OVERFLOW = 1 << 1
TAGS_MAX = 256
SLICE_NS = 50_000_000          # longest a waiter stays in the kernel before re-checking


def _int(name: str, value, lo: int, hi: int) -> int:
    return _check_int(name, value, lo, hi, ValueError)
_NULL = ffi.NULL
_EMPTY = ()


class _Inflight:
    """One chain between publish and completion."""
    __slots__ = ("fz", "tag", "slots", "pool_bufs", "buf_addrs", "keep", "res",
                 "result", "error", "done", "future", "aio")

    def __init__(self, fz, tag, slots, pool_bufs, buf_addrs, keep, res):
        self.fz = fz
        self.tag = tag
        self.slots = slots
        self.pool_bufs = pool_bufs
        self.buf_addrs = buf_addrs
        self.keep = keep            # cdata the kernel may still read (timespecs, buffers)
        self.res = res
        self.result = None
        self.error = None
        self.done = False
        self.future = None
        self.aio = None


class Ring:
    """An io_uring instance with a registered file table and buffer pool.

        with Ring(sqpoll=True) as ring:
            result = ring.run(chain)

    entries      SQ size; a chain needs one entry per step (two with a timeout)
    sqpoll       a kernel thread (iou-sqp-PID) consumes the SQ: no system call to submit
    sq_idle_ms   how long that thread polls before it sleeps (it is woken when needed)
    cq_entries   CQ size (default 2 * entries); overflow is handled without loss
    slots        size of the sparse registered file table (direct descriptors)
    buffers      registered buffers of buffer_size bytes each, used by read/recv steps;
                 a longer read gets a private buffer instead
    spin_us      how long a waiter polls the CQ before sleeping in the kernel
    sq_cpu       pin the SQPOLL thread to this CPU (keep it off the application's core)
    """

    def __init__(self, entries: int = 256, *, sqpoll: bool = False, sq_idle_ms: int = 1000,
                 cq_entries: int | None = None, slots: int | None = None,
                 buffers: int | None = None, buffer_size: int = 65536,
                 spin_us: int | None = None, sq_cpu: int | None = None):
        _int("entries", entries, 1, 32768)
        _int("sq_idle_ms", sq_idle_ms, 0, 2**31 - 1)
        _check_bool("sqpoll", sqpoll)
        cq = 2 * _next_pow2(entries) if cq_entries is None else _int("cq_entries", cq_entries, 1, 65536)
        if cq < _next_pow2(entries):
            raise ValueError(f"cq_entries ({cq}) must be at least entries ({entries})")
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        slots = min(entries, nofile) if slots is None else _int("slots", slots, 0, 1 << 20)
        if slots > nofile:
            raise ValueError(f"slots={slots} exceeds RLIMIT_NOFILE ({nofile}), which also caps "
                             f"the registered file table; raise it (ulimit -n) or ask for fewer")
        buffers = min(entries, 64) if buffers is None else _int("buffers", buffers, 0, 16384)
        _int("buffer_size", buffer_size, 1, 1 << 30)
        if sq_cpu is not None:
            if not sqpoll:
                raise ValueError("sq_cpu pins the SQPOLL thread: it needs sqpoll=True")
            _int("sq_cpu", sq_cpu, 0, (os.cpu_count() or 1) - 1)
        spin_us = (20 if sqpoll else 0) if spin_us is None else _int("spin_us", spin_us, 0, 10**6)

        max_chains = _next_pow2(cq)
        err = ffi.new("int *")
        r = lib.sk_ring_new(entries, cq if cq_entries is not None else 0,
                            SETUP_SQPOLL if sqpoll else 0, sq_idle_ms, slots, buffers,
                            buffer_size, max_chains, -1 if sq_cpu is None else sq_cpu, err)
        if r == _NULL:
            e = -err[0]
            if e == errno.EMFILE:
                raise ValueError(f"slots={slots}: the kernel refused a file table that large "
                                 f"(RLIMIT_NOFILE)")
            raise IoUringUnavailable(e, "io_uring_setup" if e != errno.ENOMEM else
                                     "io_uring setup or buffer registration")
        self._r = r
        info = ffi.new("struct sk_info *")
        lib.sk_ring_info(r, info)
        self.sq_entries = info.sq_entries
        self.cq_entries = info.cq_entries
        self.features = info.features
        self.sqpoll = sqpoll
        self.slots = slots
        self.buffers = buffers
        self.buffer_size = buffer_size
        self.fd = info.fd
        self._spin_ns = spin_us * 1000
        self._kernel = probe()
        self._supported = self._kernel.opcodes
        self._free_tags = list(range(max_chains, 0, -1))
        self._free_slots = list(range(slots - 1, -1, -1))
        self._free_bufs = list(range(buffers - 1, -1, -1))
        self._buf_addr = [int(ffi.cast("uintptr_t", lib.sk_buffer_addr(r, i)))
                          for i in range(buffers)]
        self._registered: dict[int, Fixed] = {}
        self._generation = 0                   # of register_file handles
        self._pending: dict[int, _Inflight] = {}
        self._tags = ffi.new("uint32_t[]", TAGS_MAX)
        self._tag_arrays = [_EMPTY] * (max_chains + 1)
        # scratch for sk_submit_chain (read only during the call, which holds _lock)
        self._scratch_slots = ffi.new("int32_t[]", max(slots, 1))
        self._scratch_addr = ffi.new("uint64_t[]", MAX_STEPS)
        self._scratch_idx = ffi.new("int32_t[]", MAX_STEPS)
        self._lock = threading.Lock()          # publishing: SQ, pools
        self._reap_lock = threading.Lock()     # consuming the CQ
        self._cv = threading.Condition(threading.Lock())
        self._followers = 0
        self._futures_pending = 0
        self._completer: threading.Thread | None = None
        self._aio = LoopBridge(RingOps(
            register_eventfd=self._register_eventfd, drain=self._drain_eventfd,
            publish=lambda chain, timeout, aio: self._publish(chain, timeout, block=False, aio=aio),
            cancel=self._cancel, progress=self._make_progress, inflight=lambda: self.inflight))
        self._closing = False
        self._closed = False
        self._creator = os.getpid()
        self._inherited = False                # set in a fork() child: see fork.py
        _fork.track(self)

    # -- context management -------------------------------------------------------
    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._pending)} chains in flight"
        return (f"<Ring entries={self.sq_entries} sqpoll={self.sqpoll} slots={self.slots} "
                f"buffers={self.buffers}x{self.buffer_size} {state}>")

    # -- public API ---------------------------------------------------------------
    def run(self, chain: Chain, *, timeout: float | None = None) -> ChainResult:
        """Lay `chain` into the ring and block until every step has completed.

        timeout: seconds for the whole chain (overrides Chain(timeout=...)); enforced in
        the kernel, so the steps still running at the deadline come back cancelled."""
        st = self._publish(chain, timeout, block=True)
        try:
            self._wait(st)
        except BaseException:
            self._cancel(st)       # e.g. KeyboardInterrupt: don't leave it running unseen
            raise
        if st.error is not None:
            raise st.error
        return st.result

    def map(self, chains, *, window: int | None = None,
            timeout: float | None = None) -> list[ChainResult]:
        """Run many chains with up to `window` of them in flight at once (default: a
        quarter of the SQ); returns their results in the order given (KernelRing.map is
        the same for requests)."""
        return list(self.imap(chains, window=window, timeout=timeout))

    run_many = map          # the first name, kept

    def imap(self, chains, *, window: int | None = None, timeout: float | None = None):
        """Like run_many, but yields each result (in order) as soon as it is ready and
        keeps nothing: for long streams. The calling thread reaps, so there are no thread
        hops and, with SQPOLL, almost no system calls."""
        window = max(1, self.sq_entries // 4) if window is None else _int("window", window, 1, 1 << 20)
        active: deque[_Inflight] = deque()
        try:
            for chain in chains:
                active.append(self._publish(chain, timeout, block=True))
                while len(active) >= window:
                    yield self._result_of(active.popleft())
            while active:
                yield self._result_of(active.popleft())
        finally:
            for st in active:   # abandoned (exception, or the generator was dropped)
                self._cancel(st)

    def _result_of(self, st: _Inflight) -> ChainResult:
        if not st.done:
            self._wait(st)
        if st.error is not None:
            raise st.error
        return st.result

    def submit(self, chain: Chain, *, timeout: float | None = None,
               block: bool = True) -> Future:
        """Lay `chain` into the ring and return a concurrent.futures.Future of its
        ChainResult. block=False raises RingFull instead of waiting for room."""
        fut: Future = Future()
        fut.set_running_or_notify_cancel()
        self._publish(chain, timeout, block=block, future=fut)
        return fut

    async def run_async(self, chain: Chain, *, timeout: float | None = None) -> ChainResult:
        """asyncio: await the ChainResult; the loop is woken by an eventfd, never polls."""
        return await self._aio.run(chain, timeout)

    def register_file(self, file) -> Fixed:
        """Put an fd (or an object with fileno()) into a slot that lives until
        unregister_file() or close(); chains then use it as a Fixed handle. Each handle
        carries a generation: once unregistered it is stale, and a stale handle is refused
        everywhere, even after another file took the same slot."""
        fd = file.fileno() if hasattr(file, "fileno") else file
        _int("fd", fd, 0, MAX_FD)
        with self._lock:
            self._check_open()
            if not self._free_slots:
                raise ChainError(f"all {self.slots} slots are in use; pass Ring(slots=...) larger")
            slot = self._free_slots.pop()
            ret = lib.sk_register_slot(self._r, slot, fd)
            if ret < 0:
                self._free_slots.append(slot)
                raise OSError(-ret, f"registering fd {fd}: {os.strerror(-ret)}")
            self._generation += 1
            h = Fixed(None, None, None, slot, ring=self, generation=self._generation, key=_KEY)
            self._registered[slot] = h
            return h

    def unregister_file(self, handle: Fixed) -> None:
        """Empty the slot of a register_file() handle; the handle is stale from now on."""
        if not isinstance(handle, Fixed) or handle.ring is not self:
            raise ChainError(f"{handle!r} was not registered with this ring")
        with self._lock:
            self._check_open()
            slot = handle.slot
            current = self._registered.get(slot) if isinstance(slot, int) else None
            if current is not handle:
                now = (f"; slot {slot} now holds generation {current.generation}"
                       if current is not None else "")
                raise ChainError(f"{handle!r} is stale: it was already unregistered{now}")
            del self._registered[slot]
            lib.sk_unregister_slot(self._r, slot)
            self._free_slots.append(slot)

    @property
    def free_slots(self) -> int:
        return len(self._free_slots)

    @property
    def free_buffers(self) -> int:
        return len(self._free_bufs)

    @property
    def inflight(self) -> int:
        return len(self._pending)

    @property
    def closed(self) -> bool:
        return self._closed or self._inherited

    def sq_needs_wakeup(self) -> bool:
        """True while the SQPOLL thread sleeps (IORING_SQ_NEED_WAKEUP)."""
        self._check_open()
        return bool(lib.sk_sq_flags(self._r) & SQ_NEED_WAKEUP)

    def stats(self) -> dict:
        """Counters kept by the native layer, plus the pools."""
        self._check_open()
        s = ffi.new("struct sk_stats *")
        lib.sk_ring_stats(self._r, s)
        return dict(cqes=s.cqes, chains=s.chains, submits=s.submits, waits=s.waits,
                    wakeups=s.wakeups, overflow_flushes=s.overflow_flushes,
                    cq_overflow=lib.sk_cq_overflow(self._r), inflight=len(self._pending),
                    free_slots=len(self._free_slots), free_buffers=len(self._free_bufs))

    def close(self) -> None:
        """Cancel what is in flight, wait for it (briefly), free the ring and its pools.
        Chains that could not finish get RingClosed. In a fork() child, only unmaps the
        inherited ring: its queues are the parent's."""
        if self._inherited:
            self._forget()
            return
        with self._lock:
            if self._closing:
                return
            self._closing = True
            for st in list(self._pending.values()):
                lib.sk_cancel_pending(self._r, st.tag, st.fz.total, st.res)
            lib.sk_wake(self._r)
        with self._cv:
            self._cv.notify_all()
        t = self._completer
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
        deadline = time.monotonic() + 2.0
        got = self._reap_lock.acquire(timeout=5)
        try:
            while self._pending and time.monotonic() < deadline:
                self._reap(20_000_000)
            for st in list(self._pending.values()):
                self._pending.pop(st.tag, None)
                self._deliver(st, None, RingClosed("the ring was closed before the chain finished"))
            self._aio.detach_all()
            with self._lock:
                self._closed = True
                lib.sk_ring_free(self._r)
                self._r = _NULL
            self._aio.close()
        finally:
            if got:
                self._reap_lock.release()
        with self._cv:
            self._cv.notify_all()

    def __del__(self):
        if getattr(self, "_r", _NULL) != _NULL and (not self._closing or self._inherited):
            try:
                self.close()
            except Exception:
                pass

    def _after_fork_in_child(self) -> None:
        """In a fork() child (fork.py): nothing may touch the shared queues any more.
        The locks are new because a thread of the parent may have held them at fork."""
        self._inherited = True
        self._closing = True
        self._lock = threading.Lock()
        self._reap_lock = threading.Lock()
        self._cv = threading.Condition(threading.Lock())
        self._followers = 0
        self._completer = None
        self._aio.forget_loops()

    def _forget(self) -> None:
        """Unmap the child's view of an inherited ring and close its copies of the fds;
        no SQE is written, nothing is cancelled or unregistered."""
        with self._lock:
            if self._r != _NULL:
                lib.sk_ring_free(self._r)     # munmap + close(ring fd): the parent's ring lives on
                self._r = _NULL
            self._aio.close()
            self._pending.clear()
            self._closed = True

    # -- publishing ---------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closing:
            if self._inherited:
                raise InheritedAfterFork("Ring", self._creator)
            raise RingClosed("the ring is closed; create a new Ring")

    def _validate(self, fz: Frozen) -> None:
        if fz.total > self.sq_entries:
            raise ChainError(f"the chain needs {fz.total} SQ entries ({fz.nsteps} steps, "
                             f"{fz.ntimeouts} linked timeouts) but the ring has "
                             f"{self.sq_entries}: use Ring(entries={_next_pow2(fz.total)}) or more")
        if fz.nslots > self.slots - len(self._registered):
            raise ChainError(f"the chain opens {fz.nslots} files at once but the ring has "
                             f"{self.slots - len(self._registered)} slots for chains: pass "
                             f"Ring(slots=...) larger")
        if fz.nslots and not self._kernel.linked_files:
            raise UnsupportedOperation(direct_missing(self._kernel), engine="link")
        missing = fz.opcodes - self._supported
        if missing:
            op = _ops.BY_OPCODE[min(missing)]
            raise UnsupportedOperation(
                f"{op.name} (IORING_OP {op.opcode}) needs Linux {op.since}; this kernel "
                f"({self._kernel.release}) does not support it", op=op.name)
        for h in fz.ring_slots:
            if h.ring is not self:
                raise ChainError(f"{h!r} belongs to another ring")
            if self._registered.get(h.slot) is not h:
                raise ChainError(f"{h!r} was unregistered")

    def _publish(self, chain: Chain, timeout, block: bool, future=None, aio=None) -> _Inflight:
        if not isinstance(chain, Chain):
            raise TypeError(f"expected a sakura_uring.Chain, not {type(chain).__name__}")
        self._check_open()
        t = chain.timeout if timeout is None else _check_timeout(timeout)
        fz = chain._freeze(t is not None)
        self._validate(fz)
        if fz.cdata is None:
            fz.cdata = _native_views(fz)
        deadline = time.monotonic_ns() + _timeout_ns(t) if t is not None else 0
        while True:
            with self._lock:
                self._check_open()
                if self._free_tags and len(self._free_slots) >= fz.nslots:
                    st = self._lay(fz, deadline, future, aio)
                    if st is not None:
                        break
            if not block:
                raise RingFull(f"no room for the chain now ({len(self._pending)} chains in "
                               f"flight, {len(self._free_slots)} free slots)")
            self._make_progress()
        if future is not None:
            self._start_completer()
        return st

    def _lay(self, fz: Frozen, deadline: int, future, aio) -> _Inflight | None:
        """Give the chain its tag, slots and buffers and lay it (caller holds _lock).
        All or nothing: if anything fails before the kernel has the chain, every tag,
        slot and buffer taken goes back."""
        tag = self._free_tags.pop()
        slots = [self._free_slots.pop() for _ in range(fz.nslots)] if fz.nslots else _EMPTY
        pool_bufs: list[int] = []
        st: _Inflight | None = None
        try:
            total = fz.total
            res = self._tag_arrays[tag]
            if len(res) < total:   # per-tag result arrays, grown on demand, reused forever
                res = ffi.new("int32_t[]", _next_pow2(total))
                self._tag_arrays[tag] = res
            keep = None
            addrs: Any = _EMPTY      # a list when the chain has buffers (no list otherwise)
            if fz.buffers:
                addrs = []
                idx = self._scratch_idx
                for k, length in enumerate(fz.buffers):
                    if length <= self.buffer_size and self._free_bufs:
                        b = self._free_bufs.pop()
                        pool_bufs.append(b)
                        addrs.append(self._buf_addr[b])
                        idx[k] = b
                    else:   # too long for the pool, or the pool is empty: a private buffer
                        mem = ffi.new("char[]", max(length, 1))
                        keep = [mem] if keep is None else keep + [mem]
                        addrs.append(int(ffi.cast("uintptr_t", mem)))
                        idx[k] = -1
                self._scratch_addr[0:len(addrs)] = addrs
            if slots:
                self._scratch_slots[0:len(slots)] = slots
            ts = _NULL
            if fz.ntimeouts:   # the kernel reads these when it consumes the SQE: keep them
                ts = ffi.new("struct __kernel_timespec[]", fz.ntimeouts)
                keep = [ts] if keep is None else keep + [ts]
            st = _Inflight(fz, tag, slots, pool_bufs or _EMPTY, addrs, keep, res)
            st.future = future
            st.aio = aio
            # registered before the kernel sees the chain: another thread may reap it at once
            self._pending[tag] = st
            if future is not None:
                self._futures_pending += 1
            steps, arena, buf_len = fz.cdata
            args = (self._r, steps, fz.nsteps, fz.nslots, self._scratch_slots, len(fz.buffers),
                    self._scratch_addr, self._scratch_idx, buf_len, arena, len(fz.arena), ts,
                    fz.ntimeouts, deadline, tag, total, res)
        except BaseException:       # e.g. MemoryError or KeyboardInterrupt: nothing was laid
            self._unlay(tag, st, slots, pool_bufs)
            raise
        # nothing between the try and the call can raise, so the kernel has the chain
        # exactly when _pending does (an exception after the call leaves it to complete)
        ret = lib.sk_submit_chain(*args)
        if ret >= 0:
            return st
        if ret in (-errno.EBUSY, -errno.EINVAL, -errno.EEXIST, -errno.ERANGE):   # nothing laid
            self._unlay(tag, st, slots, pool_bufs)
            if ret == -errno.EBUSY:   # the SQ has no room yet (SQPOLL hasn't consumed it)
                return None
            if ret == -errno.ERANGE:
                raise ChainError("the native layer refused the chain: a step names a slot, "
                                 "buffer or arena offset outside what the chain was given. "
                                 "This is a bug in sakura_uring; nothing was laid")
        # else: laid, but io_uring_enter failed; it stays in the SQ for the next enter
        raise OSError(-ret, f"io_uring_enter: {os.strerror(-ret)}")

    def _unlay(self, tag: int, st, slots, pool_bufs) -> None:
        """Give back what _lay took for a chain the kernel never got."""
        current = self._pending.get(tag)
        if current is not None and current is st:
            del self._pending[tag]
            if current.future is not None:
                self._futures_pending -= 1
        self._free_tags.append(tag)
        self._free_slots.extend(reversed(slots))
        self._free_bufs.extend(reversed(pool_bufs))

    def _make_progress(self) -> None:
        """Free some resources: reap if nobody else does, else wait for whoever does."""
        if not self._pending:
            # only the SQ can be short now: the SQPOLL thread frees it without us
            if self.sqpoll:
                with self._lock:
                    if not self._closing:
                        lib.sk_sq_wakeup(self._r)     # it may sleep with the SQ full
                time.sleep(0.0001)
                return
            raise ChainError("the ring has no room for this chain and nothing in flight "
                             "would free any (slots held by register_file?)")
        self._reap_or_follow(lambda: self._closing, 10_000_000, once=True)

    def _cancel(self, st: _Inflight) -> None:
        with self._lock:
            if not st.done and not self._closing:
                lib.sk_cancel_pending(self._r, st.tag, st.fz.total, st.res)

    # -- completion ---------------------------------------------------------------
    def _reap(self, timeout_ns: int) -> int:
        """Consume CQEs (caller holds _reap_lock); complete the chains that finished."""
        n = lib.sk_reap(self._r, timeout_ns, self._spin_ns, self._tags, TAGS_MAX)
        if n < 0:
            raise OSError(-n, f"waiting for completions: {os.strerror(-n)}")
        tags = self._tags
        for i in range(n):
            self._complete(tags[i])
        return n

    def _complete(self, tag: int) -> None:
        st = self._pending.pop(tag)
        fz = st.fz
        vals = ffi.unpack(st.res, fz.total)
        datas = {}
        for i, buf, is_statx in fz.data_steps:
            r = vals[fz.step_pos[i]]
            if r >= 0:   # copy out before the buffer goes back to the pool
                datas[i] = ffi.buffer(ffi.cast("char *", st.buf_addrs[buf]),
                                      STATX_SIZE if is_statx else r)[:]
        # Slots a step filled and no step of the chain closed: empty them now.
        if st.slots:
            release = None
            for k, fill in enumerate(fz.slot_fill_pos):
                if fill >= 0 and vals[fill] >= 0 and not any(vals[p] == 0 for p in fz.slot_close_pos[k]):
                    if release is None:
                        release = []
                    release.append(st.slots[k])
            if release and not self._closed:
                lib.sk_release_slots(self._r, ffi.new("int32_t[]", release), len(release))
            self._free_slots.extend(st.slots)
        # Plain list appends are atomic; publishers re-check under _lock.
        if st.pool_bufs:
            self._free_bufs.extend(st.pool_bufs)
        self._free_tags.append(tag)
        if self._aio.room_waiters:     # a check per completion, a call only when needed
            self._aio.room_freed()
        self._deliver(st, ChainResult(fz, vals, datas), None)

    def _deliver(self, st: _Inflight, result, error) -> None:
        st.result = result
        st.error = error
        st.done = True
        if st.future is not None:
            self._futures_pending -= 1
            if error is not None:
                st.future.set_exception(error)
            else:
                st.future.set_result(result)
        if st.aio is not None:
            LoopBridge.deliver(st.aio, result, error)
        if self._followers:
            with self._cv:
                self._cv.notify_all()

    def _release_reaper(self) -> None:
        self._reap_lock.release()
        # a CQE that landed after our last look must not go unnoticed by others
        if self._aio.efd is not None and not self._closed:   # a loop is attached
            self._aio.signal()
        if self._followers:
            with self._cv:
                self._cv.notify_all()

    def _wait(self, st: _Inflight) -> None:
        while not st.done:
            self._reap_or_follow(lambda: st.done or self._closed, SLICE_NS)

    def _reap_or_follow(self, done, slice_ns: int, *, once: bool = False) -> None:
        """Leader/follower: reap until done() (or one round, with once=True) if nobody
        else is reaping; otherwise sleep until the reaper delivers something or lets go."""
        if self._reap_lock.acquire(False):
            try:
                while not done():
                    self._reap(slice_ns)
                    if once:
                        break
            finally:
                self._release_reaper()
        else:
            with self._cv:
                self._followers += 1
                try:
                    if not done():
                        self._cv.wait(0.01)
                finally:
                    self._followers -= 1

    def _start_completer(self) -> None:
        with self._cv:
            if self._completer is None or not self._completer.is_alive():
                self._completer = threading.Thread(target=self._completer_loop,
                                                   name="sakura-completer", daemon=True)
                self._completer.start()
            else:
                self._cv.notify_all()

    def _completer_loop(self) -> None:
        """Completes Futures from submit() while any are pending; exits when idle."""
        while True:
            with self._cv:
                if not self._futures_pending:
                    self._cv.wait(0.5)
                    if not self._futures_pending or self._closing:
                        self._completer = None
                        return
            if self._closing:
                with self._cv:
                    self._completer = None
                return
            if self._reap_lock.acquire(timeout=0.01):
                try:
                    while self._futures_pending and not self._closing:
                        self._reap(SLICE_NS)
                finally:
                    self._release_reaper()

    # -- asyncio (aio.LoopBridge asks these of the ring) -------------------------------
    def _register_eventfd(self, efd: int) -> None:
        with self._lock:
            self._check_open()
            ret = lib.sk_register_eventfd(self._r, efd)
        if ret < 0:
            raise OSError(-ret, f"registering an eventfd: {os.strerror(-ret)}")

    def _drain_eventfd(self) -> None:
        """From a loop's eventfd reader: deliver every completion posted so far (sk_reap(0)
        returns only with the CQ empty or its tag array full)."""
        if self._closing or not self._reap_lock.acquire(False):
            return   # whoever holds it delivers, and signals the eventfd when it lets go
        try:
            while not self._closed and self._reap(0) == TAGS_MAX:
                pass
        finally:
            self._reap_lock.release()
            if self._followers:
                with self._cv:
                    self._cv.notify_all()


def _native_views(fz: Frozen) -> tuple:
    """What sk_submit_chain reads of a frozen chain: its steps, arena and buffer lengths."""
    return (ffi.from_buffer("struct sk_step[]", fz.packed), ffi.from_buffer(fz.arena),
            ffi.new("uint32_t[]", list(fz.buffers) or [0]))


def _next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def sakura_call(ring: Ring, handler, *args, timeout: float | None = None) -> Future:
    """The seed's sakura_call(request_handler, client_fd): `handler(chain, *args)` adds
    the steps of one request; the whole chain then runs in the kernel. Returns a Future."""
    chain = Chain()
    handler(chain, *args)
    return ring.submit(chain, timeout=timeout)
