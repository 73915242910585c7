"""Values for a chain's Params, laid out the way the native layer binds them into the steps
(struct sk_bind in _native/shim.h): a row of two 64-bit words per Param -- an int, or the
offset of the value's bytes in a values arena, and their length -- for one run (Ring.run)
or for many (Ring.map). Every value is checked here, with the Param's name in the error,
before anything reaches the kernel; the native layer checks every row again."""
from __future__ import annotations

import array
import itertools
import os
from typing import Any

from ._native import ffi
from .chain import MAX_FD, MAX_PATH, MAX_RW, Frozen, Param
from .errors import ChainError

_U64 = 2**64 - 1
NO_VALUES = ffi.new("uint64_t[]", 2)
NO_ARENA = ffi.new("char[]", 1)
_raw_alloc = ffi.new_allocator(should_clear_after_alloc=False)


def _path(p: Param, v) -> bytes:
    if type(v) is bytes:
        raw = v
    elif isinstance(v, (str, bytes, os.PathLike)):
        raw = os.fsencode(v)
    else:
        raise TypeError(f"Param {p.name!r} is a path: str, bytes or os.PathLike, "
                        f"not {type(v).__name__}")
    if not raw:
        raise ChainError(f"Param {p.name!r}: the path is empty")
    if b"\0" in raw:
        raise ChainError(f"Param {p.name!r}: path {raw[:64]!r} contains a NUL byte")
    if len(raw) > MAX_PATH:
        raise ChainError(f"Param {p.name!r}: the path is {len(raw)} bytes; Linux paths are at "
                         f"most {MAX_PATH}")
    return raw + b"\0"


def _data(p: Param, v) -> bytes:
    if isinstance(v, str):
        raise TypeError(f"Param {p.name!r} is data: bytes-like, not str (encode it first)")
    try:
        raw = bytes(memoryview(v))
    except TypeError:
        raise TypeError(f"Param {p.name!r} is data: bytes-like, not {type(v).__name__}") from None
    if len(raw) > MAX_RW:
        raise ChainError(f"Param {p.name!r}: data is {len(raw)} bytes; one request moves at "
                         f"most {MAX_RW}")
    return raw


def _int(p: Param, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"Param {p.name!r} is {'an' if p.kind == 'offset' else 'a'} {p.kind}: "
                        f"an int, not {type(v).__name__}")
    if not lo <= v <= hi:
        raise ChainError(f"Param {p.name!r} = {v} is out of range [{lo}, {hi}]")
    return v


def _word(p: Param, v) -> int:
    kind = p.kind
    if kind == "fd":
        if not isinstance(v, int):
            fileno = getattr(v, "fileno", None)
            if callable(fileno):
                v = fileno()
        return _int(p, v, 0, MAX_FD)
    if kind == "offset":
        return _int(p, v, -1, 2**63 - 1) & _U64
    if kind == "length":
        return _int(p, v, 0, p.limit)
    return 0            # a Param no step uses: its value is not needed


class Rows:
    """The values of `count` runs: the words (cdata uint64_t[count * 2 * nparams]) and the
    values arena; `lengths(i)` gives run i's per-run lengths (data, a Param length)."""
    __slots__ = ("count", "nparams", "words", "arena", "arena_len", "_keep", "_sized")

    def __init__(self, fz: Frozen, count: int, words, arena: bytes):
        self.count = count
        self.nparams = len(fz.params)
        self.arena_len = len(arena)
        if words is None:
            self.words = NO_VALUES
        else:
            self.words = ffi.from_buffer("uint64_t[]", words)
        self.arena = ffi.from_buffer(arena) if arena else NO_ARENA
        self._keep = (words, arena)
        # step -> (word index in a row): the length the step was asked for in that run
        self._sized = tuple((step, 2 * p + (1 if fz.params[p].kind == "data" else 0))
                            for step, p, _ in fz.sized)

    def lengths(self, i: int) -> dict | None:
        if not self._sized:
            return None
        base = i * 2 * self.nparams
        w = self.words
        return {step: w[base + k] for step, k in self._sized}


def _check_names(fz: Frozen, values: dict) -> None:
    names = {p.name for p in fz.params}
    extra = values.keys() - names
    if extra:
        raise ChainError(f"the chain has no Param {sorted(extra)[0]!r}; its Params are "
                         f"{sorted(names) or 'none'}")
    missing = names - values.keys()
    if missing:
        raise ChainError(f"no value for Param {sorted(missing)[0]!r}: give every Param of the "
                         f"chain ({', '.join(sorted(names))})")


