"""engines(): which execution engines this kernel and process can use, and why not."""
import shutil
import subprocess
import sys

import pytest

import sakura_uring as su


def test_both_engines_are_available_here():
    eng = su.engines()
    assert set(eng) == {"link", "kernel"}
    assert eng["link"].available and eng["link"].reason == ""
    assert eng["kernel"].available, eng["kernel"].reason
    assert bool(eng["kernel"]) is True
    assert not su.Engine("kernel", False, "why")


CHILD = r"""
import sakura_uring as su
from sakura_uring.kernel import KernelRing, KernelHandlersUnavailable
e = su.engines()
assert e["link"].available, e
assert not e["kernel"].available, e
print("REASON", e["kernel"].reason)
try:
    KernelRing("static int on_complete(struct sk_event *e) { return 0; }")
except KernelHandlersUnavailable as exc:
    print("RAISED", exc)
with su.Ring(8) as r:        # the link engine keeps working
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
