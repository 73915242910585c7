"""What a Ring lends its chains while they are in flight: a tag (which chain a CQE is
for), slots of the registered file table (direct descriptors), registered buffers, and the
per-tag result array; plus the files registered for good with register_file().

A Lease is one chain's share, taken all at once under the publishing lock and given back
all at once when the chain completes (or was never laid)."""
from __future__ import annotations

import os
import sys
from typing import Any

from ._native import ffi, lib
from .chain import _KEY, MAX_STEPS, Fixed, Frozen
from .errors import ChainError

_EMPTY = ()
REGION_KEEP = 256 << 20       # a map's output region larger than this is not kept
REGIONS_KEPT = 2
SPARE_BYTES = 4 << 20         # private buffers kept per length (for chains the pool can't serve)
SPARE_LENGTHS = 16
_raw = ffi.new_allocator(should_clear_after_alloc=False)   # every byte is written first


class Lease:
    """One chain between publish and completion: what it holds of the pools, and, once
    it has completed, what it gave."""
    __slots__ = ("fz", "tag", "slots", "pool_bufs", "buf_addrs", "keep", "ts", "res",
                 "result", "error", "done", "future", "aio", "row", "private")

    def __init__(self, fz, tag, slots, pool_bufs, buf_addrs, keep, ts, res, future, aio,
                 private=_EMPTY):
        self.fz = fz
        self.tag = tag
        self.slots = slots
        self.pool_bufs = pool_bufs
        self.buf_addrs = buf_addrs
        self.private = private      # (length, cdata) of buffers not from the pool
        self.keep = keep            # cdata the kernel may still read (the timespecs)
        self.ts = ts                # the linked timeouts' timespecs (in keep), or NULL
        self.res = res              # the CQE results, by SQE position
        self.result = None
        self.error = None
        self.done = False
        self.future = future        # submit()'s Future, or None
        self.aio = aio              # run_async's (loop, Future), or None
        self.row = None             # the values of a parameterized run (params.Rows)