def fill(fz: Frozen, values: dict, words) -> tuple[bytes, dict | None]:
    """One run's values written into `words` (2 per Param) -> (the values arena, the
    per-run lengths of sized steps or None). The Prepared fast path: no Rows object."""
    params = fz.params
    if len(values) != len(params):
        _check_names(fz, values)
    blobs = []
    at = 0
    for p in params:
        try:
            v = values[p.name]
        except KeyError:
            _check_names(fz, values)
            raise
        k = 2 * p.index
        if p.kind == "path" or p.kind == "data":
            raw = _path(p, v) if p.kind == "path" else _data(p, v)
            words[k] = at
            words[k + 1] = len(raw)
            blobs.append(raw)
            at += len(raw)
        else:
            words[k] = _word(p, v)
    lengths = None
    if fz.sized:
        lengths = {step: words[2 * i + (1 if params[i].kind == "data" else 0)]
                   for step, i, _ in fz.sized}
    return (blobs[0] if len(blobs) == 1 else b"".join(blobs)) or b"\0", lengths


def row(fz: Frozen, values: dict) -> Rows:
    """One run's values (Ring.run(chain, **values))."""
    _check_names(fz, values)
    return _build(fz, [values])


def rows(fz: Frozen, seq) -> Rows:
    """Many runs' values (Ring.map): dicts by Param name, or plain values when the chain has
    exactly one Param."""
    params = fz.params
    if not params:
        raise ChainError("map(chain, rows) runs a chain with Params (Chain.param); this one "
                         "has none: pass an iterable of chains instead")
    if isinstance(seq, (str, bytes, dict)):
        raise TypeError(f"rows must be an iterable of values, one per run, not a "
                        f"{type(seq).__name__}")
    seq = list(seq)
    if not seq:
        raise ChainError("map(chain, rows) got no rows")
    if len(params) == 1 and not isinstance(seq[0], dict):
        p = params[0]
        if p.kind == "path" and all(type(v) is bytes for v in seq):
            return _paths_fast(fz, p, seq)
        seq = [{p.name: v} for v in seq]
    for i, values in enumerate(seq):
        if not isinstance(values, dict):
            raise TypeError(f"row {i} must be a dict of Param values (the chain has "
                            f"{len(params)} Params), not {type(values).__name__}")
        if len(values) != len(params) or any(p.name not in values for p in params):
            try:
                _check_names(fz, values)
            except ChainError as exc:
                raise ChainError(f"row {i}: {exc}") from None
    return _build(fz, seq)


def _build(fz: Frozen, seq: list) -> Rows:
    params = fz.params
    n = len(params)
    words: list[int] = []
    blobs: list[bytes] = []
    at = 0
    for i, values in enumerate(seq):
        try:
            for p in params:
                v = values[p.name]
                if p.kind == "path" or p.kind == "data":
                    raw = _path(p, v) if p.kind == "path" else _data(p, v)
                    words.append(at)
                    words.append(len(raw))
                    blobs.append(raw)
                    at += len(raw)
                else:
                    words.append(_word(p, v))
                    words.append(0)
        except (TypeError, ChainError) as exc:
            if len(seq) == 1:
                raise
            raise type(exc)(f"row {i}: {exc}") from None
    arr = _array(words, len(seq) * 2 * n)
    return Rows(fz, len(seq), arr, b"".join(blobs))


def _paths_fast(fz: Frozen, p: Param, paths: list) -> Rows:
    """One path Param, every value bytes: the arena is one join, the checks whole-list."""
    arena = b"\0".join(paths) + b"\0"
    lens = list(map(len, paths))
    if arena.count(b"\0") != len(paths) or min(lens) == 0 or max(lens) > MAX_PATH:
        for v in paths:               # find the culprit and say which
            try:
                _path(p, v)
            except ChainError as exc:
                raise ChainError(f"row {paths.index(v)}: {exc}") from None
    offs = itertools.accumulate((k + 1 for k in lens), initial=0)
    words = [w for pair in zip(offs, (k + 1 for k in lens)) for w in pair]
    return Rows(fz, len(paths), _array(words, 2 * len(paths)), arena)


def _array(words: list, n: int) -> Any:
    return array.array("Q", words) if n else None
