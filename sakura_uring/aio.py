"""asyncio integration: the loop watches an eventfd registered with the ring, so it
sleeps in epoll until the kernel posts a completion (no polling).

LoopBridge is the asyncio side of one Ring: the eventfd, the loops attached to it, the
run_async callers waiting for room, and the delivery of results into a loop. The Ring
builds it with the few operations it needs of the ring (RingOps), so nothing here reaches
into the Ring."""
from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable



class _Waiting:
    """A run_async chain queued for room, and the Lease it got once laid."""
    __slots__ = ("loop", "fut", "chain", "timeout", "values", "lease")

    def __init__(self, loop, fut, chain, timeout, values):
        self.loop, self.fut, self.chain = loop, fut, chain
        self.timeout, self.values = timeout, values
        self.lease = None


@dataclass(frozen=True)
class RingOps:
    """What the bridge may ask of its Ring."""
    register_eventfd: Callable[[int], None]    # have the ring signal this eventfd (raises)
    drain: Callable[[], None]                  # deliver every completion posted so far
    publish: Callable[..., Any]                # lay a chain if there is room, else None
    cancel: Callable[[Any], None]              # cancel a chain laid by publish
    progress: Callable[[], None]               # let the kernel take up the SQ
    row: Callable[..., Any]                    # a chain's values, checked, for publish
    room: Callable[[int], bool]                # a tag and this many slots are free now
    inflight: Callable[[], int]                # chains laid and not yet complete


class LoopBridge:
    def __init__(self, ops: RingOps):
        self._ops = ops
        self.efd: int | None = None
        self._loops: dict = {}
        # run_async chains refused for lack of room, oldest first (_Waiting); the ring
        # looks at it per completion, so a plain attribute (room_freed() only when it is
        # not empty); each completion lays as many as then fit
        self.room_waiters: deque = deque()
        self._room_lock = threading.Lock()
        self._lock = threading.Lock()

    # -- the coroutine ----------------------------------------------------------------
    async def run(self, chain, timeout: float | None, values: dict | None = None):
        loop = self._loop_here() or asyncio.get_running_loop()
        self.attach(loop)
        ops = self._ops
        if values:
            values = ops.row(chain, timeout, values)   # checked once, not at every retry
        fut = loop.create_future()
        aio = (loop, fut)
        st = ops.publish(chain, timeout, aio, values)
        w = None
        if st is None:
            # No room: queue it; the completion that gives room back lays it, in whatever
            # thread reaps (room_freed), and this coroutine only ever waits for its result.
            w = _Waiting(loop, fut, chain, timeout, values)
            self.room_waiters.append(w)
            self.room_freed()       # room given back between the refusal and the append
            if w.lease is None and not ops.inflight():
                loop.call_soon(self._nudge, loop)   # only the SQ is short: no completion
        try:
            # not shielded: a cancelled task cancels `fut` (a result delivered later finds
            # it done and is dropped), which saves a Future and two callbacks per chain
            return await fut
        except asyncio.CancelledError:
            lease = st if st is not None else w.lease if w is not None else None
            if lease is not None:
                ops.cancel(lease)   # the task was cancelled: stop the chain in the kernel too
            raise

    def _nudge(self, loop) -> None:
        """Queued chains and nothing in flight: only the SQ is short, and the SQPOLL thread
        frees it alone; retry soon instead of waiting for a completion that won't come."""
        self._ops.progress()
        self.room_freed()
        if self.room_waiters and not self._ops.inflight():
            loop.call_later(0.0001, self._nudge, loop)

    # -- loops and the eventfd ----------------------------------------------------------
    def attach(self, loop) -> None:
        if loop in self._loops:
            return
        with self._lock:
            if self.efd is None:
                efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                try:
                    self._ops.register_eventfd(efd)
                except BaseException:
                    os.close(efd)
                    raise
                self.efd = efd
        loop.add_reader(self.efd, self._on_eventfd)
        self._loops[loop] = True

    def _loop_here(self):
        """The attached asyncio loop running in this thread, found without
        asyncio.get_running_loop() (which costs a getpid() system call), or None."""
        for loop in self._loops:
            if getattr(loop, "_thread_id", None) == threading.get_ident():
                return loop
        return None

    def detach_all(self) -> None:
        for loop in list(self._loops):
            self._loops.pop(loop, None)
            try:
                if loop.is_closed():
                    continue
                if in_loop(loop):
                    loop.remove_reader(self.efd)
                else:
                    loop.call_soon_threadsafe(loop.remove_reader, self.efd)
            except RuntimeError:
                pass

    def close(self) -> None:
        """Close the eventfd (the loops were detached, or belong to a parent process)."""
        if self.efd is not None:
            os.close(self.efd)
            self.efd = None

    def forget_loops(self) -> None:
        """In a fork() child: the loops are the parent's."""
        self._loops = {}
        self._lock = threading.Lock()
        self._room_lock = threading.Lock()
        self.room_waiters = deque()

    def signal(self) -> None:
        """Wake the loops: a completion may wait that the last reaper did not deliver."""
        if self.efd is not None and self._loops:
            try:
                os.eventfd_write(self.efd, 1)
            except OSError:
                pass

    def _on_eventfd(self) -> None:
        """The eventfd says CQEs were posted. Its count is consumed first, then the CQ is
        drained: a CQE posted after that signals the eventfd again, so none is left behind."""
        efd = self.efd
        if efd is None:                 # closed meanwhile
            return
        try:
            os.eventfd_read(efd)
        except OSError:                 # BlockingIOError: already consumed
            pass
        self._ops.drain()

    # -- delivery -------------------------------------------------------------------------
    def room_freed(self) -> None:
        """Room was given back (a chain completed): lay queued chains, oldest first, while
        they fit (any thread; one at a time). One whose task was cancelled is dropped; one
        the ring refuses (closed) gets the error as its result."""
        waiters = self.room_waiters
        with self._room_lock:
            while waiters:
                w = waiters[0]
                if w.fut.done():            # cancelled while queued
                    waiters.popleft()
                    continue
                if not self._ops.room(w.chain._nslots):
                    return                  # the cheap look first: no tag or slots yet
                try:
                    st = self._ops.publish(w.chain, w.timeout, (w.loop, w.fut), w.values)
                except Exception as exc:    # e.g. RingClosed: that chain's answer
                    waiters.popleft()
                    _deliver_into(w.loop, w.fut, None, exc)
                    continue
                if st is None:
                    return                  # still no room: it stays at the head
                w.lease = st
                waiters.popleft()

    def fail_waiting(self, error) -> None:
        """The ring closes: queued chains will never be laid."""
        with self._room_lock:
            while self.room_waiters:
                w = self.room_waiters.popleft()
                _deliver_into(w.loop, w.fut, None, error)

    @staticmethod
    def deliver(aio, result, error) -> None:
        """Set the asyncio Future of a chain laid by run()."""
        loop, fut = aio
        _deliver_into(loop, fut, result, error)


def _deliver_into(loop, fut, result, error) -> None:
    try:
        if in_loop(loop):
            _set(fut, result, error)         # no self-pipe write: we are its thread
        else:
            loop.call_soon_threadsafe(_set, fut, result, error)
    except RuntimeError:
        pass   # the loop is closed: nobody is waiting any more


def in_loop(loop) -> bool:
    tid = getattr(loop, "_thread_id", False)     # set by asyncio while the loop runs
    if tid is not False:
        return tid == threading.get_ident()       # (get_running_loop() costs a getpid())
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _set(fut, result, error) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
