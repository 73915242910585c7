"""Chain: the description of a handler's system calls and how their data flows.

A chain is built without a ring. Each step method validates its arguments at once (so
bad input never reaches the kernel) and returns a typed handle:

    Fixed       a direct-file slot filled by openat/accept/socket; later steps take it and
                get IOSQE_FIXED_FILE automatically (the slot number is chosen by the ring
                when the chain is laid, so every step that names it sees the same number)
    BufferStep  a read/recv/statx whose bytes land in a buffer; write/send take it as data
    Step        any other step, for indexing results: result[handle]
    Param       a value given when the chain runs (Chain.param): a path, an fd, an offset,
                a read's length or the bytes to write, bound by the native layer into the
                step at each run, so one chain serves many files (Ring.run(chain, name=v),
                Ring.map(chain, rows))

Handles are made only by the library, and a chain trusts none of their fields: it finds
the step a handle names in its own records (by identity), so a forged or edited handle is
refused before anything is registered. The native layer checks every index again.

`Chain._freeze()` packs the steps into the compact description the native layer lays
into the SQ (struct sk_step in _native/shim.h) in one C call, and decides how each step is
linked to the next (see _link_out).
"""
from __future__ import annotations

import enum
import ipaddress
import math
import os
import socket as _socket
import struct
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar, overload

from . import ops as _ops
from ._native import ffi
from ._native import lib as _lib
from .errors import ChainError

MAX_RW = 0x7FFFF000          # the kernel's MAX_RW_COUNT: one read/write moves at most this
MAX_PATH = 4095              # PATH_MAX without the terminating NUL
_U64 = 2**64 - 1
MAX_STEPS = 4096             # a chain this long would not fit any sensible ring anyway
ARENA_INLINE = 64 * 1024     # data up to this size is copied into the chain's arena
STATX_SIZE = 256
MAX_FD = 2**31 - 1
# A timeout must fit a timespec even when added to CLOCK_MONOTONIC's now (the chain's
# deadline is absolute): 2**62 ns, about 146 years.
MAX_TIMEOUT_NS = 2**62
MAX_TIMEOUT = MAX_TIMEOUT_NS / 1e9
_KEY = object()              # only the library makes handles
_NULL = ffi.NULL

# struct sk_step (_native/shim.h) as Python packs it
def _struct_of(ctype: str) -> struct.Struct:
    """The struct module's format of a C struct, made from the compiler's layout as cffi
    reports it (shim.h is its one definition): every field where the compiler put it."""
    codes = {"uint8_t": "B", "int32_t": "i", "uint32_t": "I", "uint64_t": "Q", "int64_t": "q"}
    fmt, at = "<", 0
    for name, f in ffi.typeof(ctype).fields:
        if f.offset != at or f.type.cname not in codes:
            raise ImportError(f"{ctype}.{name} ({f.type.cname} at {f.offset}) can't be packed "
                              f"after {at} bytes: give shim.h explicit padding fields")
        fmt += codes[f.type.cname]
        at += ffi.sizeof(f.type)
    if at != ffi.sizeof(ctype):
        raise ImportError(f"{ctype} has {ffi.sizeof(ctype) - at} bytes of tail padding")
    return struct.Struct(fmt)


STEP_STRUCT = _struct_of("struct sk_step")
_pack = STEP_STRUCT.pack
_OFF_LINK, _OFF_TIMEOUT_KIND, _OFF_TIMEOUT_NS = 1, 50, 56
_OPS = _ops.BY_NAME

FD_NONE, FD_PLAIN, FD_LOCAL_SLOT, FD_RING_SLOT = 0, 1, 2, 3
ADDR_VALUE, ADDR_ARENA, ADDR_BUFFER = 0, 1, 2
# what a Param is bound to (enum in _native/shim.h, taken from the compiler)
BIND_PATH, BIND_FD, BIND_OFF, BIND_LEN, BIND_DATA = (
    _lib.SK_BIND_PATH, _lib.SK_BIND_FD, _lib.SK_BIND_OFF, _lib.SK_BIND_LEN, _lib.SK_BIND_DATA)
MAX_PARAMS = 255
# the kind of value each binding takes; a Param used twice must take one kind
_BIND_KIND = {BIND_PATH: "path", BIND_FD: "fd", BIND_OFF: "offset", BIND_LEN: "length",
              BIND_DATA: "data"}
_RESERVED = frozenset({"timeout", "block", "window", "chain"})   # run()/map() keywords
TIMEOUT_NONE, TIMEOUT_REL, TIMEOUT_ABS = 0, 1, 2


class Link(enum.IntEnum):
    """How each step of a chain is tied to the next."""
    NONE = 0   # independent requests published together; each runs on its own
    SOFT = 1   # IOSQE_IO_LINK: a failed (or short) step cancels the rest (default)
    HARD = 2   # IOSQE_IO_HARDLINK: the rest runs even after a failure


class Step:
    """Handle of one step in a chain; use it to index the ChainResult."""
    __slots__ = ("chain", "index", "op")

    def __init__(self, chain: "Chain | None", index: int | None, op: str | None, key=None):
        if key is not _KEY:
            raise TypeError("handles are made by a Chain's step methods and by "
                            "Ring.register_file, not by hand")
        self.chain = chain
        self.index = index
        self.op = op

    def __repr__(self) -> str:
        return f"<{type(self).__name__} step {self.index} ({self.op})>"


