"""KernelRing: a ring whose requests are carried out by a BPF handler in kernel context.

Where things happen:
  KernelRing.__init__   bcc compiles sakura.h + the handler + dispatch.c (program.py); the
                        ring is set up on the maps' memory and taught its own identity by a
                        boot request (sk_kr_new, sk_kr_boot)
  KernelRing._start     a request slot (slots.py) is filled and a start NOP pushed
                        (sk_kr_start); everything after that happens in the kernel
  KernelRing._drain     one thread, mostly in C without the GIL (sk_kr_drain), collects
                        the slots of finished requests and resolves their Futures
  batch.py              map(): a window of requests in flight, results in order
  result.py             HandlerResult
"""
from __future__ import annotations

import asyncio
import errno
import os
import secrets
import threading
import time
import warnings
from concurrent.futures import Future, InvalidStateError
from typing import Any, Literal, overload

from .._native import ffi, lib
from ..chain import _check_int
from .. import fork as _fork
from ..errors import InheritedAfterFork, RingClosed, SakuraError
from . import program
from .batch import Batch
from .result import SK_STALLED, HandlerResult, HandlerStalled
from .slots import Slots

ESHUTDOWN = errno.ESHUTDOWN
# from bpf/abi.h, through the compiler (the cffi build reads it)
MAX_ARGS = lib.SK_ARGS
N_VARS = lib.SK_VARS
FREE = lib.SK_REQ_FREE
# the stat counters in index order, named after enum sk_stat (SK_STAT_PUSH_FULL: push_full)
STAT_NAMES = tuple(name[len("SK_STAT_"):].lower() for _, name in sorted(
    (getattr(lib, n), n) for n in dir(lib) if n.startswith("SK_STAT_") and n != "SK_STAT_COUNT"))

__all__ = ["KernelRing", "KernelHandlersUnavailable", "HandlerResult", "HandlerStalled",
           "SK_STALLED"]


class KernelHandlersUnavailable(SakuraError):
    """This kernel or process can't run kernel handlers; the message says why. The link
    engine (sakura_uring.Ring) keeps working."""


def _check_pow2(name: str, value, lo: int, hi: int) -> int:
    v = _check_int(name, value, lo, hi, ValueError)
    if v & (v - 1):
        raise ValueError(f"{name} must be a power of two, got {v}")
    return v


