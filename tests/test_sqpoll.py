"""SQPOLL: the kernel thread consumes the SQ; when it sleeps it is woken."""
import os
import time

import sakura_uring as su
from sakura_uring import Chain


def _threads():
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            out.append(open(f"/proc/self/task/{tid}/comm").read().strip())
        except OSError:
            pass
    return out


def test_sqpoll_thread_exists_and_runs_chains(data_file):
    with su.Ring(32, sqpoll=True) as ring:
        c = Chain()
        f = c.openat(data_file)
        d = c.read(f, 4096)
        c.close(f)
        for _ in range(100):
            assert ring.run(c)[d].data == data_file.read_bytes()
        assert ring.stats()["submits"] == 0     # no io_uring_enter to submit
        # the thread names itself when it first runs; it has run by now
        assert any(t.startswith("iou-sqp-") for t in _threads())


def test_sqpoll_asleep_then_woken(data_file):
    with su.Ring(32, sqpoll=True, sq_idle_ms=1) as ring:
        deadline = time.monotonic() + 5
        while not ring.sq_needs_wakeup():        # idle 1 ms: it goes to sleep
            assert time.monotonic() < deadline, "SQPOLL thread never slept"
            time.sleep(0.005)
        woken = ring.stats()["wakeups"]
        c = Chain()
        f = c.openat(data_file)
        d = c.read(f, 4096)
        c.close(f)
        r = ring.run(c)
        assert r[d].data == data_file.read_bytes()
        assert ring.stats()["wakeups"] > woken   # we saw it asleep and woke it
        # and again, many times: every chain completes although the thread keeps sleeping
        for _ in range(20):
            time.sleep(0.003)
            assert ring.run(c).ok


def test_sqpoll_pinned_thread(data_file):
    if os.cpu_count() < 2:
        return
    with su.Ring(32, sqpoll=True, sq_cpu=1) as ring:
        c = Chain()
        c.nop()
        assert ring.run(c).ok
        pinned = []
        for tid in os.listdir("/proc/self/task"):
            try:     # a thread may end between the listing and the look (io-wq workers do)
                comm = open(f"/proc/self/task/{tid}/comm").read().strip()
                if comm.startswith("iou-sqp-"):   # (threads of closed rings may linger)
                    pinned.append(os.sched_getaffinity(int(tid)) == {1})
            except (FileNotFoundError, ProcessLookupError):
                continue
        assert any(pinned)
