"""io_uring refused by the kernel: one exception type naming the cause and the fix."""
import os

import pytest

import sakura_uring as su

SYSCTL = "/proc/sys/kernel/io_uring_disabled"


@pytest.mark.skipif(not os.path.exists(SYSCTL),
                    reason="kernel has no kernel.io_uring_disabled sysctl (added in 6.6)")
@pytest.mark.skipif(os.geteuid() != 0, reason="changing kernel.io_uring_disabled needs root")
def test_io_uring_disabled_sysctl():
    old = open(SYSCTL).read().strip()
    try:
        with open(SYSCTL, "w") as f:
            f.write("2")
        with pytest.raises(su.IoUringUnavailable) as ei:
            su.Ring(8)
        e = ei.value
        assert isinstance(e, OSError) and e.errno == 1      # EPERM
        assert "io_uring_disabled = 2" in e.cause
        assert "sysctl -w kernel.io_uring_disabled=0" in e.fix
        assert "Fix:" in str(e)
    finally:
        with open(SYSCTL, "w") as f:
            f.write(old)
    with su.Ring(8) as ring:                                 # and back to normal
        c = su.Chain()
        c.nop()
        assert ring.run(c).ok


def test_explanations_cover_the_refusals():
    from sakura_uring.errors import _explain
    import errno
    for err in (errno.ENOSYS, errno.EPERM, errno.ENOMEM, errno.EINVAL):
        cause, fix = _explain(err)
        assert cause and fix
    assert "CONFIG_IO_URING" in _explain(errno.ENOSYS)[1]