class Fixed(Step):
    """A direct (registered) file slot.

    Made by Chain.openat/accept/socket (a slot that lives as long as the chain) or by
    Ring.register_file (a slot that lives until Ring.unregister_file; `generation` tells
    successive registrations of the same slot apart)."""
    __slots__ = ("slot", "ring", "generation")

    def __init__(self, chain, index, op, slot: int, ring=None, generation: int = 0, key=None):
        if key is not _KEY:            # (Step.__init__'s work inline: a frame per step less)
            Step.__init__(self, chain, index, op, key)
        self.chain, self.index, self.op = chain, index, op
        self.slot = slot
        self.ring = ring
        self.generation = generation

    def __repr__(self) -> str:
        if self.ring is not None:
            return f"<Fixed ring slot {self.slot} generation {self.generation}>"
        return f"<Fixed chain slot {self.slot} from step {self.index} ({self.op})>"


class BufferStep(Step):
    """A step whose bytes land in a buffer (read, recv, statx)."""
    __slots__ = ("buffer", "length", "exact")

    def __init__(self, chain, index, op, buffer: int, length: int, exact: bool, key=None):
        if key is not _KEY:
            Step.__init__(self, chain, index, op, key)
        self.chain, self.index, self.op = chain, index, op
        self.buffer = buffer
        self.length = length
        self.exact = exact   # a short result is a failure, so the bytes are all there


class Param:
    """A placeholder for a value given at each run (made by Chain.param).

    Where a step takes a path (openat, statx), a file (an fd), an offset (read, write), a
    read's length (with max_length=) or data (write, send), a Param may stand instead;
    Ring.run(chain, name=value) and Ring.map(chain, rows) give the values. `kind` is what
    it was used as: "path", "fd", "offset", "length" or "data"."""
    __slots__ = ("chain", "name", "index", "kind", "limit")

    def __init__(self, chain, name: str, index: int, key=None):
        if key is not _KEY:
            raise TypeError("a Param is made by Chain.param(name), not by hand")
        self.chain = chain
        self.name = name
        self.index = index
        self.kind: str | None = None
        self.limit = MAX_RW          # a length: at most its read's buffer

    def __repr__(self) -> str:
        return f"<Param {self.name!r} ({self.kind or 'unused'})>"


_H = TypeVar("_H", bound=Step)   # _add gives back the handle it was given


class _StepInfo:
    """What the ring needs to know about a step beyond its packed SQE description."""
    __slots__ = ("op", "handle", "length", "buffer", "buf_len", "fills_slot", "closes_slot",
                 "exact", "timeout")

    def __init__(self, op, handle, length, buffer, buf_len, fills_slot, closes_slot, exact,
                 timeout):
        self.op = op                    # ops.Op
        self.handle = handle
        self.length = length            # requested transfer length (short-result check)
        self.buffer = buffer            # local buffer this step fills, -1 none
        self.buf_len = buf_len          # that buffer's size
        self.fills_slot = fills_slot    # local slot this step fills, -1 none
        self.closes_slot = closes_slot  # local slot this step closes, -1 none
        self.exact = exact              # a short result is a failure (and breaks a link)
        self.timeout = timeout          # seconds, or None


@dataclass(slots=True)
class Frozen:
    """What the ring needs to lay one chain; immutable, shared by every run of it."""
    packed: bytes
    arena: bytes
    nsteps: int
    total: int                   # SQEs = CQEs, linked timeouts included
    step_pos: tuple              # step index -> SQE position of the step
    timeout_pos: tuple           # step index -> SQE position of its timeout, or -1
    nslots: int
    buffers: tuple               # local buffer index -> length
    ring_slots: tuple            # ring-registered Fixed handles used
    opcodes: frozenset
    ntimeouts: int
    steps: tuple                 # _StepInfo per step
    pins: tuple                  # large data objects that must outlive the chain
    chain: object                # the Chain (handles are checked against it)
    soft: bool                   # Link.SOFT: a failure cancels the rest
    data_steps: tuple            # (step index, local buffer, is statx) for steps with bytes
    exact_pos: tuple             # (SQE position, length) of steps a short result fails
    exact: frozenset             # their step indices
    links: tuple                 # step index -> the Link it was laid with to the next
    slot_fill_pos: tuple         # local slot -> SQE position of the step that fills it
    slot_close_pos: tuple        # local slot -> SQE positions of steps that close it
    closes_all: bool = False     # every slot has a close step: all CQEs >= 0, none to empty
    params: tuple = ()           # the chain's Params, by index
    binds: tuple = ()            # (step, BIND_*, param index), sorted by step
    sized: tuple = ()            # (step, param index) whose length is the value's
    cdata: Any = field(default=None, repr=False)      # native views, made by the ring


_IDENTITY: dict[int, tuple[tuple, tuple]] = {}


def _identity(n: int) -> tuple[tuple, tuple]:
    """(step -> SQE position, step -> timeout position) of n steps without timeouts."""
    pos = _IDENTITY.get(n)
    if pos is None:
        pos = _IDENTITY[n] = (tuple(range(n)), (-1,) * n)
    return pos


def _check_int(name: str, value, lo: int, hi: int, exc=ChainError) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise exc(f"{name} = {value} is out of range [{lo}, {hi}]")
    return value


def _check_bool(name: str, value) -> bool:
    if type(value) is not bool:
        raise TypeError(f"{name} must be True or False, not {type(value).__name__} {value!r}")
    return value


