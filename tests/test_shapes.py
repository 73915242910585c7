"""Chains built the same way share one frozen shape (chain._SHAPES): the packed steps, the
link plan, the positions and the native view of the steps are worked out once, and each
chain brings only its own arena (its paths and small data) and its own handles. A shape
must never carry one chain's values into another: every test here runs chains of one
shape with different values and checks each got its own."""
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sakura_uring as su
from sakura_uring import Chain, Link
from sakura_uring import chain as chain_mod

from helpers import assert_pools_full


def _cat(path, link=Link.SOFT):
    c = Chain(link=link)
    f = c.openat(path)
    d = c.read(f, 4096)
    c.close(f)
    return c, d


@pytest.fixture
def files(tmp_path):
    """Files of distinct contents under paths of distinct lengths (an arena of each
    length) and of equal lengths (arenas that differ only in their bytes)."""
    out = []
    for i in range(40):
        name = ("f%02d" % i) + "x" * (i % 7)
        p = tmp_path / name
        p.write_bytes(b"%d:" % i + os.urandom(100 + i))
        out.append(p)
    return out


def test_chains_of_one_shape_each_read_their_own_file(any_ring, files):
    chains = [_cat(p) for p in files]
    frozen = [c._freeze(False) for c, _ in chains]
    # one shape: the steps' packed bytes and native view are the same objects
    assert len({id(fz.packed) for fz in frozen}) == 1
    assert len({id(fz.cdata[0]) for fz in frozen}) == 1
    assert len({fz.arena for fz in frozen}) == len(files)
    for (c, d), p in zip(chains, files):
        assert any_ring.run(c)[d].data == p.read_bytes()
    # many of one shape in flight at once
    results = any_ring.map([c for c, _ in chains], window=16)
    assert [r.data(1) for r in results] == [p.read_bytes() for p in files]
    assert_pools_full(any_ring)


async def _gather(ring, chains):
    import asyncio
    return await asyncio.gather(*[ring.run_async(c) for c in chains])


def test_run_async_chains_of_one_shape_get_their_own_bytes(sqpoll_ring, files):
    import asyncio
    chains = [_cat(p)[0] for p in files]
    results = asyncio.run(_gather(sqpoll_ring, chains))
    assert [r.data(1) for r in results] == [p.read_bytes() for p in files]


def test_a_handle_of_one_chain_does_not_index_another_of_its_shape(ring, files):
    (a, da), (b, db) = _cat(files[0]), _cat(files[1])
    ra, rb = ring.run(a), ring.run(b)
    assert ra._fz.packed is rb._fz.packed            # the same shape
    assert rb[db].data == files[1].read_bytes()
    with pytest.raises(KeyError, match="not a step of this chain"):
        rb[da]


def test_a_chain_changed_after_freezing_leaves_the_shape_as_it_was(ring, tmp_path, files):
    """A read is exact once a later step sends its buffer on; the chain frozen before
    that must not have changed the shape other chains use."""
    out = tmp_path / "out"
    out.write_bytes(b"")
    a = Chain()
    f = a.openat(files[0])
    da = a.read(f, 50)
    first = a._freeze(False)                          # shape: a read that may be short
    w = a.openat(out, os.O_WRONLY)
    a.write(w, da)                                    # now the read is exact
    a.close(w)
    a.close(f)
    assert a._freeze(False).exact == frozenset({1, 3})     # the read, and the write
    short = tmp_path / "short"
    short.write_bytes(b"only 20 bytes here..")
    b = Chain()                                       # a's shape as it was frozen first
    g = b.openat(short)
    db = b.read(g, 50)
    fb = b._freeze(False)
    assert fb.packed is first.packed                  # that shape, unchanged
    assert fb.exact == frozenset() and not fb.steps[1].exact
    assert fb.links == b._freeze_new(False).links
    r = ring.run(b)                                   # a short read is data, not a failure
    assert r.ok and r[db].short and r[db].data == short.read_bytes()
    assert ring.run(a).ok and out.read_bytes() == files[0].read_bytes()[:50]