class Pools:
    """Free lists of tags, slots and buffers (plain lists: an append is atomic, so a
    completion gives back without the publishing lock, and publishers re-check under it)."""

    def __init__(self, r, slots: int, buffers: int, buffer_size: int, max_chains: int):
        self.slots = slots
        self.buffers = buffers
        self.buffer_size = buffer_size
        self.free_tags = list(range(max_chains, 0, -1))
        self.free_slots = list(range(slots - 1, -1, -1))
        self.free_bufs = list(range(buffers - 1, -1, -1))
        self._buf_addr = [int(ffi.cast("uintptr_t", lib.sk_buffer_addr(r, i)))
                          for i in range(buffers)]
        self._tag_arrays: list[Any] = [_EMPTY] * (max_chains + 1)
        self.registered: dict[int, Fixed] = {}     # register_file() handles by slot
        self._regions: list = []                      # maps' output memory, kept warm
        # private buffers of chains that found the pool empty, kept for the next ones by
        # length (SPARE_BYTES of each length at most, SPARE_LENGTHS lengths)
        self._spare: dict[int, list] = {}
        self._generation = 0
        # what sk_submit_chain reads besides the chain (only during the call, under the lock)
        self.scratch_slots = ffi.new("int32_t[]", max(slots, 1))
        self.scratch_addr = ffi.new("uint64_t[]", MAX_STEPS)
        self.scratch_idx = ffi.new("int32_t[]", MAX_STEPS)

    # -- chains ------------------------------------------------------------------------
    def chain_slots(self) -> int:
        """Slots a chain may fill: those register_file() does not hold."""
        return self.slots - len(self.registered)

    def room(self, nslots: int) -> bool:
        return bool(self.free_tags) and len(self.free_slots) >= nslots

    def lease(self, fz: Frozen, future, aio) -> Lease:
        """Take a tag, the chain's slots and buffers (caller holds the lock and checked
        room()); the scratch arrays then describe them for sk_submit_chain. All or nothing:
        on any exception everything taken goes back."""
        tag = self.free_tags.pop()
        n = fz.nslots
        pop = self.free_slots.pop
        slots = _EMPTY if not n else [pop()] if n == 1 else [pop() for _ in range(n)]
        pool_bufs: list[int] = []
        private: Any = _EMPTY
        try:
            total = fz.total
            res = self._tag_arrays[tag]
            if len(res) < total:   # per-tag result arrays, grown on demand, reused forever
                res = ffi.new("int32_t[]", _next_pow2(total))
                self._tag_arrays[tag] = res
            keep = None
            ts = ffi.NULL
            addrs: Any = _EMPTY      # a list when the chain has buffers (no list otherwise)
            if fz.buffers:
                addrs = []
                idx = self.scratch_idx
                for k, length in enumerate(fz.buffers):
                    if length <= self.buffer_size and self.free_bufs:
                        b = self.free_bufs.pop()
                        pool_bufs.append(b)
                        addrs.append(self._buf_addr[b])
                        idx[k] = b
                    else:   # too long for the pool, or the pool is empty: a private buffer
                        spare = self._spare.get(length)
                        mem = spare.pop() if spare else ffi.new("char[]", max(length, 1))
                        private = [(length, mem)] if not private else private + [(length, mem)]
                        addrs.append(int(ffi.cast("uintptr_t", mem)))
                        idx[k] = -1
                self.scratch_addr[0:len(addrs)] = addrs
            if slots:
                self.scratch_slots[0:len(slots)] = slots
            if fz.ntimeouts:   # the kernel reads these when it consumes the SQE: keep them
                ts = ffi.new("struct __kernel_timespec[]", fz.ntimeouts)
                keep = [ts] if keep is None else keep + [ts]
            return Lease(fz, tag, slots, pool_bufs or _EMPTY, addrs, keep, ts, res, future, aio,
                         private)
        except BaseException:       # e.g. MemoryError or KeyboardInterrupt
            self._return(tag, slots, pool_bufs, private)
            raise

    def give_back(self, lease: Lease) -> None:
        self._return(lease.tag, lease.slots, lease.pool_bufs, lease.private)

    def _return(self, tag: int, slots, pool_bufs, private=_EMPTY) -> None:
        if slots:
            self.free_slots.extend(reversed(slots))
        if pool_bufs:
            self.free_bufs.extend(reversed(pool_bufs))
        for length, mem in private:      # the kernel is done with it: the next chain's
            spare = self._spare.get(length)
            if spare is None:
                if len(self._spare) >= SPARE_LENGTHS or length > SPARE_BYTES:
                    continue
                spare = self._spare.setdefault(length, [])
            if len(spare) * length < SPARE_BYTES:
                spare.append(mem)
        self.free_tags.append(tag)

    def take_many(self, ntags: int, nslots: int) -> tuple[list, list] | None:
        """A map's window: ntags tags and ntags * nslots slots, or None (no room yet)."""
        if len(self.free_tags) < ntags or len(self.free_slots) < ntags * nslots:
            return None
        tags = [self.free_tags.pop() for _ in range(ntags)]
        slots = [self.free_slots.pop() for _ in range(ntags * nslots)]
        return tags, slots

    def take_region(self, size: int):
        """Memory for a map's bytes: a kept region large enough whose views are all gone
        (its pages are already mapped), else a new one."""
        for k, (region, src) in enumerate(self._regions):
            # a view holds `src` (the buffer object it was cut from); here src is referred
            # to by the list's tuple, this loop's name and getrefcount's argument
            if ffi.sizeof(region) >= size and (src is None or sys.getrefcount(src) <= 3):
                del self._regions[k]
                return region
        return _raw("char[]", size)

    def give_region(self, region, src) -> None:
        """A finished map's region (and the buffer object its views were cut from, or
        None): kept for the next map, the two largest at most, REGION_KEEP bytes each."""
        if ffi.sizeof(region) <= REGION_KEEP:
            self._regions.append((region, src))
            self._regions.sort(key=lambda e: -ffi.sizeof(e[0]))
            del self._regions[REGIONS_KEPT:]

    def give_back_many(self, tags: list, slots: list) -> None:
        self.free_slots.extend(reversed(slots))
        self.free_tags.extend(reversed(tags))

    # -- files registered for good (caller holds the lock) --------------------------------
    def register(self, r, fd: int, ring) -> Fixed:
        if not self.free_slots:
            raise ChainError(f"all {self.slots} slots are in use; pass Ring(slots=...) larger")
        slot = self.free_slots.pop()
        ret = lib.sk_register_slot(r, slot, fd)
        if ret < 0:
            self.free_slots.append(slot)
            raise OSError(-ret, f"registering fd {fd}: {os.strerror(-ret)}")
        self._generation += 1
        h = Fixed(None, None, None, slot, ring=ring, generation=self._generation, key=_KEY)
        self.registered[slot] = h
        return h

    def unregister(self, r, handle: Fixed) -> None:
        slot = handle.slot
        current = self.registered.get(slot) if isinstance(slot, int) else None
        if current is not handle:
            now = (f"; slot {slot} now holds generation {current.generation}"
                   if current is not None else "")
            raise ChainError(f"{handle!r} is stale: it was already unregistered{now}")
        del self.registered[slot]
        lib.sk_unregister_slot(r, slot)
        self.free_slots.append(slot)

    def holds(self, handle: Fixed) -> bool:
        """Is this register_file() handle the current one of its slot?"""
        return self.registered.get(handle.slot) is handle


def _next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p