def _check_timeout(timeout, name: str = "timeout") -> float | None:
    """Seconds, finite, > 0 and at most MAX_TIMEOUT; None for no timeout."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be seconds as an int or float, not {type(timeout).__name__}")
    try:
        ok = 0 < timeout <= MAX_TIMEOUT and math.isfinite(timeout)
    except OverflowError:      # an int too large for a float
        ok = False
    if not ok:
        raise ChainError(f"{name} = {timeout!r} s is out of range: a timeout is finite, > 0 and "
                         f"at most {MAX_TIMEOUT:.0f} s (2**62 ns, what a kernel timespec holds "
                         f"with the deadline added); pass None for no timeout")
    return float(timeout)


def _timeout_ns(seconds: float) -> int:
    return max(1, min(int(seconds * 1e9), MAX_TIMEOUT_NS))


def sockaddr(address) -> bytes:
    """Pack an address the way the kernel wants it: (host, port) for IPv4/IPv6 (numeric
    hosts only: no DNS lookups inside a chain), a str/bytes path for AF_UNIX."""
    if isinstance(address, tuple):
        if len(address) < 2:
            raise ChainError(f"address {address!r} must be (host, port)")
        host, port = address[0], address[1]
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, not {type(host).__name__}")
        _check_int("port", port, 0, 65535)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ChainError(f"host {host!r} is not a numeric address; resolve it first "
                             f"with socket.getaddrinfo()") from None
        if ip.version == 4:
            return struct.pack("=H", _socket.AF_INET) + struct.pack("!H", port) + ip.packed + bytes(8)
        flow = address[2] if len(address) > 2 else 0
        scope = address[3] if len(address) > 3 else 0
        return (struct.pack("=H", _socket.AF_INET6) + struct.pack("!HI", port, flow)
                + ip.packed + struct.pack("=I", scope))
    if isinstance(address, (str, bytes, os.PathLike)):
        path = os.fsencode(address)
        if len(path) > 107:
            raise ChainError(f"AF_UNIX path is {len(path)} bytes; the limit is 107")
        abstract = path[:1] == b"\0"
        return struct.pack("=H", _socket.AF_UNIX) + path + (b"" if abstract else b"\0")
    raise TypeError(f"address must be (host, port) or an AF_UNIX path, not {type(address).__name__}")


class Chain:
    """System calls that run one after another in the kernel, sharing fds and buffers.

        chain = Chain()
        f = chain.openat("/etc/hostname")
        data = chain.read(f, 4096)
        chain.close(f)
        result = ring.run(chain)
        result[data].data   # the bytes read

    link: Link.SOFT (default) cancels the rest after a failure; Link.HARD keeps going;
    Link.NONE makes the steps independent (a batch published in one go).
    timeout: seconds for the whole chain, enforced by the kernel (linked timeouts with
    an absolute deadline on every step that has no timeout of its own).
    """

    # What most chains never use is a shared empty tuple until a step needs a list of its
    # own (_lazy): a fresh chain is built for every run, so each container costs.
    _ring_slots: Any = ()        # ring-registered Fixed handles the steps use
    _ring_seen: Any = ()         # slot -> that handle, between _file and _add
    _pins: Any = ()              # large data objects that must outlive the chain
    _params: Any = ()            # Params, by index
    _names: Any = ()             # Param name -> Param
    _binds: Any = ()             # (step, BIND_*, param index)
    _sized: Any = ()             # (step, param, exact): length per run
    _exact = 0                   # bit i: step i's short result is a failure (the shape key)

    def __init__(self, *, link: Link = Link.SOFT, timeout: float | None = None):
        if type(link) is not Link:
            raise TypeError(f"link must be a sakura_uring.Link, not {type(link).__name__}")
        self.link = link
        self.timeout = _check_timeout(timeout)
        self._steps: list[_StepInfo] = []
        self._packed: list[bytes] = []
        self._arena = bytearray()
        self._frozen: dict[bool, Frozen] = {}
        # what the steps take and the shape key needs, counted as they are added; the rest
        # of what the ring needs is worked out once per shape (_freeze_new)
        self._nslots = 0
        self._nbufs = 0
        self._ntimed = 0                                 # steps with a timeout of their own

    def _lazy(self, name: str, make):
        """The chain's own container `name` (made by `make` on first use)."""
        have = self.__dict__.get(name)
        if have is None:
            have = self.__dict__[name] = make()
        return have

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        names = " -> ".join(s.op.name for s in self._steps) or "empty"
        return f"<Chain {names} link={self.link.name}>"

    @property
    def steps(self) -> list[Step]:
        return [s.handle for s in self._steps]

    def param(self, name: str) -> Param:
        """A value given at each run instead of now: `p = chain.param("path")`, then
        `chain.openat(p)` and `ring.run(chain, path=b"/etc/hostname")` or
        `ring.map(chain, [b"/a", b"/b"])`. The chain is laid with the value bound in by
        the native layer, at the cost of a prepared chain (nothing is rebuilt)."""
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(f"a Param's name must be a Python identifier, not {name!r}")
        if name in _RESERVED:
            raise ChainError(f"{name!r} is a keyword of run()/map(); name the Param otherwise")
        if name in self._names:
            raise ChainError(f"the chain already has a Param named {name!r}")
        if len(self._params) >= MAX_PARAMS:
            raise ChainError(f"a chain takes at most {MAX_PARAMS} Params")
        p = Param(self, name, len(self._params), _KEY)
        self._lazy("_params", list).append(p)
        self._lazy("_names", dict)[name] = p
        return p

    @property
    def params(self) -> list[Param]:
        return list(self._params)

    def _bind(self, p: Param, what: int) -> Param:
        """Check that `p` is this chain's and may stand for a `what` (_add records it)."""
        if p.chain is not self or p.index >= len(self._params) or self._params[p.index] is not p:
            raise ChainError(f"{p!r} belongs to another chain")
        kind = _BIND_KIND[what]
        if p.kind not in (None, kind):
            raise ChainError(f"{p!r} is already used as a {p.kind}; a Param is one kind of value")
        return p

    # -- argument kinds ------------------------------------------------------------
    def _own(self, h: Step, what: str) -> _StepInfo:
        """The record of the step a handle names, found by identity: a handle whose fields
        were changed, or one of another chain, is refused."""
        if h.chain is not self:
            raise ChainError(f"{what} {h!r} belongs to another chain; a chain's slots and "
                             f"buffers live only as long as that chain")
        idx = h.index
        steps = self._steps
        if type(idx) is not int or not 0 <= idx < len(steps) or steps[idx].handle is not h:
            raise ChainError(f"{what} {h!r} is not a handle this chain made (was it changed?)")
        return steps[idx]

    def _file(self, f, what: str = "file") -> tuple[int, Any]:
        if isinstance(f, Fixed):                 # first: a chain's own slot is the common case
            if f.ring is not None:
                if not f.ring.is_registered(f):
                    raise ChainError(f"{what} {f!r} is no longer registered with its ring "
                                     f"(unregister_file was called); register the file again")
                self._lazy("_ring_seen", dict)[f.slot] = f   # _add takes it if the step is added
                return FD_RING_SLOT, f.slot
            info = self._own(f, what)
            if info.fills_slot < 0:
                raise ChainError(f"{what} {f!r} does not name a slot")
            return FD_LOCAL_SLOT, info.fills_slot
        if isinstance(f, Param):
            return FD_PLAIN, self._bind(f, BIND_FD)
        if isinstance(f, Step):
            raise TypeError(f"{what} must be a Fixed slot or an fd, not a {type(f).__name__} "
                            f"(only openat/accept/socket steps yield files)")
        if isinstance(f, int) and not isinstance(f, bool):
            if not 0 <= f <= MAX_FD:
                raise ChainError(f"{what} fd {f} is out of range [0, {MAX_FD}]")
            return FD_PLAIN, f
        fileno = getattr(f, "fileno", None)
        if callable(fileno):
            return FD_PLAIN, _check_int(f"{what}.fileno()", fileno(), 0, MAX_FD)
        raise TypeError(f"{what} must be a Fixed slot, an int fd or an object with fileno(), "
                        f"not {type(f).__name__}")

    def _put(self, data: bytes) -> int:
        off = len(self._arena)
        self._arena += data
        return off

    def _path(self, path):
        if type(path) is bytes:                 # the common case first
            raw = path
        elif isinstance(path, Param):
            return self._bind(path, BIND_PATH)
        elif isinstance(path, (str, bytes, os.PathLike)):
            raw = os.fsencode(path)
        else:
            raise TypeError(f"path must be str, bytes or os.PathLike, not {type(path).__name__}")
        if b"\0" in raw:
            raise ChainError(f"path {raw!r} contains a NUL byte")
        if not raw:
            raise ChainError("path is empty")
        if len(raw) > MAX_PATH:
            raise ChainError(f"path is {len(raw)} bytes; Linux paths are at most {MAX_PATH}")
        return self._put(raw + b"\0")

    def _data(self, data) -> tuple:
        """-> (addr_kind, addr, length); a Param stands in for both addr and length."""
        if isinstance(data, Param):
            p = self._bind(data, BIND_DATA)
            return ADDR_VALUE, p, p
        if isinstance(data, BufferStep):
            info = self._own(data, "data")
            if info.length < 0:
                raise ChainError(f"{data!r} reads a Param's length, which a link cannot carry "
                                 f"to the step that sends it; give the read a fixed length")
            if not info.exact and info.op.name != "read":
                raise ChainError(
                    f"{data!r} may come back short, and a link cannot carry the byte count: "
                    f"the step would send {info.length} bytes, some of them stale. Use "
                    f"recv(..., waitall=True) so a short receive breaks the chain, or a kernel "
                    f"handler to send exactly the bytes received")
            # a read whose bytes are sent on must be whole: its short result now breaks
            # the chain before the consumer (stale bytes are never sent)
            info.exact = data.exact = True
            self._exact |= 1 << info.handle.index
            if self._frozen:
                self._frozen.clear()
            return ADDR_BUFFER, info.buffer, info.length
        if isinstance(data, Step):
            raise TypeError(f"data must be bytes or a read/recv step, not {data!r}")
        if isinstance(data, str):
            raise TypeError("data must be bytes-like, not str (encode it first)")
        try:
            view = memoryview(data)
        except TypeError:
            raise TypeError(f"data must be bytes-like or a read/recv step, not "
                            f"{type(data).__name__}") from None
        raw = bytes(view)   # a private copy: the caller may change theirs while in flight
        if len(raw) > MAX_RW:
            raise ChainError(f"data is {len(raw)} bytes; one request moves at most {MAX_RW}")
        if len(raw) <= ARENA_INLINE:
            return ADDR_ARENA, self._put(raw), len(raw)
        view = ffi.from_buffer(raw)
        self._lazy("_pins", list).append((raw, view))
        return ADDR_VALUE, int(ffi.cast("uintptr_t", view)), len(raw)

    def _add(self, name: str, handle: _H, timeout, *, fd_kind=FD_NONE, addr_kind=ADDR_VALUE,
             fd=-1, len=0, op_flags=0, off=0, addr=0, addr2=0, file_index=-1, fd2=-1,
             fd2_kind=FD_NONE, addr2_kind=ADDR_VALUE, mode=0, length=0, buffer=-1,
             buf_len=0, fills=-1, closes=-1, exact=False) -> _H:
        """Record a step whose arguments all passed their checks. The slot it fills and the
        buffer it uses are taken here, last, so a refused step takes nothing."""
        if timeout is not None:
            timeout = _check_timeout(timeout)
        op = _OPS[name]
        binds = None
        # a Param of another chain was refused by _bind already: a chain without Params
        # has none among its fields
        if self._params and Param in (type(fd), type(addr), type(off), type(len)):
            binds, fd, addr, off, len, length = self._binds_of(handle.index, fd, addr, off, len,
                                                               length)
            if addr_kind == ADDR_ARENA:
                addr_kind = ADDR_VALUE     # the native layer points it into the values
        # link, timeout kind and timeout ns are patched in by _freeze
        packed = _pack(op.opcode, 0, fd_kind, addr_kind, fd, len, op_flags, off, addr, addr2,
                       file_index, fd2, fd2_kind, addr2_kind, 0, 0, mode, 0)
        if fd_kind == FD_RING_SLOT:
            self._lazy("_ring_slots", list).append(self._ring_seen[fd])
        if fd2_kind == FD_RING_SLOT:
            self._lazy("_ring_slots", list).append(self._ring_seen[fd2])
        i = handle.index    # (`len` is a field here)
        assert i is not None     # a step's own handle has its index
        if fills >= 0:
            self._nslots += 1
        if buffer >= 0:
            self._nbufs += 1
        if timeout is not None:
            self._ntimed += 1
        if exact:
            self._exact |= 1 << i
        self._packed.append(packed)
        self._steps.append(_StepInfo(op, handle, length, buffer, buf_len, fills, closes, exact,
                                     timeout))
        if binds:
            step = handle.index
            assert step is not None          # a step's own handle has its index
            for what, p in binds:
                p.kind = _BIND_KIND[what]
                self._lazy("_binds", list).append((step, what, p.index))
                if what in (BIND_LEN, BIND_DATA):
                    self._lazy("_sized", list).append((step, p.index, exact))
        if self._frozen:
            self._frozen.clear()
        return handle

    def _binds_of(self, step, fd, addr, off, len, length):
        """The Params among a step's fields -> ([(BIND_*, Param)], the fields with 0 for
        each Param). A Param in both addr and len is data; in addr alone, a path."""
        binds = []
        if type(fd) is Param:
            binds.append((BIND_FD, fd))
            fd = 0
        if type(addr) is Param:
            what = BIND_DATA if addr is len else BIND_PATH
            binds.append((what, addr))
            if what == BIND_DATA:
                len = length = -1
            addr = 0
        if type(off) is Param:
            binds.append((BIND_OFF, off))
            off = 0
        if type(len) is Param:
            binds.append((BIND_LEN, len))
            len, length = len.limit, -1
        for what, p in binds:      # before anything is recorded: a refused step takes nothing
            self._bind(p, what)
        return binds, fd, addr, off, 0 if len == -1 else len, length

    def _offset(self, offset):
        """A read/write offset (-1: the file position) as the SQE takes it, or a Param."""
        if isinstance(offset, Param):
            return self._bind(offset, BIND_OFF)
        if type(offset) is not int or not -1 <= offset < 2**63:
            _check_int("offset", offset, -1, 2**63 - 1)
        return offset & _U64

    def _next(self) -> int:
        n = len(self._steps)
        if n >= MAX_STEPS:
            raise ChainError(f"a chain holds at most {MAX_STEPS} steps")
        return n

    # -- steps -----------------------------------------------------------------------
    def nop(self, *, timeout: float | None = None) -> Step:
        """A request that does nothing (measures the ring itself)."""
        return self._add("nop", Step(self, self._next(), "nop", _KEY), timeout)

    @overload
    def openat(self, path, flags: int = ..., mode: int = ..., *,
               direct: Literal[True] = ..., timeout: float | None = ...) -> Fixed: ...

    @overload
    def openat(self, path, flags: int = ..., mode: int = ..., *,
               direct: Literal[False], timeout: float | None = ...) -> Step: ...

    def openat(self, path, flags: int = os.O_RDONLY, mode: int = 0o644, *,
               direct: bool = True, timeout: float | None = None) -> Step:
        """Open `path` (relative to the cwd). direct=True (default): into a slot of the
        chain, returns its Fixed handle. direct=False: a plain fd (yours to close) comes
        back as the step's result."""
        if type(flags) is not int or not 0 <= flags < 2**32:
            _check_int("flags", flags, 0, 2**32 - 1)
        if type(mode) is not int or not 0 <= mode <= 0o7777:
            _check_int("mode", mode, 0, 0o7777)
        if type(direct) is not bool:
            _check_bool("direct", direct)
        if timeout is not None:
            timeout = _check_timeout(timeout)
        i = self._next()
        addr = self._path(path)
        if not direct:
            return self._add("openat", Step(self, i, "openat", _KEY), timeout,
                             addr_kind=ADDR_ARENA, addr=addr, op_flags=flags | os.O_CLOEXEC,
                             mode=mode)
        slot = self._nslots
        # a slot refuses O_CLOEXEC (it is never inherited anyway)
        return self._add("openat", Fixed(self, i, "openat", slot, key=_KEY), timeout,
                         addr_kind=ADDR_ARENA, addr=addr, op_flags=flags & ~os.O_CLOEXEC,
                         mode=mode, file_index=slot, fills=slot)

    def read(self, file, length, offset=0, *, exact: bool = False,
             timeout: float | None = None, max_length: int | None = None) -> BufferStep:
        """Read up to `length` bytes at `offset` (-1: the file position) into a buffer.

        Like os.read, a short read is not an error: the step's data is what was read, its
        `short` is set and the chain goes on. exact=True makes a short read a failure that
        cancels the rest of a Link.SOFT chain; a read whose buffer a later write/send of
        this chain uses is exact by itself (stale bytes are never sent).
        `length` may be a Param: then max_length (the buffer's size) is required and each
        run's length must be at most that."""
        kind, fd = self._file(file)
        size = length
        if isinstance(length, Param):
            self._bind(length, BIND_LEN)
            if max_length is None:
                raise ChainError(f"read(length={length!r}) needs max_length=: the size of the "
                                 f"buffer every run's length must fit")
            size = _check_int("max_length", max_length, 0, MAX_RW)
            if exact:
                raise ChainError("exact=True needs a fixed length (a Param length is checked "
                                 "per run only as `short`)")
        elif max_length is not None:
            raise ChainError("max_length= goes with a Param length only")
        elif type(length) is not int or not 0 <= length <= MAX_RW:
            _check_int("length", length, 0, MAX_RW)
        off = self._offset(offset)
        _check_bool("exact", exact)
        buf = self._nbufs
        if isinstance(length, Param):
            length.limit = min(length.limit, size)   # before _add: it packs the limit
        return self._add("read", BufferStep(self, self._next(), "read", buf, size, exact, _KEY),
                         timeout, fd_kind=kind, fd=fd, addr_kind=ADDR_BUFFER, addr=buf,
                         len=length, off=off, length=size, buffer=buf, buf_len=size,
                         exact=exact)

    def write(self, file, data, offset: int = 0, *, timeout: float | None = None) -> Step:
        """Write bytes, or the buffer a read/recv step of this chain filled, at `offset`.
        A short write is a failure."""
        kind, fd = self._file(file)
        off = self._offset(offset)
        timeout = _check_timeout(timeout)
        akind, addr, length = self._data(data)
        return self._add("write", Step(self, self._next(), "write", _KEY), timeout, fd_kind=kind,
                         fd=fd, addr_kind=akind, addr=addr, len=length, off=off,
                         length=length, exact=True)

    def close(self, file, *, timeout: float | None = None) -> Step:
        """Close a Fixed slot (close_direct) or a plain fd. The closes that end a chain run
        even after a failure (they are hard-linked in; see _link_out)."""
        kind, fd = self._file(file)
        return self._add("close", Step(self, self._next(), "close", _KEY), timeout,
                         fd_kind=kind, fd=fd, closes=fd if kind == FD_LOCAL_SLOT else -1)

    def fsync(self, file, *, datasync: bool = False, timeout: float | None = None) -> Step:
        kind, fd = self._file(file)
        _check_bool("datasync", datasync)
        return self._add("fsync", Step(self, self._next(), "fsync", _KEY), timeout, fd_kind=kind,
                         fd=fd, op_flags=1 if datasync else 0)

    def recv(self, sock, length: int, *, waitall: bool = False, flags: int = 0,
             timeout: float | None = None) -> BufferStep:
        """Receive up to `length` bytes. With waitall=True a short receive is a failure
        (it breaks the chain), which is what makes the buffer safe to send on."""
        kind, fd = self._file(sock, "sock")
        _check_int("length", length, 0, MAX_RW)
        _check_int("flags", flags, 0, 2**31 - 1)
        _check_bool("waitall", waitall)
        if waitall:
            flags |= _socket.MSG_WAITALL
        buf = self._nbufs
        return self._add("recv", BufferStep(self, self._next(), "recv", buf, length, waitall,
                                            _KEY),
                         timeout, fd_kind=kind, fd=fd, addr_kind=ADDR_BUFFER, addr=buf,
                         len=length, op_flags=flags, length=length, buffer=buf, buf_len=length,
                         exact=waitall)

    def send(self, sock, data, *, flags: int = 0, timeout: float | None = None) -> Step:
        """Send bytes, or the buffer a read (or recv(waitall=True)) step filled."""
        kind, fd = self._file(sock, "sock")
        _check_int("flags", flags, 0, 2**31 - 1)
        timeout = _check_timeout(timeout)
        akind, addr, length = self._data(data)
        return self._add("send", Step(self, self._next(), "send", _KEY), timeout, fd_kind=kind,
                         fd=fd, addr_kind=akind, addr=addr, len=length,
                         op_flags=flags | _socket.MSG_NOSIGNAL, length=length)

    @overload
    def accept(self, sock, *, direct: Literal[True] = ..., flags: int = ...,
               timeout: float | None = ...) -> Fixed: ...

    @overload
    def accept(self, sock, *, direct: Literal[False], flags: int = ...,
               timeout: float | None = ...) -> Step: ...

    def accept(self, sock, *, direct: bool = True, flags: int = 0,
               timeout: float | None = None) -> Step:
        """Accept a connection. direct=True (default): into a slot, returns Fixed.
        direct=False: a plain fd (owned by you) comes back as the step's result."""
        kind, fd = self._file(sock, "sock")
        _check_int("flags", flags, 0, 2**31 - 1)
        _check_bool("direct", direct)
        i = self._next()
        if direct:
            slot = self._nslots
            return self._add("accept", Fixed(self, i, "accept", slot, key=_KEY), timeout,
                             fd_kind=kind, fd=fd, op_flags=flags & ~_socket.SOCK_CLOEXEC,
                             file_index=slot, fills=slot)
        return self._add("accept", Step(self, i, "accept", _KEY), timeout, fd_kind=kind, fd=fd,
                         op_flags=flags | _socket.SOCK_CLOEXEC)

    def connect(self, sock, address, *, timeout: float | None = None) -> Step:
        kind, fd = self._file(sock, "sock")
        timeout = _check_timeout(timeout)
        raw = sockaddr(address)
        return self._add("connect", Step(self, self._next(), "connect", _KEY), timeout,
                         fd_kind=kind, fd=fd, addr_kind=ADDR_ARENA, addr=self._put(raw),
                         addr2=len(raw))

    def socket(self, family: int = _socket.AF_INET, type: int = _socket.SOCK_STREAM,
               proto: int = 0, *, timeout: float | None = None) -> Fixed:
        """Create a socket directly in a slot (Linux 5.19+)."""
        _check_int("family", family, 0, 255)
        _check_int("type", type, 0, 2**31 - 1)
        _check_int("proto", proto, 0, 2**31 - 1)
        i = self._next()
        slot = self._nslots
        return self._add("socket", Fixed(self, i, "socket", slot, key=_KEY), timeout, fd=family,
                         op_flags=type & ~_socket.SOCK_CLOEXEC, len=proto, file_index=slot,
                         fills=slot)

    def statx(self, path, *, mask: int = 0x7FF, follow_symlinks: bool = True,
              timeout: float | None = None) -> BufferStep:
        """statx(2) a path; StepResult.stat holds the parsed fields."""
        _check_int("mask", mask, 0, 2**32 - 1)
        _check_bool("follow_symlinks", follow_symlinks)
        timeout = _check_timeout(timeout)
        i = self._next()
        addr = self._path(path)
        buf = self._nbufs
        return self._add("statx", BufferStep(self, i, "statx", buf, STATX_SIZE, True, _KEY),
                         timeout, addr_kind=ADDR_ARENA, addr=addr, addr2_kind=ADDR_BUFFER,
                         addr2=buf, op_flags=0 if follow_symlinks else 0x100,  # AT_SYMLINK_NOFOLLOW
                         len=mask, buffer=buf, buf_len=STATX_SIZE)

    def splice(self, file_in, off_in: int, file_out, off_out: int, length: int, *,
               flags: int = 0, timeout: float | None = None) -> Step:
        """Move `length` bytes between two files, one of which is a pipe, inside the
        kernel. Offsets are -1 for a pipe (or to use the file position)."""
        if isinstance(file_in, Param):
            raise ChainError("splice takes a Param as file_out only")
        kin, fin = self._file(file_in, "file_in")
        kout, fout = self._file(file_out, "file_out")
        _check_int("off_in", off_in, -1, 2**63 - 1)
        _check_int("off_out", off_out, -1, 2**63 - 1)
        _check_int("length", length, 0, MAX_RW)
        _check_int("flags", flags, 0, 2**31 - 1)
        return self._add("splice", Step(self, self._next(), "splice", _KEY), timeout,
                         fd_kind=kout, fd=fout, fd2_kind=kin, fd2=fin, off=off_out & _U64,
                         addr=off_in & _U64, len=length, op_flags=flags)

    # -- opcodes newer than liburing 2.3: laid by number -----------------------------
    def install_fd(self, file: Fixed, *, cloexec: bool = True,
                   timeout: float | None = None) -> Step:
        """Turn a slot into a regular fd, returned as the step's result (Linux 6.8+).
        The fd is yours to close; the slot still goes back to the pool."""
        if not isinstance(file, Fixed):
            raise TypeError(f"install_fd needs a Fixed slot, not {type(file).__name__}")
        kind, fd = self._file(file)
        _check_bool("cloexec", cloexec)
        return self._add("install_fd", Step(self, self._next(), "install_fd", _KEY), timeout,
                         fd_kind=kind, fd=fd, op_flags=0 if cloexec else 1)

    def ftruncate(self, file, length: int, *, timeout: float | None = None) -> Step:
        """Truncate (or extend) a file to `length` bytes (Linux 6.9+)."""
        kind, fd = self._file(file)
        _check_int("length", length, 0, 2**63 - 1)
        return self._add("ftruncate", Step(self, self._next(), "ftruncate", _KEY), timeout,
                         fd_kind=kind, fd=fd, off=length)

    def bind(self, sock, address, *, timeout: float | None = None) -> Step:
        """bind(2) a socket, e.g. one made by socket() in this chain (Linux 6.11+)."""
        kind, fd = self._file(sock, "sock")
        timeout = _check_timeout(timeout)
        raw = sockaddr(address)
        return self._add("bind", Step(self, self._next(), "bind", _KEY), timeout, fd_kind=kind,
                         fd=fd, addr_kind=ADDR_ARENA, addr=self._put(raw), addr2=len(raw))

    def listen(self, sock, backlog: int = 128, *, timeout: float | None = None) -> Step:
        """listen(2) on a socket (Linux 6.11+)."""
        kind, fd = self._file(sock, "sock")
        _check_int("backlog", backlog, 0, 65535)
        return self._add("listen", Step(self, self._next(), "listen", _KEY), timeout,
                         fd_kind=kind, fd=fd, len=backlog)

    # -- packing ---------------------------------------------------------------------
    def _link_out(self) -> list[int]:
        """How each step is tied to the next. Link.SOFT (the default) hard-links two kinds
        of step, because the kernel fails a link on any short read or write:
          - a read no later step consumes and not asked exact: like os.read its data is
            what it read, so a short read must not cancel the rest;
          - a step followed only by closes of the chain's own slots (its cleanup): the
            closes run after a failure or a short transfer too (unless the step opens a
            slot itself: if that fails there is nothing to close, and the ring empties
            the other slots the chain filled when it completes).
        A failure still cancels what follows: when a soft-linked step fails, the kernel
        cancels the whole rest of the link, hard-linked steps included."""
        steps = self._steps
        n = len(steps)
        if self.link is not Link.SOFT:
            return [int(self.link)] * (n - 1) + [0]
        out = [0] * n
        cleanup = True          # every step after i closes one of the chain's slots
        for i in range(n - 2, -1, -1):
            cleanup = cleanup and steps[i + 1].closes_slot >= 0
            s = steps[i]
            hard = (cleanup and s.fills_slot < 0) or (s.op.name == "read" and not s.exact)
            out[i] = Link.HARD if hard else Link.SOFT
        return out

    def _freeze(self, deadline: bool) -> Frozen:
        fz = self._frozen.get(deadline)
        if fz is not None:
            return fz
        if not self._steps:
            raise ChainError("the chain has no steps")
        # A chain of plain values has the shape of every chain built the same way: only
        # its arena (paths, small data) differs, so the shape is frozen once (_Shape)
        key = None
        if not (self._params or self._pins or self._ring_slots or self._ntimed):
            key = (b"".join(self._packed), self._exact, self.link, deadline)
            shape = _SHAPES.get(key)
            if shape is not None:
                fz = self._frozen[deadline] = shape.frozen_for(self)
                return fz
        fz = self._freeze_new(deadline)
        if key is not None:
            shape = _SHAPES[key] = _Shape(fz)
            if len(_SHAPES) > SHAPES_MAX:
                _SHAPES.pop(next(iter(_SHAPES)), None)      # the oldest
            fz = shape.frozen_for(self)
        self._frozen[deadline] = fz
        return fz

    def _freeze_new(self, deadline: bool) -> Frozen:
        steps = self._steps
        n = len(steps)
        fills = [i for i, s in enumerate(steps) if s.fills_slot >= 0]    # slot -> its step
        closes: list[list[int]] = [[] for _ in fills]                     # slot -> closers
        for i, s in enumerate(steps):
            if s.closes_slot >= 0:
                closes[s.closes_slot].append(i)
        with_buf = [(i, s) for i, s in enumerate(steps) if s.buffer >= 0]
        size = STEP_STRUCT.size
        packed = bytearray().join(self._packed)
        links = self._link_out()
        for i, link in enumerate(links):
            if link:
                packed[i * size + _OFF_LINK] = link
        if not deadline and not self._ntimed:
            # no linked timeouts: step i is SQE i (the common case, without a pass)
            step_pos, timeout_pos = _identity(n)
            total, ntimeouts = n, 0
            fill_pos = tuple(fills)
            close_pos = tuple(map(tuple, closes))
        else:
            sp, tp = [], []
            pos = ntimeouts = 0
            for i, s in enumerate(steps):
                base = i * size
                if s.timeout is not None:
                    packed[base + _OFF_TIMEOUT_KIND] = TIMEOUT_REL
                    struct.pack_into("<Q", packed, base + _OFF_TIMEOUT_NS, _timeout_ns(s.timeout))
                elif deadline:
                    packed[base + _OFF_TIMEOUT_KIND] = TIMEOUT_ABS   # the ring fills it in
                sp.append(pos)
                pos += 1
                if packed[base + _OFF_TIMEOUT_KIND]:
                    tp.append(pos)
                    pos += 1
                    ntimeouts += 1
                else:
                    tp.append(-1)
            step_pos, timeout_pos, total = tuple(sp), tuple(tp), pos
            fill_pos = tuple(step_pos[i] for i in fills)
            close_pos = tuple(tuple(step_pos[i] for i in c) for c in closes)
        exact = [i for i, s in enumerate(steps) if s.exact and s.length > 0]
        fz = Frozen(
            packed=bytes(packed), arena=bytes(self._arena) or b"\0", nsteps=n, total=total,
            step_pos=step_pos, timeout_pos=timeout_pos, nslots=self._nslots,
            buffers=tuple(s.buf_len for _, s in with_buf), ring_slots=tuple(self._ring_slots),
            opcodes=frozenset(s.op.opcode for s in steps), ntimeouts=ntimeouts,
            data_steps=tuple((i, s.buffer, s.op.name == "statx") for i, s in with_buf),
            exact_pos=tuple((step_pos[i], steps[i].length) for i in exact),
            exact=frozenset(exact), links=tuple(links), steps=tuple(steps),
            pins=tuple(self._pins), chain=self, soft=self.link is Link.SOFT,
            slot_fill_pos=fill_pos, slot_close_pos=close_pos,
            closes_all=all(close_pos), params=tuple(self._params), binds=tuple(self._binds),
            sized=tuple(self._sized))
        return fz


