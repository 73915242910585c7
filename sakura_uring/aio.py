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

from .errors import RingFull


@dataclass(frozen=True)
class RingOps:
    """What the bridge may ask of its Ring."""
    register_eventfd: Callable[[int], None]    # have the ring signal this eventfd (raises)
    drain: Callable[[], None]                  # deliver every completion posted so far
    publish: Callable[..., Any]                # lay a chain without blocking (RingFull)
    cancel: Callable[[Any], None]              # cancel a chain laid by publish
    progress: Callable[[], None]               # let the kernel take up the SQ
    inflight: Callable[[], int]                # chains laid and not yet complete


class LoopBridge:
    def __init__(self, ops: RingOps):
        self._ops = ops
        self.efd: int | None = None
        self._loops: dict = {}
        # (loop, Future) of callers told RingFull; the ring looks at it per completion, so
        # a plain attribute (room_freed() only when it is not empty); a deque, because each
        # completion wakes one of them (all at once made 10,000 waiters retry per completion)
        self.room_waiters: deque = deque()
        self._lock = threading.Lock()

    # -- the coroutine ----------------------------------------------------------------
    async def run(self, chain, timeout: float | None, values: dict | None = None):
        loop = self._loop_here() or asyncio.get_running_loop()
        self.attach(loop)
        fut = loop.create_future()
        ops = self._ops
        while True:
            try:
                st = ops.publish(chain, timeout, aio=(loop, fut), values=values)
                break
            except RingFull:
                pass
            # Wait for the next completion, which gives room back. The waiter is registered
            # before the retry, so a completion between the refusal and the wait is not missed.
            room = self.wait_room(loop)
            try:
                st = ops.publish(chain, timeout, aio=(loop, fut), values=values)
                room.cancel()       # not needed: a completion skips it (wakes the next one)
                break
            except RingFull:
                if ops.inflight():
                    try:
                        await room
                    except asyncio.CancelledError:
                        if room.done() and not room.cancelled():
                            self.room_freed()    # woken, then cancelled: pass the room on
                        raise
                else:               # only the SQ is short: the SQPOLL thread frees it alone
                    room.cancel()
                    ops.progress()
                    await asyncio.sleep(0)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            ops.cancel(st)         # the task was cancelled: stop the chain in the kernel too
            raise

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
    def wait_room(self, loop):
        """A Future of `loop` that is set once a chain completes (and gives back a tag, its
        slots and buffers). Registered *before* the publish that may be refused, so a
        completion in between can't be missed."""
        fut = loop.create_future()
        self.room_waiters.append((loop, fut))
        return fut

    def room_freed(self) -> None:
        """A chain completed and gave its room back: wake one waiter that still waits
        (in its loop; one that stopped waiting meanwhile passes the wakeup on)."""
        waiters = self.room_waiters
        while waiters:
            try:
                loop, fut = waiters.popleft()
            except IndexError:              # another thread took the last one
                return
            if fut.done():                  # cancelled: its owner published, or gave up
                continue
            try:
                if in_loop(loop):
                    self._wake(fut)
                else:
                    loop.call_soon_threadsafe(self._wake, fut)
                return
            except RuntimeError:            # its loop is closed: try the next one
                continue

    def _wake(self, fut) -> None:
        if fut.done():                      # cancelled after we chose it: the next one
            self.room_freed()
        else:
            fut.set_result(None)

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
