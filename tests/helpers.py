"""Helpers shared by the test modules."""
import os

import sakura_uring as su


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def assert_pools_full(ring: su.Ring) -> None:
    assert ring.inflight == 0
    assert ring.free_slots == ring.slots - len(ring._registered)
    assert ring.free_buffers == ring.buffers
