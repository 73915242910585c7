"""How a test's needs are judged (conftest.py): a refusal the kernel really calls for is a
skip with its reason; the same refusal where probe()/engines() say the feature is there is
a regression, and the test fails."""
import pytest

import sakura_uring as su
from sakura_uring.kernel import KernelHandlersUnavailable

from conftest import _missing, _refusal_is_real


@pytest.mark.parametrize("engine", ["link", "kernel"])
def test_an_engine_refusal_is_a_skip_only_where_the_engine_is_missing(engine):
    exc = (KernelHandlersUnavailable("x") if engine == "kernel"
           else su.UnsupportedOperation("x", engine="link"))
    available = bool(su.engines()[engine])
    assert _refusal_is_real(exc) is (not available)
    assert (_missing(engine) is None) is available


def test_an_operation_refusal_is_a_skip_only_where_the_kernel_lacks_it():
    kp = su.probe()
    have = [op.name for op in su.ops.OPS if kp.supports(op.name)]
    lack = [op.name for op in su.ops.OPS if not kp.supports(op.name)]
    assert "nop" in have
    for name in have:
        assert not _refusal_is_real(su.UnsupportedOperation("x", op=name)) and not _missing(name)
    for name in lack:                              # on the host: none; on 5.10: several
        assert _refusal_is_real(su.UnsupportedOperation("x", op=name)) and _missing(name)


def test_a_refusal_that_names_nothing_fails():
    assert not _refusal_is_real(su.UnsupportedOperation("x"))
    assert not _refusal_is_real(ValueError("x"))
    with pytest.raises(pytest.UsageError):
        _missing("no-such-thing")


@pytest.mark.needs("link", "nop")
def test_a_needs_marker_runs_where_the_kernel_has_it():
    c = su.Chain()
    f = c.openat("/etc/hostname")
    c.close(f)
    with su.Ring(8) as r:
        assert r.run(c).ok
