"""engines(): which execution engines this kernel and process can use, and why not."""
import os
import shutil
import subprocess
import sys

import pytest

import sakura_uring as su
from sakura_uring.kernel import KernelHandlersUnavailable, KernelRing


def test_engines_agree_with_what_the_kernel_does():
    """engines() is checked against the real thing on every kernel of the matrix: an
    engine it offers works, one it refuses is refused with the same reason."""
    eng = su.engines()
    assert set(eng) == {"link", "kernel"}
    kp = su.probe()
    assert eng["link"].available == kp.linked_files
    with su.Ring(8) as r:
        c = su.Chain()
        f = c.openat("/", os.O_RDONLY | os.O_DIRECTORY)
        c.close(f)
        if eng["link"]:
            assert eng["link"].reason == "" and r.run(c).ok
        else:
            assert "Linux 5.15" in eng["link"].reason and "LINKED_FILE" in eng["link"].reason
            with pytest.raises(su.UnsupportedOperation, match="direct descriptors"):
                r.run(c)
    nop = ("static int on_complete(struct sk_event *e)\n"
           "{ return e->step == SK_START ? sk_nop(e, 1) : sk_finish(e, 7, 0, 0); }")
    if eng["kernel"]:
        with KernelRing(nop) as kr:
            assert kr.run(timeout=60).result == 7
    else:
        with pytest.raises(KernelHandlersUnavailable) as exc:
            KernelRing(nop)
        assert eng["kernel"].reason in str(exc.value)
    if kp.version >= (6, 6):     # every kernel from 6.6 on (the host's too) has both
        assert eng["link"] and eng["kernel"], eng["kernel"].reason
    assert bool(su.Engine("kernel", True, "")) is True
    assert not su.Engine("kernel", False, "why")


CHILD = r"""
import sakura_uring as su
from sakura_uring.kernel import KernelRing, KernelHandlersUnavailable
e = su.engines()
assert e["link"].available == su.probe().linked_files, e
assert not e["kernel"].available, e
print("REASON", e["kernel"].reason)
try:
    KernelRing("static int on_complete(struct sk_event *e) { return 0; }")
except KernelHandlersUnavailable as exc:
    print("RAISED", exc)
# the link engine keeps working (small buffers: before 5.12 rings count against the
# locked-memory limit, which a process without CAP_IPC_LOCK keeps)
with su.Ring(8, buffers=1, buffer_size=4096) as r:
    c = su.Chain()
    c.nop()
    print("LINK", r.run(c).ok)
"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_bpf_capabilities_kernel_handlers_say_why_and_links_work():
    out = subprocess.run(["setpriv", "--bounding-set", "-all", "--inh-caps", "-all",
                          sys.executable, "-c", CHILD],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "REASON" in out.stdout and "CAP_BPF" in out.stdout
    assert "RAISED kernel handlers are unavailable" in out.stdout
    assert "LINK True" in out.stdout
