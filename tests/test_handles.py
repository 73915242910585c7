"""Handles are made only by the library, and neither a forged nor an edited handle can make
a chain touch another chain's slot or buffer: Python finds each handle's step by identity,
and the native layer checks every index the packed steps carry once more."""
import dataclasses
import os
import struct

import pytest

import sakura_uring as su
from sakura_uring import Chain
from sakura_uring.chain import STEP_STRUCT

from helpers import assert_pools_full


@pytest.mark.parametrize("make", [
    lambda c: su.Fixed(c, 0, "openat", 1),
    lambda c: su.Fixed(None, None, None, 0, ring=object()),
    lambda c: su.BufferStep(c, 0, "read", 0, 17, True),
    lambda c: su.Step(c, 0, "nop"),
])
def test_handles_cannot_be_made_by_hand(make):
    with pytest.raises(TypeError, match="made by a Chain's step methods"):
        make(Chain())


@pytest.fixture
def busy_secret(ring, tmp_path):
    """Another chain in flight holding a slot on a secret file (it waits on a pipe)."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"SECRET" * 100)
    r, w = os.pipe()
    a = Chain()
    s = a.openat(secret)
    a.read(s, 64, offset=0)           # leaves the secret in a pool buffer too
    a.read(r, 1, offset=-1)           # blocks until the pipe is written
    a.close(s)
    fut = ring.submit(a)
    yield secret
    os.write(w, b"x")
    assert fut.result(timeout=10).ok
    os.close(r)
    os.close(w)


@pytest.mark.parametrize("field,value", [("slot", 0), ("slot", 1), ("slot", 5000),
                                         ("index", -1), ("index", 7), ("chain", None)])
def test_an_edited_slot_handle_never_reaches_another_chain(ring, busy_secret, tmp_path,
                                                           field, value):
    mine = tmp_path / "mine"
    mine.write_bytes(b"mine" * 10)
    c = Chain()
    f = c.openat(mine)
    setattr(f, field, value)
    if field == "slot":
        # the chain uses its own record of the slot, not the handle's field
        d = c.read(f, 17)
        c.close(f)
        r = ring.run(c, timeout=5)
        assert r.ok and r[d].data == b"mine" * 4 + b"m"
    else:
        with pytest.raises(su.ChainError, match="not a handle this chain made|another chain"):
            c.read(f, 17)
        assert len(c) == 1


def test_an_edited_buffer_handle_sends_only_its_own_bytes(ring, busy_secret, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"0123456789" * 10)
    out = tmp_path / "out"
    c = Chain()
    f = c.openat(src)
    d = c.read(f, 50)
    d.buffer, d.length = 3, 4096          # point at "another" buffer, ask for more
    g = c.openat(out, os.O_WRONLY | os.O_CREAT)
    c.write(g, d)
    c.close(g)
    c.close(f)
    assert ring.run(c, timeout=5).ok
    assert out.read_bytes() == b"0123456789" * 5


def test_a_handle_of_another_chain_is_refused(ring, data_file):
    a = Chain()
    f = a.openat(data_file)
    d = a.read(f, 10)
    b = Chain()
    with pytest.raises(su.ChainError, match="belongs to another chain"):
        b.read(f, 10)
    with pytest.raises(su.ChainError, match="belongs to another chain"):
        b.write(1, d)
    assert len(b) == 0


def _patched(chain: Chain, step: int, **fields) -> object:
    """The chain's frozen description with fields of one packed step changed, as a bug in
    the Python layer would leave it."""
    fz = chain._freeze(False)
    names = ["op", "link", "fd_kind", "addr_kind", "fd", "len", "op_flags", "off", "addr",
             "addr2", "file_index", "fd2", "fd2_kind", "addr2_kind", "timeout_kind", "_pad",
             "mode", "timeout_ns"]
    raw = bytearray(fz.packed)
    vals = dict(zip(names, STEP_STRUCT.unpack_from(raw, step * STEP_STRUCT.size)))
    vals.update(fields)
    STEP_STRUCT.pack_into(raw, step * STEP_STRUCT.size, *(vals[n] for n in names))
    return dataclasses.replace(fz, packed=bytes(raw), cdata=None)


def _lay(ring, fz):
    from sakura_uring.chain import native_views
    fz.cdata = native_views(fz)
    with ring._core.lock:
        return ring._pub.lay(fz, 0, None, None)


@pytest.mark.parametrize("step,fields", [
    (1, dict(fd=1)),                      # local slot 1 of a one-slot chain
    (1, dict(fd=-7)),
    (1, dict(fd_kind=3, fd=0)),           # a ring slot nobody registered
    (1, dict(fd_kind=3, fd=5000)),
    (1, dict(addr=1)),                    # buffer 1 of a one-buffer chain
    (1, dict(len=1 << 20)),               # more than its buffer holds
    (0, dict(file_index=3)),              # opens into slot 3 of a one-slot chain
    (0, dict(addr=10_000)),               # a path beyond the arena
    (2, dict(fd_kind=9)),
    (1, dict(timeout_kind=1)),            # a timeout the ring gave no timespec for
])
def test_the_native_layer_refuses_out_of_range_indices(ring, data_file, step, fields):
    c = Chain()
    f = c.openat(data_file)
    c.read(f, 100)
    c.close(f)
    fz = _patched(c, step, **fields)
    tags = len(ring._pools.free_tags)
    with pytest.raises(su.ChainError, match="native layer refused"):
        _lay(ring, fz)
    assert len(ring._pools.free_tags) == tags
    assert_pools_full(ring)
    r = ring.run(c, timeout=5)            # the ring is unharmed
    assert r.ok and r[1].data == data_file.read_bytes()[:100]
