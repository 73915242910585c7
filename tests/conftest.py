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


# What a test needs is said with a marker, `@pytest.mark.needs("kernel")` (an engine:
# "link" or "kernel") or `needs("splice")` (an operation), and asked of engines() and
# probe(): the test is skipped with the library's own reason when this kernel lacks it.
def _missing(what: str) -> str | None:
    if what in ("link", "kernel"):
        e = su.engines()[what]
        return None if e else f"the {what} engine is unavailable: {e.reason}"
    if what not in su.ops.BY_NAME:
        raise pytest.UsageError(f"needs({what!r}): not an engine or an operation")
    kp = su.probe()
    return None if kp.supports(what) else (f"{what} needs Linux {su.ops.BY_NAME[what].since}; "
                                           f"this kernel is {kp.release}")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*what): engines or operations the test needs "
                            "(skipped, with the reason, on a kernel that lacks them)")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs"):
        for what in mark.args:
            why = _missing(what)
            if why:
                pytest.skip(why)


# A test that needs something without saying so meets the library's refusal
# (UnsupportedOperation, KernelHandlersUnavailable) on a kernel that lacks it; that is
# the right behaviour there, so the test is reported as skipped with the library's reason
# -- but only when probe()/engines() agree the kernel lacks it. A refusal on a kernel
# that has the feature (the host: it has everything) is a regression and fails.
def _refusal_is_real(exc) -> bool:
    from sakura_uring.kernel import KernelHandlersUnavailable
    if isinstance(exc, KernelHandlersUnavailable):
        return not su.engines()["kernel"]
    if isinstance(exc, su.UnsupportedOperation):
        if exc.engine:
            return not su.engines()[exc.engine]
        if exc.op:
            return not su.probe().supports(exc.op)
    return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    exc = call.excinfo.value if call.excinfo is not None else None
    if exc is not None and _refusal_is_real(exc):
        rep.outcome = "skipped"
        rep.longrepr = (str(item.path), item.location[1],
                        f"Skipped: {call.excinfo.typename}: {exc}")
