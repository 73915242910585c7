"""KernelRing.map(): many requests, a window of them in flight, results in order."""
from __future__ import annotations

import functools
import threading
import time
from concurrent.futures import Future
from typing import Callable

from .slots import Slots


class Batch:
    """One KernelRing.map(): requests started as slots come free, by the caller and by
    the drainer thread (whose done callbacks start the next one), results kept in order."""

    def __init__(self, slots: Slots, start: Callable[..., Future], checked: list,
                 timeout: float | None):
        self.slots, self.start = slots, start      # start(slot, args, view) -> Future
        self.checked, self.timeout = checked, timeout
        self.results: list = [None] * len(checked)
        self.lock = threading.Lock()
        self.all_done = threading.Event()
        self.starved = threading.Event()  # the drainer found no free slot: the caller starts
        self.next = 0                     # the next request to start
        self.left = len(checked)          # requests not finished yet
        self.error: BaseException | None = None
        self.starved_count = 0            # starts the drainer could not make
        self.futures: dict[int, Future] = {}   # started and unfinished, by request index

    def run(self, window: int) -> list:
        for _ in range(min(window, len(self.checked))):
            self.start_next(True)
        end = None if self.timeout is None else time.monotonic() + self.timeout
        while not self.all_done.is_set():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            if self.starved.wait(left):
                self.starved.clear()
                with self.lock:
                    n, self.starved_count = self.starved_count, 0
                for _ in range(n):
                    self.start_next(True)   # this thread may wait for a slot
        if not self.all_done.is_set():
            self.stop_all(TimeoutError("KernelRing.map timed out"))
            with self.lock:
                pending = list(self.futures.values())
            for fut in pending:           # they stop in the kernel; their slots come free
                fut.cancel()
            raise TimeoutError(f"KernelRing.map: {self.left} of {len(self.checked)} requests "
                               f"unfinished after {self.timeout} s")
        if self.error is not None:
            raise self.error
        return self.results

    def stop_all(self, exc: BaseException | None = None) -> None:
        if exc is not None:
            self.error = exc
        self.all_done.set()
        self.starved.set()

    def start_next(self, block: bool) -> None:
        with self.lock:
            if self.next >= len(self.checked) or self.error:
                return
        try:
            # the drainer (block=False) must never wait for a slot: it frees them
            slot = self.slots.take(self.timeout, block=block)
        except BaseException as exc:
            self.stop_all(exc)
            return
        if slot is None:
            with self.lock:
                self.starved_count += 1
            self.starved.set()
            return
        with self.lock:
            i: int | None = self.next
            if self.next < len(self.checked) and not self.error:
                self.next += 1
            else:
                i = None
        if i is None:
            self.slots.give_back(slot)
            return
        try:
            fut = self.start(slot, *self.checked[i])
        except BaseException as exc:
            self.stop_all(exc)
            return
        with self.lock:
            self.futures[i] = fut
        fut.add_done_callback(functools.partial(self.finished, i))

    def finished(self, i: int, fut: Future) -> None:
        with self.lock:
            self.futures.pop(i, None)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self.stop_all(exc)
            return
        self.results[i] = fut.result()
        with self.lock:
            self.left -= 1
            last = self.left == 0
        if last:
            self.stop_all()
        else:
            self.start_next(False)
