"""Ring.map(chain, rows): one chain with Params run once per row, in one native loop.

The loop (sk_map_run in _native/shim.c) lays runs into the SQ as window places free up,
reaps their CQEs and writes each run's results and bytes straight into this map's arrays:
no Python per run, no copy of the bytes read (the reads land in the result). Python runs
only between the loop's slices: to complete other chains the loop reaped (they are handed
back as tags), to see that the ring is closing, and to take a signal.

The map takes its window's tags and slots from the ring's pools for its whole life and
gives them back at the end; its runs are routed to it by tag (the native inflight record
names the map), so any thread that reaps completes them correctly."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from . import params as _params
from ._native import ffi, lib
from .chain import (STATX_SIZE, Chain, Step, _check_int, _check_timeout, _timeout_ns,
                    native_views)
from .core import RingCore
from .errors import ChainError, RingClosed
from .pools import Pools
from .publish import Publisher
from .reaper import SLICE_NS, TAGS_MAX, Reaper
from .result import ChainResult

# runs in flight by default at most: SQPOLL is fastest near 64; an inline ring runs a
# window per io_uring_enter, so a larger one means fewer system calls (1/256 per run)
WINDOW_SQPOLL, WINDOW_INLINE = 64, 256



@dataclass(frozen=True)
class MapOps:
    """What a map needs of its Ring."""
    core: RingCore
    pools: Pools
    reaper: Reaper
    pub: Publisher


class MapRun:
    def __init__(self, ops: MapOps, chain: Chain, rows, window, timeout):
        self._ops = ops
        self._chain = chain
        self._rows_in = rows
        self._window = None if window is None else _check_int("window", window, 1, 1 << 20,
                                                              ValueError)
        self._timeout = chain.timeout if timeout is None else _check_timeout(timeout)
        self.m: Any = None
        self._count = 0

    def run(self) -> "MapResult":
        ops = self._ops
        core, pools, reaper = ops.core, ops.pools, ops.reaper
        core.check_open()
        t = self._timeout
        fz = self._chain._freeze(t is not None)
        ops.pub.validate(fz)
        if fz.cdata is None:
            fz.cdata = native_views(fz)
        rows = _params.rows(fz, self._rows_in)
        count, total = rows.count, fz.total
        self._count = count
        default = WINDOW_SQPOLL if core.sqpoll else WINDOW_INLINE
        window = min(count, self._window or default, max(1, ops.pub._sq_entries // total))
        if fz.nslots:
            window = min(window, max(1, pools.chain_slots() // fz.nslots))
        # where each run's bytes go: its stride of data_out, a buffer after another
        offs, stride = [], 0
        for k, length in enumerate(fz.buffers):
            offs.append(stride)
            stride += length
        statx = {buf for _, buf, is_statx in fz.data_steps if is_statx}
        res_out = ffi.new("int32_t[]", count * total)
        # the bytes land in a region the ring keeps warm between maps: fresh memory would
        # cost a page fault per run in the kernel's copy (~2 us each under a hypervisor)
        data_out = pools.take_region(max(1, count * stride))
        steps, arena, buf_len, binds = fz.cdata
        keep = [rows, res_out, data_out, steps, arena, buf_len, binds]
        tags, slots = self._lease(window, fz.nslots)
        try:
            d = ffi.new("struct sk_map_desc *")
            arrays = dict(
                buf_off=ffi.new("uint64_t[]", offs or [0]),
                fill_pos=ffi.new("int32_t[]", list(fz.slot_fill_pos) or [-1]),
                close_start=ffi.new("uint32_t[]", _starts(fz.slot_close_pos)),
                close_pos=ffi.new("uint32_t[]", [p for c in fz.slot_close_pos for p in c] or [0]),
                tags=ffi.new("uint32_t[]", tags),
                slots=ffi.new("int32_t[]", slots or [0]))
            keep.append(arrays)
            d.steps, d.n, d.total, d.ntimeouts = steps, fz.nsteps, total, fz.ntimeouts
            d.arena, d.arena_len = arena, len(fz.arena)
            d.binds, d.nbinds, d.nparams = binds, len(fz.binds), rows.nparams
            d.vals, d.varena, d.varena_len = rows.words, rows.arena, rows.arena_len
            d.count, d.nslots, d.nbufs = count, fz.nslots, len(fz.buffers)
            d.buf_len, d.buf_off, d.stride = buf_len, arrays["buf_off"], stride
            d.fill_pos, d.close_start = arrays["fill_pos"], arrays["close_start"]
            d.close_pos, d.window = arrays["close_pos"], window
            d.tags, d.slots = arrays["tags"], arrays["slots"]
            d.timeout_ns = _timeout_ns(t) if t is not None else 0
            d.res_out, d.data_out = res_out, data_out
            keep.append(d)
            err = ffi.new("int *")
            bad_step = ffi.new("unsigned *")
            with core.lock:
                core.check_open()
                m = lib.sk_map_new(core.r, d, err)
                if m == ffi.NULL:
                    raise ChainError(f"the native layer refused the map ({err[0]}): this is a "
                                     f"bug in sakura_uring; nothing was laid")
                bad = lib.sk_map_check(core.r, m, bad_step)
                if bad >= 0:
                    lib.sk_map_free(core.r, m)
                    j = bad_step[0]
                    raise ChainError(f"row {bad} does not fit step {j} "
                                     f"({fz.steps[j].op.name}): a value out of range for it "
                                     f"(a length over the read's max_length?); nothing was laid")
                self.m = m
                reaper.maps.add(self)
            try:
                self._drive()
            finally:
                self._end()
        finally:
            with core.lock:
                pools.give_back_many(tags, slots)
        return MapResult(fz, rows, res_out, data_out, stride, offs, statx, keep, pools)

    def _lease(self, window: int, nslots: int) -> tuple[list, list]:
        """The window's tags and slots, waiting for room like publish() does."""
        ops = self._ops
        core, pools = ops.core, ops.pools
        while True:
            with core.lock:
                core.check_open()
                got = pools.take_many(window, nslots)
                if got is not None:
                    return got
            ops.pub.make_progress()

    def _drive(self) -> None:
        ops = self._ops
        core, reaper = ops.core, ops.reaper
        m, count = self.m, self._count
        reaper.lead()
        try:
            while True:
                if core.closed:
                    raise RingClosed("the ring was closed before the map finished")
                n = lib.sk_map_run(core.r, m, SLICE_NS, reaper.spin_ns, reaper.tags,
                                   TAGS_MAX)
                if n < 0:
                    raise OSError(-n, f"map: {os.strerror(-n)}")
                if n:
                    reaper.complete(n)
                if lib.sk_map_done(m) == count:
                    return
                if core.closing and not lib.sk_map_inflight(m):
                    # close() cancelled the runs, and they have drained
                    raise RingClosed("the ring was closed before the map finished")
        finally:
            reaper.release()


    def _end(self) -> None:
        """Nothing of the map stays in the kernel: cancel what is in flight, wait for it."""
        ops = self._ops
        core, reaper = ops.core, ops.reaper
        m = self.m
        try:
            if not core.closed and lib.sk_map_inflight(m):
                with core.lock:
                    if not core.closed:
                        lib.sk_map_cancel(core.r, m)
                deadline = time.monotonic() + 5
                reaper.lead()
                try:
                    while (not core.closed and lib.sk_map_inflight(m)
                           and time.monotonic() < deadline):
                        n = lib.sk_map_run(core.r, m, 10_000_000, 0, reaper.tags, TAGS_MAX)
                        if n > 0:
                            reaper.complete(n)
                finally:
                    reaper.release()
        finally:
            reaper.maps.discard(self)
            lib.sk_map_free(ffi.NULL if core.closed else core.r, m)
            self.m = None