def test_links_deadlines_and_exactness_are_part_of_the_shape(ring, files):
    soft, _ = _cat(files[0])
    hard, _ = _cat(files[0], Link.HARD)
    assert soft._freeze(False).packed != hard._freeze(False).packed
    assert soft._freeze(True).ntimeouts == 3 and soft._freeze(False).ntimeouts == 0
    e = Chain()
    f = e.openat(files[0])
    e.read(f, 4096, exact=True)
    e.close(f)
    assert e._freeze(False).exact == frozenset({1})
    assert soft._freeze(False).exact == frozenset()
    r = ring.run(e)                                   # the file is shorter: exact fails
    assert not r.ok and r[1].short
    assert ring.run(soft, timeout=5).ok


def test_chains_with_params_ring_files_or_large_data_get_their_own_frozen(ring, files):
    p = Chain()
    f = p.openat(p.param("path"))
    p.read(f, 4096)
    p.close(f)
    q = Chain()
    g = q.openat(q.param("name"))
    q.read(g, 4096)
    q.close(g)
    # the same packed steps, but a value's name is not in them: no shared shape
    assert p._freeze(False).params[0].name == "path"
    assert q._freeze(False).params[0].name == "name"
    assert ring.run(q, name=files[3]).data(1) == files[3].read_bytes()
    with open(files[2], "rb") as fh:
        h = ring.register_file(fh)
        try:
            c = Chain()
            c.read(h, 4096)
            assert c._freeze(False).ring_slots == (h,)
            assert ring.run(c).data(0) == files[2].read_bytes()
        finally:
            ring.unregister_file(h)


def test_the_shapes_kept_are_bounded(ring, files):
    for n in range(chain_mod.SHAPES_MAX + 40):
        c = Chain()
        c.read(0, n + 1)                              # a new length: a new shape
        c._freeze(False)
    assert len(chain_mod._SHAPES) <= chain_mod.SHAPES_MAX
    c, d = _cat(files[5])
    assert ring.run(c)[d].data == files[5].read_bytes()


# -- a shared shape is exactly what freezing the chain alone gives -------------------
_STEPS = st.lists(st.sampled_from(["open", "read", "exact_read", "send_on", "nop", "statx",
                                   "close", "pread"]), min_size=1, max_size=12)

_FIELDS_SHARED = [f for f in chain_mod._FIELDS if f not in ("arena", "chain", "steps", "cdata")]


def _build(plan, path, link):
    c = Chain(link=link)
    files, reads = [], []
    for what in plan:
        if what == "open":
            files.append(c.openat(path))
        elif what in ("read", "exact_read") and files:
            reads.append(c.read(files[-1], 64, exact=what == "exact_read"))
        elif what == "pread":
            reads.append(c.read(0, 16, offset=-1))
        elif what == "send_on" and reads and files:
            c.write(files[0], reads[-1])
        elif what == "statx":
            c.statx(path)
        elif what == "close" and files:
            c.close(files.pop())
        else:
            c.nop()
    return c


@settings(max_examples=150, deadline=None)
@given(plan=_STEPS, link=st.sampled_from(list(Link)), deadline=st.booleans(),
       a=st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b),
       b=st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b))
def test_a_shared_shape_equals_the_chain_frozen_alone(plan, link, deadline, a, b):
    first, second = _build(plan, a, link), _build(plan, b, link)
    first._freeze(deadline)
    got = second._freeze(deadline)                    # from the shape if it is one
    want = second._freeze_new(deadline)
    for name in _FIELDS_SHARED:
        assert getattr(got, name) == getattr(want, name), name
    assert got.arena == want.arena and got.chain is second
    assert [(s.op, s.length, s.buffer, s.buf_len, s.fills_slot, s.closes_slot, s.exact)
            for s in got.steps] == [(s.op, s.length, s.buffer, s.buf_len, s.fills_slot,
                                     s.closes_slot, s.exact) for s in want.steps]
