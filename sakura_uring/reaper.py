"""Where a completion becomes a result: CQEs are consumed in batches by one native call
(sk_reap) into the per-tag result arrays; a chain whose last CQE arrived is turned into a
ChainResult (data copied out of its buffers), its slots, buffers and tag go back to the
pools, and whoever waits for it is told (run(), a Future, an asyncio loop).

Any thread that waits for a result reaps (leader/follower on `lock`), so a lone run()
never hops threads; Futures from submit() are completed by a helper thread that exists
only while such Futures are pending."""
from __future__ import annotations

import os
import threading

from ._native import ffi, lib
from .aio import LoopBridge
from .chain import STATX_SIZE
from .core import RingCore
from .pools import Lease, Pools
from .result import ChainResult

TAGS_MAX = 256                 # chains one sk_reap call may finish
SLICE_NS = 50_000_000          # longest a waiter stays in the kernel before re-checking


def copy_out(fz, vals: list, buf_addrs) -> dict:
    """The bytes of a chain's data steps, copied out before their buffers are reused."""
    datas = {}
    for i, buf, is_statx in fz.data_steps:
        r = vals[fz.step_pos[i]]
        if r >= 0:
            datas[i] = ffi.unpack(ffi.cast("char *", buf_addrs[buf]), STATX_SIZE if is_statx else r)
    return datas