def _starts(close_pos: tuple) -> list:
    out, at = [0], 0
    for c in close_pos:
        at += len(c)
        out.append(at)
    return out


class MapResult:
    """The results of map(chain, rows), in row order, read from the map's own arrays.

    result[i]       run i's ChainResult (made when asked for)
    result.data(h)  every run's bytes of step h (None where it failed): one list
    result.res(h)   every run's CQE result of step h
    result.ok       every run succeeded; result.failed() lists (row, ChainResult) that did not
    """
    __slots__ = ("_fz", "_rows", "_res", "_data", "_stride", "_offs", "_statx", "_keep",
                 "_count", "_total", "_pools", "_src")

    def __init__(self, fz, rows, res, data, stride, offs, statx, keep, pools):
        self._fz = fz
        self._rows = rows
        self._res = res
        self._data = data
        self._stride = stride
        self._offs = offs
        self._statx = statx
        self._keep = keep
        self._count = rows.count
        self._total = fz.total
        self._pools = pools
        self._src = None             # the buffer object views() slice (they hold it)

    def __del__(self):
        # the region goes back to the ring for the next map, which takes it only once no
        # view still sees it
        if self._pools is not None:
            self._pools.give_region(self._data, self._src)

    def __len__(self) -> int:
        return self._count

    def _index(self, key) -> int:
        idx = key.index if isinstance(key, Step) else key
        if isinstance(key, Step) and key.chain is not self._fz.chain:
            raise KeyError(f"{key!r} is not a step of this chain")
        if not isinstance(idx, int) or not 0 <= idx < len(self._fz.steps):
            raise KeyError(f"{key!r} is not a step of this chain")
        return idx

    def res(self, key) -> list[int]:
        pos, total = self._fz.step_pos[self._index(key)], self._total
        return ffi.unpack(self._res, self._count * total)[pos::total]

    def data(self, key) -> list[bytes | None]:
        """Every run's bytes of step `key` (None where it failed), in row order."""
        return self._slices(key, ffi.buffer(self._data))

    def views(self, key) -> list[memoryview | None]:
        """Like data(), as memoryviews into this result's own buffer: no copy. They stay
        valid as long as they live (the buffer is then never reused)."""
        if self._src is None:
            self._src = ffi.buffer(self._data)
        return self._slices(key, memoryview(self._src))

    def _slices(self, key, buf) -> list:
        idx = self._index(key)
        info = self._fz.steps[idx]
        if info.buffer < 0:
            raise KeyError(f"step {idx} ({info.op.name}) has no bytes")
        stride, at = self._stride, self._offs[info.buffer]
        fixed = STATX_SIZE if info.buffer in self._statx else 0
        out: list = []
        for r in self.res(idx):
            out.append(None if r < 0 else buf[at:at + (fixed or r)])
            at += stride
        return out

    def __getitem__(self, i: int) -> ChainResult:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"a MapResult is indexed by row number, not {type(i).__name__}")
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(f"row {i} of {self._count}")
        fz, total = self._fz, self._total
        vals = ffi.unpack(self._res + i * total, total)
        buf = ffi.buffer(self._data)
        base = i * self._stride
        datas = {}
        for step, b, is_statx in fz.data_steps:
            r = vals[fz.step_pos[step]]
            if r >= 0:
                at = base + self._offs[b]
                datas[step] = buf[at:at + (STATX_SIZE if is_statx else r)]
        return ChainResult(fz, vals, datas, self._rows.lengths(i))

    def __iter__(self):
        for i in range(self._count):
            yield self[i]

    @property
    def ok(self) -> bool:
        vals = ffi.unpack(self._res, self._count * self._total)
        if min(vals) >= 0 and not self._fz.exact_pos and not self._fz.sized:
            return True
        return not self.failed()

    def failed(self) -> list[tuple[int, ChainResult]]:
        out: list[tuple[int, ChainResult]] = []
        for i in range(self._count):
            r = self[i]
            if not r.ok:
                out.append((i, r))
        return out

    def __repr__(self) -> str:
        return f"<MapResult {self._count} runs of {len(self._fz.steps)} steps>"


