"""A KernelRing's request slots: which are free, which Future waits on which, and how
many threads are inside a native call on the ring (close() frees nothing under them).
One condition variable guards it all: a slot coming free wakes one waiter."""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Callable, Literal, overload

from ..errors import RingFull


class SlotFuture(Future):
    """A request's Future, knowing its request slot. cancel() stops the request in the
    kernel: its handler is called no more, its latest push group is cancelled, and its slot
    comes free once what it has in flight completes."""
    slot: int
    gen: int | None = None          # the request's generation, once started
    stop: Callable[["SlotFuture"], None] | None = None   # the ring's cancel

    def cancel(self) -> bool:
        if not super().cancel():
            return False            # finished (or being reported) already
        if self.stop is not None:
            self.stop(self)
        return True


class Slots:
    def __init__(self, n: int, closed_error):
        self.n = n
        self._closed_error = closed_error   # () -> the exception a closed ring raises
        self.cv = threading.Condition(threading.Lock())
        self.free = list(range(n - 1, -1, -1))
        self.futures: dict[int, Future] = {}
        self.users = 0
        self.closed = False

    @overload
    def take(self, timeout: float | None, block: Literal[True] = ...) -> int: ...

    @overload
    def take(self, timeout: float | None, block: bool) -> int | None: ...

    def take(self, timeout: float | None, block: bool = True) -> int | None:
        """A free slot, waiting up to `timeout` for one (RingFull); None if block=False
        and none is free."""
        end = None if timeout is None else time.monotonic() + timeout
        with self.cv:
            while not self.free:
                if self.closed:
                    raise self._closed_error()
                if not block:
                    return None
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise RingFull(f"all {self.n} request slots stayed busy for "
                                   f"{timeout} s (KernelRing(requests=...) sets how many)")
                self.cv.wait(left)
            if self.closed:
                raise self._closed_error()
            return self.free.pop()

    def give_back(self, slot: int) -> None:
        """A slot taken and not (or no longer) used goes back to the free list."""
        with self.cv:
            self.futures.pop(slot, None)
            self.free.append(slot)
            self.cv.notify()

    def watch(self, slot: int) -> SlotFuture:
        fut = SlotFuture()           # left PENDING, so that cancel() can stop it
        fut.slot = slot
        with self.cv:
            self.futures[slot] = fut
        return fut

    def forget(self, slot: int) -> None:
        with self.cv:
            self.futures.pop(slot, None)

    # -- native calls ------------------------------------------------------------------
    def enter(self, k):
        """Native calls on the ring happen between enter and leave."""
        with self.cv:
            if self.closed:
                raise self._closed_error()
            self.users += 1
            return k

    def leave(self) -> None:
        with self.cv:
            self.users -= 1
            if not self.users:
                self.cv.notify_all()

    # -- the end -------------------------------------------------------------------------
    def fail_all(self, exc: Exception) -> None:
        with self.cv:
            futs = list(self.futures.values())
            self.futures.clear()
            self.cv.notify_all()
        for fut in futs:
            if not fut.done():
                fut.set_exception(exc)

    def wait_unused(self, seconds: float) -> None:
        with self.cv:                    # run() callers leave their wait within 50 ms
            self.cv.notify_all()
            self.cv.wait_for(lambda: not self.users, seconds)

    def after_fork_in_child(self) -> None:
        self.closed = True
        self.cv = threading.Condition(threading.Lock())
        self.users = 0
        self.futures = {}