class Reaper:
    def __init__(self, core: RingCore, pools: Pools, aio: LoopBridge, spin_ns: int):
        self._core = core
        self._pools = pools
        self._aio = aio
        self.spin_ns = spin_ns
        self.pending: dict[int, Lease] = {}     # tag -> chain laid and not yet complete
        self.maps: set = set()                  # maps.MapRun running (close() cancels them)
        self.maps_waiting = 0                   # maps that want to reap: a leader yields
        self.prepared: set = set()              # prepared.Prepared open on this ring
        self.orphans: dict = {}                 # tag -> (Lease, arrays) of a Prepared run
                                                # abandoned in flight: freed when it completes
        self.tags = ffi.new("uint32_t[]", TAGS_MAX)
        self.others = ffi.new("int *")          # sk_tag_wait's count of other chains done
        self.lock = threading.Lock()            # consuming the CQ
        self._cv = threading.Condition(threading.Lock())
        self._followers = 0
        self._futures_pending = 0
        self._completer: threading.Thread | None = None

    # -- what the publisher tells us -------------------------------------------------------
    def track(self, st: Lease) -> None:
        """Before the kernel sees the chain: another thread may reap it at once."""
        self.pending[st.tag] = st
        if st.future is not None:
            self._futures_pending += 1

    def untrack(self, st: Lease) -> None:
        """The kernel never got it."""
        if self.pending.get(st.tag) is st:
            del self.pending[st.tag]
            if st.future is not None:
                self._futures_pending -= 1

    # -- consuming the CQ --------------------------------------------------------------------
    def reap(self, timeout_ns: int) -> int:
        """Consume CQEs (caller holds `lock`); complete the chains that finished."""
        n = lib.sk_reap(self._core.r, timeout_ns, self.spin_ns, self.tags, TAGS_MAX)
        if n < 0:
            raise OSError(-n, f"waiting for completions: {os.strerror(-n)}")
        self.complete(n)
        return n

    def complete(self, n: int) -> None:
        """Complete the first n chains of `tags` (sk_reap's or sk_map_run's)."""
        tags = self.tags
        for i in range(n):
            self._complete(tags[i])

    def _complete(self, tag: int) -> None:
        st = self.pending.pop(tag, None)
        if st is None:          # a Prepared run given up after an interrupt: nobody waits
            lease, _ = self.orphans.pop(tag)
            self.release_unclosed(lease.fz, ffi.unpack(lease.res, lease.fz.total), lease.slots)
            self._pools.give_back(lease)
            return
        fz = st.fz
        vals = ffi.unpack(st.res, fz.total)
        datas = copy_out(fz, vals, st.buf_addrs)
        if st.slots and not (fz.closes_all and min(vals) >= 0):
            self.release_unclosed(fz, vals, st.slots)
        self._pools.give_back(st)
        self.room_given()
        lengths = st.row.lengths(0) if st.row is not None else None
        self.deliver(st, ChainResult(fz, vals, datas, lengths), None)

    def room_given(self) -> None:
        """A chain gave its lease back: wake a run_async caller waiting for room."""
        if self._aio.room_waiters:     # a check per completion, a call only when needed
            self._aio.room_freed()

    def release_unclosed(self, fz, vals: list, slots) -> None:
        """Slots a step filled and no step of the chain closed: empty them now."""
        release = None
        for k, fill in enumerate(fz.slot_fill_pos):
            if fill >= 0 and vals[fill] >= 0 and not any(vals[p] == 0 for p in fz.slot_close_pos[k]):
                if release is None:
                    release = []
                release.append(slots[k])
        if release and not self._core.closed:
            lib.sk_release_slots(self._core.r, ffi.new("int32_t[]", release), len(release))

    def lead(self) -> None:
        """Become the one that reaps, for a native loop that reaps for everyone (a map, a
        Prepared run): a leader waiting in the kernel is woken and yields (maps_waiting)."""
        if self.lock.acquire(False):
            return
        core = self._core
        self.maps_waiting += 1
        try:
            with core.lock:
                if not core.closing:
                    lib.sk_wake(core.r)
            self.lock.acquire()
        finally:
            self.maps_waiting -= 1

    def deliver(self, st: Lease, result, error) -> None:
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
        self.wake_followers()

    def release(self) -> None:
        self.lock.release()
        # a CQE that landed after our last look must not go unnoticed by others
        if self._aio.efd is not None and not self._core.closed:   # a loop is attached
            self._aio.signal()
        self.wake_followers()

    def wake_followers(self) -> None:
        if self._followers:
            with self._cv:
                self._cv.notify_all()

    # -- waiting ---------------------------------------------------------------------------
    def wait(self, st: Lease) -> None:
        core = self._core
        while not st.done:
            self.reap_or_follow(lambda: st.done or core.closed, SLICE_NS)

    def reap_or_follow(self, done, slice_ns: int, *, once: bool = False) -> None:
        """Leader/follower: reap until done() (or one round, with once=True) if nobody
        else is reaping; otherwise sleep until the reaper delivers something or lets go."""
        if not self.maps_waiting and self.lock.acquire(False):
            try:
                while not done():
                    self.reap(slice_ns)
                    if once or self.maps_waiting:   # a map reaps for everyone: yield to it
                        break
            finally:
                self.release()
        else:
            with self._cv:
                self._followers += 1
                try:
                    if not done():
                        self._cv.wait(0.01)
                finally:
                    self._followers -= 1

    def drain(self) -> None:
        """From a loop's eventfd reader: deliver every completion posted so far (sk_reap(0)
        returns only with the CQ empty or its tag array full)."""
        if self._core.closing or not self.lock.acquire(False):
            return   # whoever holds it delivers, and signals the eventfd when it lets go
        try:
            while not self._core.closed and self.reap(0) == TAGS_MAX:
                pass
        finally:
            self.lock.release()
            self.wake_followers()

    # -- Futures from submit() ----------------------------------------------------------------
    def start_completer(self) -> None:
        with self._cv:
            if self._completer is None or not self._completer.is_alive():
                self._completer = threading.Thread(target=self._completer_loop,
                                                   name="sakura-completer", daemon=True)
                self._completer.start()
            else:
                self._cv.notify_all()

    def _completer_loop(self) -> None:
        """Completes Futures from submit() while any are pending; exits when idle."""
        core = self._core
        while True:
            with self._cv:
                if not self._futures_pending:
                    self._cv.wait(0.5)
                    if not self._futures_pending or core.closing:
                        self._completer = None
                        return
            if core.closing:
                with self._cv:
                    self._completer = None
                return
            if self.lock.acquire(timeout=0.01):
                try:
                    while self._futures_pending and not core.closing and not self.maps_waiting:
                        self.reap(SLICE_NS)
                finally:
                    self.release()

    # -- the end -------------------------------------------------------------------------------
    def stop_completer(self) -> None:
        with self._cv:
            self._cv.notify_all()
        t = self._completer
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)

    def after_fork_in_child(self) -> None:
        """New locks: a thread of the parent may have held them at fork."""
        self.lock = threading.Lock()
        self._cv = threading.Condition(threading.Lock())
        self._followers = 0
        self._completer = None