# -- spreading one map over several cores ---------------------------------------------------
def spread(parts_rings: list, chain: Chain, rows, window, timeout) -> "SpreadResult":
    """Run map(chain, rows) split into contiguous parts, part k on parts_rings[k]; part 0
    in the calling thread, the others each in a thread pinned to a CPU of its own (an
    inline ring does its kernel work in the thread that submits, so each part's system
    calls run on that part's core). Returns one result over all rows, in row order."""
    import threading
    rows = list(rows)
    k = min(len(parts_rings), max(1, len(rows)))
    size = -(-len(rows) // k)
    chunks = [rows[i * size:(i + 1) * size] for i in range(k)]
    here = os.sched_getaffinity(0)
    cpus = sorted(set(range(os.cpu_count() or 1)) - here) + sorted(here)
    out: list = [None] * k
    errors: list = [None] * k

    def part(i: int) -> None:
        try:
            if i:
                os.sched_setaffinity(0, {cpus[(i - 1) % len(cpus)]})
            out[i] = parts_rings[i].map(chain, chunks[i], window=window, timeout=timeout)
        except BaseException as exc:       # handed to the caller below
            errors[i] = exc
    threads = [threading.Thread(target=part, args=(i,), name=f"sakura-map-{i}", daemon=True)
               for i in range(1, k)]
    for t in threads:
        t.start()
    try:
        part(0)
    finally:
        for t in threads:
            t.join()
    for exc in errors:
        if exc is not None:
            raise exc
    return SpreadResult(out)


class SpreadResult:
    """map(..., cores=N): the parts' MapResults read as one, in row order (same methods)."""
    __slots__ = ("_parts", "_starts")

    def __init__(self, parts: list):
        self._parts = parts
        self._starts = []
        at = 0
        for p in parts:
            self._starts.append(at)
            at += len(p)

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def res(self, key) -> list[int]:
        return [v for p in self._parts for v in p.res(key)]

    def data(self, key) -> list:
        return [v for p in self._parts for v in p.data(key)]

    def views(self, key) -> list:
        return [v for p in self._parts for v in p.views(key)]

    def __getitem__(self, i: int) -> ChainResult:
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"a map's result is indexed by row number, not {type(i).__name__}")
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} of {n}")
        import bisect
        k = bisect.bisect_right(self._starts, i) - 1
        return self._parts[k][i - self._starts[k]]

    def __iter__(self):
        for p in self._parts:
            yield from p

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self._parts)

    def failed(self) -> list[tuple[int, ChainResult]]:
        return [(s + i, r) for s, p in zip(self._starts, self._parts) for i, r in p.failed()]

    def __repr__(self) -> str:
        return f"<SpreadResult {len(self)} runs in {len(self._parts)} parts>"
