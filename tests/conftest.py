"""Fixtures. The kernel is the fixture: every test runs against the real io_uring."""
import os

import pytest

import sakura_uring as su


@pytest.fixture
def ring():
    with su.Ring(64) as r:
        yield r


@pytest.fixture
def sqpoll_ring():
    with su.Ring(64, sqpoll=True) as r:
        yield r


@pytest.fixture(params=[False, True], ids=["inline", "sqpoll"])
def any_ring(request):
    with su.Ring(64, sqpoll=request.param) as r:
        yield r


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "data.bin"
    p.write_bytes(os.urandom(4096))
    return p
