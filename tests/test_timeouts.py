"""A step stopped by its timeout (its own or the chain's) reports timed_out and TimeoutError
whatever errno the interrupted call returned, and kernel-internal errnos (ERESTARTSYS 512
and friends) never reach a user as "Unknown error"."""
import errno
import fcntl
import os
import signal
import socket
import time

import pytest

import sakura_uring as su
from sakura_uring import Chain
from sakura_uring.errors import KERNEL_ERRNOS, describe_errno
from sakura_uring.result import StepResult

from helpers import assert_pools_full

F_SETLEASE = 1024


@pytest.fixture
def leased(tmp_path):
    """A file with a read lease held: an open for writing must break the lease and blocks
    (in an io-wq worker) for lease-break-time, 45 s by default."""
    p = tmp_path / "leased"
    p.write_bytes(b"x")
    old = signal.signal(signal.SIGIO, signal.SIG_IGN)   # the lease-break notice
    fd = os.open(p, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_RDLCK)
        yield p
    finally:
        os.close(fd)
        signal.signal(signal.SIGIO, old)


@pytest.mark.parametrize("where", ["step", "chain", "run"])
def test_a_blocked_worker_stopped_by_its_timeout_says_timed_out(any_ring, leased, where):
    c = Chain(timeout=0.3 if where == "chain" else None)
    f = c.openat(leased, os.O_WRONLY, timeout=0.3 if where == "step" else None)
    c.close(f)
    t0 = time.monotonic()
    r = any_ring.run(c, timeout=0.3 if where == "run" else None)
    assert 0.25 < time.monotonic() - t0 < 5
    s = r[f]
    assert s.res < 0 and s.timed_out and r.timed_out and not r.ok
    assert isinstance(s.error, TimeoutError) and s.error.errno == errno.ETIME
    assert "Unknown error" not in str(s.error)
    with pytest.raises(su.StepTimedOut, match=r"step 0 \(openat\) timed out") as e:
        r.raise_for_error()
    assert isinstance(e.value, TimeoutError) and isinstance(e.value, su.StepFailed)
    assert e.value.step is s
    assert_pools_full(any_ring)


def test_a_timeout_that_cancels_a_waiting_step(any_ring):
    a, b = socket.socketpair()
    with a, b:
        c = Chain()
        m = c.recv(a, 10, timeout=0.05)
        r = any_ring.run(c)
        assert r[m].res == -errno.ECANCELED and r[m].timed_out
        assert str(r[m].error) == "[Errno 62] step 0 (recv) timed out"


def test_a_step_that_finishes_in_time_is_not_timed_out(any_ring, data_file):
    c = Chain(timeout=10)
    f = c.openat(data_file)
    d = c.read(f, 10)
    c.close(f)
    r = any_ring.run(c)
    assert r.ok and not r.timed_out and not r[d].timed_out


@pytest.mark.parametrize("raw", sorted(KERNEL_ERRNOS))
def test_kernel_internal_errnos_are_mapped_and_named(raw):
    name, user = KERNEL_ERRNOS[raw]
    err, text = describe_errno(raw)
    assert err == user and err < 512 and name in text and "Unknown" not in text
    s = StepResult(3, "openat", -raw)
    assert s.error.errno == user and f"the kernel-internal {name}, {raw}" in str(s.error)


def test_an_errno_linux_does_not_document_says_so():
    assert describe_errno(4000) == (4000, "errno 4000, which Linux does not document for user space")
    assert describe_errno(errno.ENOENT) == (errno.ENOENT, os.strerror(errno.ENOENT))


def test_erestartsys_is_eintr_not_unknown_error(any_ring, leased):
    """The raw value the kernel posted stays in .res; the error is what a user acts on."""
    c = Chain()
    c.openat(leased, os.O_WRONLY, timeout=0.2)
    r = any_ring.run(c)
    if r[0].res == -512:
        assert r[0].timed_out and "ERESTARTSYS" in str(r[0].error)
    else:   # the kernel may also report the interrupted open as cancelled or EINTR
        assert r[0].res in (-errno.ECANCELED, -errno.EINTR) and r[0].timed_out