class KernelRing:
    """Runs `handler` (BPF C: `static int on_complete(struct sk_event *e)`, see
    bpf/sakura.h) for every completion of its requests, in kernel context.

        with KernelRing(handler_path("follow")) as kr:
            print(kr.run(data=b"/etc/motd-pointer\\0").data)

    handler      the C source (str) or a path to it (os.PathLike)
    entries      SQ size shared by the application and the handler (power of two)
    buffers      request slots, each with its own data buffer: how many requests can be
                 in flight at once (<= 65535)
    buffer_size  the size of each buffer (power of two, 4 KiB .. 4 MiB)
    cq_entries   CQ size (default: max(2 * entries, 16 * buffers)); a CQE that finds it
                 full still reaches the handler (io_uring_cqe_overflow) and the drainer
    sq_idle_ms   how long the SQPOLL thread polls before it sleeps
    sq_cpu       pin the SQPOLL thread to this CPU (None: anywhere)
    spin_us      how long the drainer polls the CQ before it sleeps in the kernel
    """

    def __init__(self, handler, *, entries: int = 256, requests: int = 64,
                 buffer_size: int = 65536, cq_entries: int | None = None,
                 sq_idle_ms: int = 100, sq_cpu: int | None = None, spin_us: int = 50,
                 name: str | None = None, buffers: int | None = None):
        src = program.handler_source(handler, name)
        handler = src.text
        self.nargs, self.arg_names = src.nargs, src.arg_names
        entries = _check_pow2("entries", entries, 64, 32768)
        if buffers is not None:    # the first name of `requests` (a slot is more than a buffer)
            warnings.warn("KernelRing(buffers=) is now KernelRing(requests=)",
                          DeprecationWarning, stacklevel=2)
            requests = buffers
        requests = _check_int("requests", requests, 1, 65535, ValueError)
        buffer_size = _check_pow2("buffer_size", buffer_size, 4096, 4 << 20)
        if cq_entries is None:
            cq_entries = program.Layout.default_cq(entries, requests)
        cq_entries = _check_pow2("cq_entries", cq_entries, entries, 1 << 20)
        sq_idle_ms = _check_int("sq_idle_ms", sq_idle_ms, 0, 60_000, ValueError)
        if sq_cpu is not None:
            sq_cpu = _check_int("sq_cpu", sq_cpu, 0, (os.cpu_count() or 1) - 1, ValueError)
        self._spin_ns = _check_int("spin_us", spin_us, 0, 1_000_000, ValueError) * 1000
        self.name = src.name
        self.layout = program.Layout(entries, cq_entries, requests, buffer_size)

        from ..probe import engines
        eng = engines()["kernel"]
        if not eng.available:
            raise KernelHandlersUnavailable(f"kernel handlers are unavailable: {eng.reason}")
        from ..bpfenv import load_bcc
        bcc = load_bcc()

        self._k = ffi.NULL
        self._bpf: Any = None
        self._slots = Slots(requests, self._closed_error)
        self._inherited = False
        # bit 63 marks internal requests; the random token keeps other rings' boot
        # requests (this process's or another's) from being taken for ours
        boot_ud = lib.SK_UD_INTERNAL | (secrets.randbits(48) << 8) | 1
        self._bpf = program.load(bcc, handler, self.name, self.layout, boot_ud)
        # instructions the verifier walked to load it (None: this kernel does not say)
        self.verified_insns: int | None = self._bpf.sk_verified_insns
        try:
            self._setup(boot_ud, sq_idle_ms, sq_cpu)
        except BaseException:
            self._bpf.cleanup()
            self._bpf = None
            raise
        self._drainer = threading.Thread(target=self._drain, name=f"sakura-drain-{self.fd}",
                                         daemon=True)
        self._drainer.start()
        self._creator = os.getpid()
        _fork.track(self)

    def _closed_error(self) -> RingClosed:
        if self._inherited:
            return InheritedAfterFork("KernelRing", self._creator)
        return RingClosed("this KernelRing is closed")

    def _after_fork_in_child(self) -> None:
        """In a fork() child (fork.py): the SQ, the maps and the handler's attachment are
        the parent's; the child must neither push requests nor detach anything."""
        self._inherited = True
        self._slots.after_fork_in_child()
        if self._bpf is not None:
            _fork.forget_bpf(self._bpf)

    def _setup(self, boot_ud: int, sq_idle_ms: int, sq_cpu: int | None) -> None:
        lay = self.layout
        p = ffi.new("struct sk_kring_params *")
        p.entries, p.cq_entries, p.reqs = lay.entries, lay.cq_entries, lay.reqs
        p.buf_size, p.ring_pages, p.sq_idle_ms = lay.buf_size, lay.ring_pages, sq_idle_ms
        p.sq_cpu = -1 if sq_cpu is None else sq_cpu
        maps = self._bpf
        p.fd_sqes, p.fd_rings = maps[b"sk_sqes"].map_fd, maps[b"sk_rings"].map_fd
        p.fd_ctl, p.fd_reqs = maps[b"sk_ctl"].map_fd, maps[b"sk_reqs"].map_fd
        p.fd_bufs = maps[b"sk_bufs"].map_fd
        err, stage = ffi.new("int *"), ffi.new("int *")
        k = lib.sk_kr_new(p, err, stage)
        if k == ffi.NULL:
            what = {1: "mmap of a BPF map", 2: "io_uring_setup(NO_MMAP | NO_SQARRAY | SQPOLL) "
                    "on BPF map memory", 3: "checking the ring layout"}.get(stage[0], "setup")
            raise OSError(-err[0], f"KernelRing: {what} failed: {os.strerror(-err[0])}")
        rc = lib.sk_kr_boot(k, boot_ud, 2_000_000_000)
        if rc:
            lib.sk_kr_free(k)
            if rc == -errno.ETIMEDOUT:
                raise KernelHandlersUnavailable(
                    "the dispatch program never saw the ring's boot completion: the "
                    "io_uring:io_uring_complete tracepoint did not fire for this ring")
            raise OSError(-rc, f"KernelRing: boot request failed: {os.strerror(-rc)}")
        self._k = k
        self.fd = lib.sk_kr_fd(k)

    # ---- requests ---------------------------------------------------------------------

    def call(self, *args: int, data: bytes = b"", timeout: float | None = None) -> Future:
        """Start a request; the handler sees `args` as e->r->arg[0..5] and `data` at the
        start of the request's buffer (e->r->in_len bytes). Returns a Future of a
        HandlerResult. Waits up to `timeout` seconds for a free request slot (RingFull)."""
        cargs, view = self._check_request(args, data)
        slot = self._slots.take(timeout)
        return self._start(slot, cargs, view)

    submit = call           # Ring's word for it

    def run(self, *args: int, data: bytes = b"", timeout: float | None = None) -> HandlerResult:
        """call() and wait for the result. The caller sees the request end in shared
        memory (spinning spin_us, then a futex) and collects it itself: no other thread
        hands the result over."""
        cargs, view = self._check_request(args, data)
        slots = self._slots
        slot = slots.take(timeout)
        gen = self._start(slot, cargs, view, future=False)
        end = None if timeout is None else time.monotonic() + timeout
        k = slots.enter(self._k)
        try:
            while True:
                left = 0.05 if end is None else min(0.05, end - time.monotonic())
                if left > 0 and lib.sk_kr_wait(k, slot, self._spin_ns, int(left * 1e9)) == 0:
                    break
                if slots.closed:
                    raise RingClosed("the KernelRing was closed before this request finished")
                if end is not None and time.monotonic() >= end:
                    slots.watch(slot)       # from now on the drainer reports it
                    if not lib.sk_kr_abandon(k, slot):
                        # stop it: no more pushes, its slot free once its SQEs complete
                        lib.sk_kr_cancel(k, slot, gen)
                        raise TimeoutError(f"the kernel handler did not finish within {timeout} s; "
                                           f"the request was cancelled")
                    slots.forget(slot)      # it finished just now, and it is ours
                    break
            res = self._result(slot)
            lib.sk_kr_release(k, slot)
            slots.give_back(slot)
            return res
        finally:
            slots.leave()

    def map(self, requests, *, window: int | None = None,
            timeout: float | None = None) -> list[HandlerResult]:
        """Run many requests, `window` in flight at once (default: all request slots), and
        return their results in order. Each item is a tuple of int arguments, or a
        (args, data) pair. New requests are started from the drainer thread as earlier
        ones finish, so the caller sleeps once instead of once per request."""
        window = self.layout.reqs if window is None else _check_int(
            "window", window, 1, self.layout.reqs, ValueError)
        checked = []
        for item in requests:
            args, data = item if (isinstance(item, tuple) and len(item) == 2
                                  and isinstance(item[1], (bytes, bytearray, memoryview))) \
                else (item, b"")
            checked.append(self._check_request(tuple(args), data))
        if not checked:
            return []
        return Batch(self._slots, self._start, checked, timeout).run(window)

    async def call_async(self, *args: int, data: bytes = b"",
                         timeout: float | None = None) -> HandlerResult:
        """call() for asyncio: waits for a slot without blocking the loop."""
        cargs, view = self._check_request(args, data)
        slot = self._slots.take(0, block=False)
        if slot is None:
            slot = await asyncio.get_running_loop().run_in_executor(None, self._slots.take, timeout)
        fut = self._start(slot, cargs, view)
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)

    run_async = call_async  # Ring's word for it

    def _check_request(self, args, data) -> tuple[list, memoryview]:
        if self.nargs is not None and len(args) != self.nargs:
            names = f" ({', '.join(self.arg_names)})" if self.arg_names else ""
            raise TypeError(f"the handler {self.name} takes {self.nargs} argument"
                            f"{'' if self.nargs == 1 else 's'}{names}, got {len(args)}")
        if len(args) > MAX_ARGS:
            raise ValueError(f"a request takes at most {MAX_ARGS} integer arguments, got {len(args)}")
        for i, a in enumerate(args):
            if isinstance(a, bool) or not isinstance(a, int):
                raise TypeError(f"argument {i} must be an int, not {type(a).__name__}")
            if not -(1 << 63) <= a < (1 << 64):
                raise ValueError(f"argument {i} does not fit in 64 bits: {a}")
        try:
            view = memoryview(data).cast("B")
        except TypeError:
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}") from None
        if len(view) > self.layout.buf_size:
            raise ValueError(f"data is {len(view)} bytes; a request buffer holds "
                             f"{self.layout.buf_size} (KernelRing(buffer_size=...))")
        if self._slots.closed:
            raise self._closed_error()
        return [a & 0xFFFF_FFFF_FFFF_FFFF for a in args], view

    @overload
    def _start(self, slot: int, cargs: list, view: memoryview,
               future: Literal[True] = ...) -> Future: ...

    @overload
    def _start(self, slot: int, cargs: list, view: memoryview,
               future: Literal[False]) -> int: ...

    def _start(self, slot: int, cargs: list, view: memoryview, future: bool = True) -> Future | int:
        """The one place a request starts: its slot (taken) is filled and a start NOP
        pushed. Returns its Future (future=True) or its generation. On failure the slot
        goes back."""
        slots = self._slots
        fut = slots.watch(slot) if future else None
        if fut is not None:
            fut.stop = self._cancel
        args = ffi.new("uint64_t[]", cargs) if cargs else ffi.NULL
        data = ffi.from_buffer(view)
        delay = 0.0001
        try:
            k = slots.enter(self._k)
        except RingClosed:
            slots.forget(slot)
            raise
        try:
            while True:
                rc = lib.sk_kr_start(k, slot, args, len(cargs), data, len(view), not future)
                if rc >= 0:
                    if fut is None:
                        return rc
                    fut.gen = rc
                    if fut.cancelled():     # cancelled while it started
                        self._cancel(fut)
                    return fut
                # the SQ is shared with the handlers: the SQPOLL thread empties it
                if rc != -errno.EBUSY or slots.closed:
                    slots.give_back(slot)
                    raise OSError(-rc, f"KernelRing: starting a request failed: {os.strerror(-rc)}")
                time.sleep(delay)
                delay = min(delay * 2, 0.01)
        finally:
            slots.leave()

    def _cancel(self, fut) -> None:
        """Future.cancel(): stop the request in the kernel (sk_kr_cancel); the drainer
        frees its slot when what it has in flight has completed."""
        if fut.gen is None:
            return                      # not started yet: _start cancels it
        try:
            k = self._slots.enter(self._k)
        except RingClosed:
            return
        try:
            lib.sk_kr_cancel(k, fut.slot, fut.gen)
        finally:
            self._slots.leave()

    def variables(self, fut: Future, first: int = 0, count: int = 1) -> list[int] | None:
        """Handler variables v[first:first+count] of the running request `fut` (from
        call()), read live from shared memory: how an application watches a long-lived
        request (the HTTP handler keeps a connection's phase there). None once finished."""
        _check_int("first", first, 0, N_VARS - 1, ValueError)
        _check_int("count", count, 1, N_VARS - first, ValueError)
        slot = getattr(fut, "slot", None)
        slots = self._slots
        with slots.cv:
            if slots.closed or slot is None or slots.futures.get(slot) is not fut:
                return None
            v = lib.sk_kr_req(self._k, slot).v
            return [v[i] for i in range(first, first + count)]

    # ---- completion -------------------------------------------------------------------

    def _drain(self) -> None:
        out = ffi.new("uint32_t[]", 256)
        k = self._k
        while True:
            n = lib.sk_kr_drain(k, out, 256, -1, self._spin_ns)
            if n == 0:
                continue
            if n < 0:
                if n != -ESHUTDOWN:
                    self._slots.fail_all(OSError(-n, f"KernelRing drainer: {os.strerror(-n)}"))
                return
            futs = []
            slots = self._slots
            with slots.cv:
                for i in range(n):
                    slot = out[i]
                    res = self._result(slot)
                    lib.sk_kr_req(k, slot).state = FREE
                    slots.free.append(slot)
                    futs.append((slots.futures.pop(slot, None), res))
                slots.cv.notify(n)
            for fut, res in futs:
                if fut is not None and not fut.cancelled():
                    try:
                        fut.set_result(res)
                    except InvalidStateError:
                        pass                # cancelled just now: nobody wants the result

    def _result(self, slot: int) -> HandlerResult:
        """A finished request's result and bytes, copied out of its slot."""
        r = lib.sk_kr_req(self._k, slot)
        return HandlerResult(r.result, ffi.buffer(lib.sk_kr_buf(self._k, slot) + r.out_off,
                                                  r.out_len)[:], bool(r.value))

    # ---- state ------------------------------------------------------------------------

    def stats(self) -> dict:
        """Counters: the handler side (BPF) and the application side (drainer)."""
        if self._slots.closed:
            raise self._closed_error()
        st = ffi.new("struct sk_kring_stats *")
        lib.sk_kr_stats(self._k, st)
        per_cpu = self._bpf[b"sk_stats"]
        out = {name: int(sum(per_cpu[per_cpu.Key(i)])) for i, name in enumerate(STAT_NAMES)}
        out.update(started=st.started, reported=st.finished, cqes=st.cqes, waits=st.waits,
                   wakeups=st.wakeups, overflow_flushes=st.overflow_flushes,
                   in_flight=lib.sk_kr_outstanding(self._k))
        return out

    @property
    def closed(self) -> bool:
        return self._slots.closed

    def close(self) -> None:
        """Stop: pending Futures fail with RingClosed; the program is detached and the
        ring, the maps and their memory are freed."""
        if getattr(self, "_inherited", False):
            self._bpf = None              # forget_bpf made its exit handler harmless
            if self._k != ffi.NULL:
                lib.sk_kr_free(self._k)   # munmap + close(ring fd): the parent's ring lives on
                self._k = ffi.NULL
            return
        slots = getattr(self, "_slots", None)
        if slots is None or slots.closed:    # (None: __init__ failed before the ring existed)
            return
        with slots.cv:
            slots.closed = True
        if self._k != ffi.NULL:
            end = time.monotonic() + 5
            while lib.sk_kr_stop(self._k) == -errno.EBUSY and time.monotonic() < end:
                time.sleep(0.001)         # the SQ is full; the SQPOLL thread empties it
            self._drainer.join(max(0.1, end - time.monotonic()))
            if self._drainer.is_alive():
                raise RuntimeError("KernelRing: the drainer did not stop (the SQPOLL thread "
                                   "consumed nothing for 5 s)")
        slots.fail_all(RingClosed("the KernelRing was closed before this request finished"))
        slots.wait_unused(5)
        if self._bpf is not None:
            self._bpf.cleanup()           # detach first: no handler runs on a freed ring
            self._bpf = None
        if self._k != ffi.NULL:
            lib.sk_kr_free(self._k)
            self._k = ffi.NULL

    def __enter__(self) -> "KernelRing":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
