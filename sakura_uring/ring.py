"""Ring: the shared submission/completion queue (Sakura Call's request queue).

A Ring is a facade over parts named after what they hold:
  core.py      the native ring and its life (open, closing, closed)
  pools.py     what chains borrow while in flight: tags, slots, buffers (a Lease each)
  publish.py   where a chain is laid into the SQ: checked, leased, one native call
  reaper.py    where CQEs become ChainResults and waiters are told
  aio.py       asyncio: the eventfd, the loops, run_async
"""
from __future__ import annotations

import errno
import os
import resource
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Coroutine

from . import fork as _fork
from ._native import ffi, lib
from .aio import LoopBridge, RingOps
from .chain import MAX_FD, Chain, Fixed, _check_bool, _check_int, native_views
from .core import RingCore
from .errors import ChainError, IoUringUnavailable, RingClosed
from .pools import Lease, Pools, _next_pow2
from .maps import MapOps, MapRun, spread
from . import params as _params
from .prepared import Prepared, run_once
from .publish import Publisher
from .reaper import Reaper
from .result import ChainResult

SETUP_SQPOLL = 1 << 1
SQ_NEED_WAKEUP = 1 << 0
SQ_CQ_OVERFLOW = 1 << 1
_NULL = ffi.NULL


def _int(name: str, value, lo: int, hi: int) -> int:
    return _check_int(name, value, lo, hi, ValueError)


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
        self._core = core = RingCore(r, sqpoll)
        self._pools = Pools(r, slots, buffers, buffer_size, max_chains)
        self._aio = LoopBridge(RingOps(
            register_eventfd=self._register_eventfd, drain=lambda: self._reaper.drain(),
            publish=lambda chain, timeout, aio, values=None: self._pub.offer(
                chain, timeout, aio, values),
            cancel=lambda st: self._pub.cancel(st),
            progress=lambda: self._pub.make_progress(), inflight=lambda: self.inflight,
            row=lambda chain, timeout, values: self._pub.row_for(chain, timeout, values),
            room=lambda nslots: self._pools.room(nslots)))
        self._reaper = Reaper(core, self._pools, self._aio, spin_us * 1000)
        self._pub = Publisher(self, core, self._pools, self._reaper, self.sq_entries)
        self._map_ops = MapOps(core, self._pools, self._reaper, self._pub)
        self._helpers: list[Ring] = []       # map(cores=N)'s inline rings
        _fork.track(self)

    # -- context management -------------------------------------------------------
    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else f"{self.inflight} chains in flight"
        return (f"<Ring entries={self.sq_entries} sqpoll={self.sqpoll} slots={self.slots} "
                f"buffers={self.buffers}x{self.buffer_size} {state}>")

    # -- running chains -----------------------------------------------------------
    def run(self, chain: Chain, *, timeout: float | None = None, **values) -> ChainResult:
        """Lay `chain` into the ring and block until every step has completed.

        timeout: seconds for the whole chain (overrides Chain(timeout=...)); enforced in
        the kernel, so the steps still running at the deadline come back cancelled.
        values: one per Param of the chain (Chain.param), by name."""
        if timeout is None and type(chain) is Chain and chain.timeout is None:
            # no deadline: this thread lays and reaps it alone (prepared.run_once)
            fz = chain._frozen.get(False) or chain._freeze(False)
            if fz.cdata is None:
                fz.cdata = native_views(fz)
            self._pub.validate(fz)
            row = lengths = None
            if values or fz.params:
                row = _params.row(fz, values)
                lengths = row.lengths(0)
            r = run_once(self._map_ops, fz, row, lengths)
            if r is not None:
                return r
        st = self._pub.publish(chain, timeout, True, values=values)
        try:
            self._reaper.wait(st)
        except BaseException:
            self._pub.cancel(st)   # e.g. KeyboardInterrupt: don't leave it running unseen
            raise
        if st.error is not None:
            raise st.error
        return st.result

    def prepare(self, chain: Chain, *, timeout: float | None = None) -> Prepared:
        """A chain that keeps its tag, slots and buffers on this ring until close(), so
        each run is one native call: `p = ring.prepare(chain); p.run(path=...)`.
        timeout: seconds for each run (overrides Chain(timeout=...))."""
        return Prepared(self._map_ops, chain, timeout)

    def map(self, chains, rows=None, *, window: int | None = None,
            timeout: float | None = None, cores: int = 1):
        """Run many chains with up to `window` of them in flight at once (default: a
        quarter of the SQ); returns their results in the order given (KernelRing.map is
        the same for requests).

        map(chain, rows): one chain with Params run once per row (a dict of values by
        Param name, or the value itself when the chain has one Param), all of it in one
        native loop that lays runs, reaps them and writes their results and bytes
        straight into one MapResult (see maps.py). cores=N splits the rows over this ring
        and N-1 inline rings of its own, each driven by a thread on another CPU: an inline
        ring does its kernel work in the thread that submits, so N cores do the system
        calls (one SQPOLL thread is one core; a SQPOLL ring gives all N parts to inline
        rings, as its thread would take a part's core)."""
        if rows is not None or isinstance(chains, Chain):
            if not isinstance(chains, Chain):
                raise TypeError(f"map(chain, rows) takes one Chain with Params, not "
                                f"{type(chains).__name__}")
            if rows is None:
                raise ChainError("map(chain, rows) needs the rows: one value (or dict of "
                                 "values) per run")
            _int("cores", cores, 1, os.cpu_count() or 1)
            if cores == 1:
                return MapRun(self._map_ops, chains, rows, window, timeout).run()
            # a SQPOLL thread polls its core, so it would starve a part there: a SQPOLL
            # ring hands every part to inline rings of its own
            mine = [] if self.sqpoll else [self]
            rings = mine + self._companions(cores - len(mine))
            return spread(rings, chains, rows, window, timeout)
        return list(self.imap(chains, window=window, timeout=timeout))

    def _companions(self, n: int) -> list:
        """n inline rings shaped like this one, made on first use, closed with it."""
        self._core.check_open()
        while len(self._helpers) < n:
            self._helpers.append(Ring(self.sq_entries, slots=self.slots, buffers=0,
                                      buffer_size=self.buffer_size))
        return self._helpers[:n]

    async def map_async(self, chain: Chain, rows, *, window: int | None = None,
                        timeout: float | None = None, cores: int = 1):
        """asyncio: await map(chain, rows). The native loop runs in the loop's default
        executor (it holds the GIL only between its slices), so the event loop keeps
        serving while thousands of runs are in flight."""
        import asyncio
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, lambda: self.map(chain, rows, window=window, timeout=timeout, cores=cores))

    run_many = map          # the first name, kept

    def imap(self, chains, *, window: int | None = None, timeout: float | None = None):
        """Like map, but yields each result (in order) as soon as it is ready and keeps
        nothing: for long streams. The calling thread reaps, so there are no thread hops
        and, with SQPOLL, almost no system calls."""
        window = max(1, self.sq_entries // 4) if window is None else _int("window", window, 1, 1 << 20)
        active: deque[Lease] = deque()
        publish = self._pub.publish
        try:
            for chain in chains:
                active.append(publish(chain, timeout, True))
                while len(active) >= window:
                    yield self._result_of(active.popleft())
            while active:
                yield self._result_of(active.popleft())
        finally:
            for st in active:   # abandoned (exception, or the generator was dropped)
                self._pub.cancel(st)

    def _result_of(self, st: Lease) -> ChainResult:
        if not st.done:
            self._reaper.wait(st)
        if st.error is not None:
            raise st.error
        return st.result

    def submit(self, chain: Chain, *, timeout: float | None = None,
               block: bool = True, **values) -> Future:
        """Lay `chain` into the ring and return a concurrent.futures.Future of its
        ChainResult. block=False raises RingFull instead of waiting for room."""
        fut: Future = Future()
        fut.set_running_or_notify_cancel()
        self._pub.publish(chain, timeout, block, future=fut, values=values)
        return fut

    def run_async(self, chain: Chain, *, timeout: float | None = None,
                  **values) -> Coroutine[Any, Any, ChainResult]:
        """asyncio: await the ChainResult; the loop is woken by an eventfd, never polls.
        (The bridge's coroutine itself, not a wrapper around it: one frame less per chain.)"""
        return self._aio.run(chain, timeout, values)

    # -- files registered for good ----------------------------------------------------
    def register_file(self, file) -> Fixed:
        """Put an fd (or an object with fileno()) into a slot that lives until
        unregister_file() or close(); chains then use it as a Fixed handle. Each handle
        carries a generation: once unregistered it is stale, and a stale handle is refused
        everywhere, even after another file took the same slot."""
        fd = file.fileno() if hasattr(file, "fileno") else file
        _int("fd", fd, 0, MAX_FD)
        core = self._core
        with core.lock:
            core.check_open()
            return self._pools.register(core.r, fd, self)

    def unregister_file(self, handle: Fixed) -> None:
        """Empty the slot of a register_file() handle; the handle is stale from now on."""
        if not isinstance(handle, Fixed) or handle.ring is not self:
            raise ChainError(f"{handle!r} was not registered with this ring")
        core = self._core
        with core.lock:
            core.check_open()
            self._pools.unregister(core.r, handle)

    def is_registered(self, handle: Fixed) -> bool:
        """True while `handle` is the current register_file() handle of its slot."""
        return handle.ring is self and self._pools.holds(handle)

    # -- state ----------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return len(self._pools.free_slots)

    @property
    def free_buffers(self) -> int:
        return len(self._pools.free_bufs)

    @property
    def registered_files(self) -> int:
        return len(self._pools.registered)

    @property
    def inflight(self) -> int:
        return len(self._reaper.pending)

    @property
    def closed(self) -> bool:
        return self._core.closed or self._core.inherited

    def sq_needs_wakeup(self) -> bool:
        """True while the SQPOLL thread sleeps (IORING_SQ_NEED_WAKEUP)."""
        self._core.check_open()
        return bool(lib.sk_sq_flags(self._core.r) & SQ_NEED_WAKEUP)

    def stats(self) -> dict:
        """Counters kept by the native layer, plus the pools."""
        self._core.check_open()
        s = ffi.new("struct sk_stats *")
        lib.sk_ring_stats(self._core.r, s)
        return dict(cqes=s.cqes, chains=s.chains, submits=s.submits, waits=s.waits,
                    wakeups=s.wakeups, overflow_flushes=s.overflow_flushes,
                    cq_overflow=lib.sk_cq_overflow(self._core.r), inflight=self.inflight,
                    free_slots=self.free_slots, free_buffers=self.free_buffers)

    # -- the end ----------------------------------------------------------------------
    def close(self) -> None:
        """Cancel what is in flight, wait for it (briefly), free the ring and its pools.
        Chains that could not finish get RingClosed. In a fork() child, only unmaps the
        inherited ring: its queues are the parent's."""
        core, reaper = self._core, self._reaper
        for helper in getattr(self, "_helpers", ()):
            helper.close()
        if core.inherited:
            self._forget()
            return
        with core.lock:
            if core.closing:
                return
            core.closing = True
            for st in list(reaper.pending.values()):
                lib.sk_cancel_pending(core.r, st.tag, st.fz.total, st.res)
            for run in list(reaper.maps):
                lib.sk_map_cancel(core.r, run.m)
            lib.sk_wake(core.r)
        reaper.stop_completer()
        deadline = time.monotonic() + 2.0
        got = reaper.lock.acquire(timeout=5)
        try:
            while reaper.pending and time.monotonic() < deadline:
                reaper.reap(20_000_000)
            for st in list(reaper.pending.values()):
                reaper.pending.pop(st.tag, None)
                reaper.deliver(st, None, RingClosed("the ring was closed before the chain finished"))
            self._aio.fail_waiting(RingClosed("the ring was closed before the chain was laid"))
            self._aio.detach_all()
            with core.lock:
                core.closed = True
                lib.sk_ring_free(core.r)
                core.r = _NULL
            self._aio.close()
        finally:
            if got:
                reaper.lock.release()
        reaper.wake_followers()

    def __del__(self):
        core = getattr(self, "_core", None)
        if core is not None and core.r != _NULL and (not core.closing or core.inherited):
            try:
                self.close()
            except Exception:
                pass

    def _after_fork_in_child(self) -> None:
        """In a fork() child (fork.py): nothing may touch the shared queues any more."""
        self._core.after_fork_in_child()
        self._reaper.after_fork_in_child()
        self._aio.forget_loops()

    def _forget(self) -> None:
        """Unmap the child's view of an inherited ring and close its copies of the fds;
        no SQE is written, nothing is cancelled or unregistered."""
        core = self._core
        with core.lock:
            if core.r != _NULL:
                lib.sk_ring_free(core.r)     # munmap + close(ring fd): the parent's ring lives on
                core.r = _NULL
            self._aio.close()
            self._reaper.pending.clear()
            core.closed = True

    # -- asked by aio.LoopBridge (RingOps) ----------------------------------------------
    def _register_eventfd(self, efd: int) -> None:
        core = self._core
        with core.lock:
            core.check_open()
            ret = lib.sk_register_eventfd(core.r, efd)
        if ret < 0:
            raise OSError(-ret, f"registering an eventfd: {os.strerror(-ret)}")


def sakura_call(ring: Ring, handler, *args, timeout: float | None = None) -> Future:
    """The seed's sakura_call(request_handler, client_fd): `handler(chain, *args)` adds
    the steps of one request; the whole chain then runs in the kernel. Returns a Future."""
    chain = Chain()
    handler(chain, *args)
    return ring.submit(chain, timeout=timeout)