def native_views(fz: Frozen) -> tuple:
    """What the native layer reads of a frozen chain: its steps, arena, buffer lengths and
    the binds of its Params."""
    binds = ffi.new("struct sk_bind[]", [(s, w, p) for s, w, p in fz.binds]) if fz.binds else _NULL
    return (ffi.from_buffer("struct sk_step[]", fz.packed), ffi.from_buffer(fz.arena),
            ffi.new("uint32_t[]", list(fz.buffers) or [0]), binds)


_FIELDS = [f.name for f in fields(Frozen)]
_I_ARENA, _I_CHAIN, _I_STEPS, _I_CDATA = (_FIELDS.index(n) for n in ("arena", "chain", "steps",
                                                                      "cdata"))
SHAPES_MAX = 256           # shapes kept (a program builds few kinds of chain)
_SHAPES: dict[tuple, "_Shape"] = {}


class _Shape:
    """A frozen chain of plain values without its arena and its Chain, with its native
    views: what every chain packed to the same steps shares (Chain._freeze)."""
    __slots__ = ("args", "steps_view", "buf_len")

    def __init__(self, fz: Frozen):
        args = [getattr(fz, n) for n in _FIELDS]
        # a copy of each step's record: the chain that was frozen first may still change
        args[_I_STEPS] = tuple(_StepInfo(s.op, None, s.length, s.buffer, s.buf_len,
                                         s.fills_slot, s.closes_slot, s.exact, None)
                               for s in fz.steps)
        args[_I_ARENA] = args[_I_CHAIN] = args[_I_CDATA] = None
        self.args = args
        self.steps_view, _, self.buf_len, _ = native_views(fz)   # no binds: no Params

    def frozen_for(self, chain: Chain) -> Frozen:
        args = self.args.copy()
        arena = args[_I_ARENA] = bytes(chain._arena) or b"\0"
        args[_I_CHAIN] = chain
        args[_I_CDATA] = (self.steps_view, ffi.from_buffer(arena), self.buf_len, _NULL)
        return Frozen(*args)
