"""fork(): a child never uses or tears down the rings and tracers it inherits.

The SQ/CQ of a Ring, the maps and attachment of a KernelRing and the perf events of a
DispatchTracer are shared with the parent. Each case forks a real process, lets the child
try the inherited object and then exit normally (so its finalizers and bcc's exit handler
run), and then checks that the parent's object still works."""
import multiprocessing
import os
import subprocess
import sys
import textwrap

import pytest

import sakura_uring as su
from sakura_uring import Chain

from helpers import assert_pools_full, require_kernel_engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(body: str, *args: str) -> str:
    """Run a Python script in a fresh process (so the child exits through a normal
    interpreter shutdown); returns its output, failing on a non-zero status or a hang."""
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(body), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"status {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


RING_SCRIPT = """
    import os, sys
    import sakura_uring as su
    from sakura_uring import Chain

    sqpoll, action = sys.argv[1] == "1", sys.argv[2]
    ring = su.Ring(64, sqpoll=sqpoll, sq_idle_ms=1)

    def chain():
        c = Chain()
        c.nop()
        c.nop()
        return c

    assert ring.run(chain()).ok
    pid = os.fork()
    if pid == 0:
        if action in ("use", "close"):
            for call in (lambda: ring.run(chain()), lambda: ring.submit(chain()),
                         lambda: ring.stats(), lambda: ring.register_file(0)):
                try:
                    call()
                    print("child: the inherited ring was usable", flush=True)
                    os._exit(3)
                except su.InheritedAfterFork as e:
                    assert "create a new Ring in the child" in str(e), e
                    assert e.creator == os.getppid()
            assert ring.closed
            with su.Ring(8) as mine:           # a ring of its own works
                assert mine.run(chain()).ok
        if action == "close":
            ring.close()
        sys.exit(0)        # normal exit: the inherited Ring is finalized here
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    for i in range(300):
        assert ring.run(chain(), timeout=5).ok
    s = ring.stats()
    assert s["inflight"] == 0 and s["free_slots"] == ring.slots
    ring.close()
    print("parent ok")
"""


@pytest.mark.parametrize("sqpoll", [False, True], ids=["inline", "sqpoll"])
@pytest.mark.parametrize("action", ["exit", "use", "close"])
def test_ring_survives_a_forked_child(sqpoll, action):
    assert run_script(RING_SCRIPT, "1" if sqpoll else "0", action).endswith("parent ok\n")


def _try_inherited(ring, q):
    c = Chain()
    c.nop()
    try:
        ring.run(c)
        q.put("usable")
    except su.InheritedAfterFork as e:
        q.put(f"refused: {e}")


def test_ring_with_multiprocessing_fork(any_ring, data_file):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_try_inherited, args=(any_ring, q)) for _ in range(3)]
    for p in procs:
        p.start()
    answers = [q.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert all(a.startswith("refused: this Ring was created by process") for a in answers), answers
    c = Chain()
    f = c.openat(data_file)
    d = c.read(f, 4096)
    c.close(f)
    assert any_ring.run(c, timeout=5)[d].data == data_file.read_bytes()
    assert_pools_full(any_ring)


KERNEL_SCRIPT = """
    import os, pathlib, sys
    import sakura_uring as su
    from sakura_uring.kernel import KernelRing

    kr = KernelRing(pathlib.Path(sys.argv[1]))
    assert kr.run(2, 0, timeout=5).ok
    pid = os.fork()
    if pid == 0:
        if sys.argv[2] != "exit":
            try:
                kr.run(2, 0)
                os._exit(3)
            except su.InheritedAfterFork as e:
                assert "KernelRing was created by process" in str(e), e
        if sys.argv[2] == "close":
            kr.close()
        sys.exit(0)     # normal exit: bcc's exit handler runs in the child
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    res = kr.map([(2, i) for i in range(2000)], timeout=60)
    assert all(r.ok for r in res), [r for r in res if not r.ok][:3]
    assert kr.stats()["in_flight"] == 0
    kr.close()
    print("parent ok")
"""


@pytest.mark.parametrize("action", ["exit", "use", "close"])
def test_kernel_ring_survives_a_forked_child(action):
    require_kernel_engine()
    nops = os.path.join(ROOT, "tests", "handlers", "nops.c")
    assert run_script(KERNEL_SCRIPT, nops, action).endswith("parent ok\n")


TRACER_SCRIPT = """
    import os, sys
    import sakura_uring as su
    from sakura_uring import Chain
    from sakura_uring.trace.dispatch import DispatchTracer

    tr = DispatchTracer()
    ring = su.Ring(64)
    pid = os.fork()
    if pid == 0:
        if sys.argv[1] != "exit":
            try:
                tr.report()
                os._exit(3)
            except su.InheritedAfterFork as e:
                assert "DispatchTracer was created by process" in str(e), e
            tr.close()
        sys.exit(0)     # normal exit: bcc's exit handler runs in the child
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    tr.reset()
    for i in range(100):
        c = Chain()
        c.nop()
        assert ring.run(c).ok
    rep = tr.report()
    nop = rep.ops["nop"].counts
    assert nop.get("sub_app", 0) >= 100, rep.ops   # still traced: the child disabled nothing
    tr.close()
    print("parent ok")
"""


@pytest.mark.parametrize("action", ["exit", "close"])
def test_tracer_survives_a_forked_child(action):
    assert run_script(TRACER_SCRIPT, action).endswith("parent ok\n")
