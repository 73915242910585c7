"""register_file handles carry a generation: a stale handle is refused everywhere and never
affects the newer registration that took its slot (Python and the native layer)."""
import os

import pytest

import sakura_uring as su
from sakura_uring import Chain
from sakura_uring._native import ffi, lib

from helpers import assert_pools_full


def test_a_stale_handle_never_drops_a_newer_registration(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"A" * 64)
    b.write_bytes(b"B" * 64)
    with su.Ring(8, slots=1) as ring, open(a, "rb") as fa, open(b, "rb") as fb:
        h = ring.register_file(fa)
        ring.unregister_file(h)
        h2 = ring.register_file(fb)
        assert h2.slot == h.slot and h2.generation > h.generation
        with pytest.raises(su.ChainError, match=r"is stale: it was already unregistered; "
                                                r"slot 0 now holds generation 2"):
            ring.unregister_file(h)
        with pytest.raises(su.ChainError, match="no longer registered"):
            Chain().read(h, 10)
        c = Chain()
        d = c.read(h2, 10)
        assert ring.run(c)[d].data == b"B" * 10     # h2 still holds its slot
        ring.unregister_file(h2)
        with pytest.raises(su.ChainError, match="is stale"):
            ring.unregister_file(h2)
        assert_pools_full(ring)


def test_a_chain_built_before_unregister_is_refused_after(ring, data_file):
    with open(data_file, "rb") as fh:
        h = ring.register_file(fh)
        c = Chain()
        c.read(h, 10)
        assert ring.run(c).ok
        ring.unregister_file(h)
        h2 = ring.register_file(fh)              # the same slot again, a new generation
        with pytest.raises(su.ChainError, match="was unregistered"):
            ring.run(c)
        ring.unregister_file(h2)
    assert_pools_full(ring)


def test_handles_of_another_ring_are_refused(data_file):
    with su.Ring(8) as r1, su.Ring(8) as r2, open(data_file, "rb") as fh:
        h = r1.register_file(fh)
        with pytest.raises(su.ChainError, match="not registered with this ring"):
            r2.unregister_file(h)
        c = Chain()
        c.read(h, 10)
        with pytest.raises(su.ChainError, match="belongs to another ring"):
            r2.run(c)
        assert r1.run(c).ok


def test_the_native_layer_keeps_registered_slots_apart(ring, data_file):
    """A chain's clean-up can't empty a registered slot, and a slot can't be unregistered
    twice, whatever Python asks."""
    with open(data_file, "rb") as fh:
        h = ring.register_file(fh)
        slot = ffi.new("int32_t[]", [h.slot])
        assert lib.sk_release_slots(ring._core.r, slot, 1) == -34        # ERANGE, left alone
        c = Chain()
        d = c.read(h, 16)
        assert ring.run(c)[d].data == data_file.read_bytes()[:16]
        ring.unregister_file(h)
        assert lib.sk_unregister_slot(ring._core.r, h.slot) == -34
        assert lib.sk_unregister_slot(ring._core.r, 10**6) == -34
    assert_pools_full(ring)
