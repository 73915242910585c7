"""The dispatch tracer: known workloads, and the attribution it must report for them."""
import json
import os
import shutil
import time
from pathlib import Path

import pytest

import sakura_uring as su
from sakura_uring.kernel import KernelRing
from sakura_uring.trace import DispatchTracer

from helpers import Cat, links_traced, unreadable

ROOT = Path(__file__).resolve().parents[1]


def traced_chains(path, n, **ring_kw):
    """n Cat chains, traced, after 10 untraced: (the report, the chain's opcodes)."""
    with su.Ring(64, **ring_kw) as ring, Cat(ring, path) as cat:
        cat.run(10)
        with DispatchTracer() as tr:
            cat.run(n)
    return tr.final, cat.steps


def done_inline(rep, op: str, where: str) -> int:
    """CQEs of `op` posted in `where`. An openat whose path lookup can't be done from the
    dentry cache alone (a root on overlayfs, as in the kernel matrix's guests) is punted
    to io-wq, and the rest of its chain then runs there, its CQEs posted wherever the
    kernel finishes them: then count every CQE, but only then."""
    c = rep.ops[op].counts
    if any(o.counts.get("punted", 0) for o in rep.ops.values()):
        return c.get("done", 0)
    return c.get(where, 0)


def test_sqpoll_chains_run_in_the_sqpoll_thread_with_no_system_calls(data_file):
    # the caller spins up to 20 ms for each result: on a busy or emulated machine a
    # shorter spin ends in io_uring_enter(GETEVENTS), a wait rather than a submission
    rep, steps = traced_chains(data_file, 1000, sqpoll=True, spin_us=20000)
    for op in steps:
        c = rep.ops[op].counts
        assert c.get("sub_sqpoll") == 1000 and not c.get("sub_app"), (op, c)
        assert done_inline(rep, op, "by_sqpoll") == 1000 and c.get("done") == 1000, (op, c)
    t = rep.totals
    if links_traced(rep.missing):
        assert t["chains"] == t["chains_done"] == 1000 and t["chains_broken"] == 0
    assert rep.requests == 1000 * len(steps)
    assert rep.syscalls_per_request < 0.05, rep.table()
    assert rep.ops[steps[0]].percentile(0.5) is not None


def test_inline_chains_run_in_the_app_thread_one_enter_per_chain(data_file):
    rep, steps = traced_chains(data_file, 1000)
    for op in steps:
        c = rep.ops[op].counts
        assert c.get("sub_app") == 1000 and not c.get("sub_sqpoll"), (op, c)
        assert done_inline(rep, op, "by_submitter") == 1000, (op, c)
    t = rep.totals
    # one io_uring_enter submits the chain and waits for it; nothing else. A chain moved
    # to io-wq by a punted step completes step by step: one wait per step at most.
    punted = any(o.counts.get("punted") for o in rep.ops.values())
    most = 1000 * len(steps) + 10 if punted else 1010
    assert 1000 <= t["io_uring_enter"] <= most, rep.table()
    assert t["syscalls"] - t["io_uring_enter"] <= 10, rep.table()


def test_a_read_from_an_empty_pipe_waits_in_poll(ring):
    r, w = os.pipe()
    try:
        with DispatchTracer() as tr:
            c = su.Chain()
            c.read(r, 16)
            fut = ring.submit(c)
            time.sleep(0.05)                 # the read has found the pipe empty
            os.write(w, b"hello")
            assert fut.result(5).data(0) == b"hello"
    finally:
        os.close(r)
        os.close(w)
    rep = tr.final
    done = {n: o.counts for n, o in rep.ops.items() if o.counts.get("done")}
    assert sum(c.get("polled", 0) for c in done.values()) == 1, rep.table()


def test_a_broken_chain_is_counted_with_its_failing_opcode(ring, tmp_path):
    with Cat(ring, unreadable(tmp_path)) as cat, DispatchTracer() as tr:
        cat.run(1, ok=False)
    rep = tr.final
    first, second = cat.steps[:2]
    assert rep.ops[first].counts.get("done") == 1          # with its error
    if links_traced(rep.missing):
        assert rep.totals["chains"] == 1 and rep.totals["chains_broken"] == 1
        assert rep.ops[first].counts.get("broke") == 1
        assert not rep.ops.get(second) or not rep.ops[second].counts.get("broke")
    else:
        assert rep.totals["chains"] == 0 and rep.ops[first].counts.get("broke") is None


def test_kernel_handler_requests_are_attributed_too():
    with KernelRing(ROOT / "tests/handlers/nops.c") as kr:
        kr.run(1, 0)
        with DispatchTracer() as tr:
            res = kr.map([(5, i) for i in range(100)], timeout=30)
    assert [r.result for r in res] == list(range(100))
    nop = tr.final.ops["nop"].counts
    # 100 start NOPs from Python + 500 pushed by the handler, all taken up by SQPOLL
    assert nop.get("sub_sqpoll") == 600 and nop.get("by_sqpoll") == 600, nop


def test_interval_reports_add_up(data_file):
    with su.Ring(64, sqpoll=True) as ring, Cat(ring, data_file) as cat, \
            DispatchTracer() as tr:
        first = tr.snapshot()
        cat.run(100)
        mid = tr.snapshot()
        cat.run(50)
        end = tr.snapshot()
        a, b = tr.report(since=first, until=mid), tr.report(since=mid, until=end)
        whole = tr.report(since=first, until=end)
    n = len(cat.steps)
    assert a.requests == 100 * n and b.requests == 50 * n and whole.requests == 150 * n
    for op in cat.steps:
        assert (a.ops[op].counts["done"] + b.ops[op].counts["done"]
                == whole.ops[op].counts["done"])
    a = whole
    js = json.loads(json.dumps(a.to_json()))
    assert js["requests"] == 150 * n and set(cat.steps) <= set(js["ops"])


def test_cq_overflows_are_counted():
    with su.Ring(8, cq_entries=8) as ring, DispatchTracer() as tr:
        states = []
        for _ in range(8):
            c = su.Chain(link=su.Link.NONE)
            for _ in range(8):
                c.nop()
            states.append(ring._pub.publish(c, None, False))   # publish, don't reap
        for st in states:
            ring._reaper.wait(st)
    rep = tr.final
    if "io_uring_cqe_overflow" in rep.missing:
        # before 5.19 there is no such event, and an overflowing CQE still fires
        # io_uring_complete: every completion counts, the overflow can't be seen
        assert rep.totals["cq_overflows"] == 0
    else:
        assert rep.totals["cq_overflows"] >= 64 - 8, rep.table()
    assert rep.ops["nop"].counts["done"] == 64


def fake_formats(tmp_path, monkeypatch):
    """A copy of this kernel's io_uring tracepoint formats that the tracer reads instead
    (its io_uring/ directory is returned, to be edited)."""
    from sakura_uring import bpfenv
    real = next(r for r in bpfenv.EVENT_ROOTS if (r / "io_uring").is_dir())
    fake = tmp_path / "events" / "io_uring"
    shutil.copytree(real / "io_uring", fake,
                    ignore=shutil.ignore_patterns("enable", "filter", "trigger", "id"))
    monkeypatch.setattr(bpfenv, "EVENT_ROOTS", [tmp_path / "events"])
    return fake


def test_a_missing_field_or_event_removes_a_column_not_the_tool(tmp_path, monkeypatch,
                                                                  data_file):
    """An older kernel's formats: io_uring_complete without `req` (< 5.19), no poll_arm
    event. Completions are then matched to submissions by user_data."""
    from sakura_uring.trace import dispatch
    really_missing = {m for m in dispatch.kernel_macros()[1] if not m.startswith("io_uring_poll_arm")}
    fake = fake_formats(tmp_path, monkeypatch)
    fmt = fake / "io_uring_complete" / "format"
    fmt.write_text("\n".join(ln for ln in fmt.read_text().splitlines() if " req;" not in ln))
    shutil.rmtree(fake / "io_uring_poll_arm")
    with su.Ring(64, sqpoll=True) as ring, Cat(ring, data_file) as cat, \
            DispatchTracer() as tr:
        cat.run(50)
    rep = tr.final
    assert set(rep.missing) == really_missing | {"io_uring_poll_arm"}
    for op in cat.steps:
        c = rep.ops[op].counts
        assert c["sub_sqpoll"] == 50 and c["done"] == 50, (op, c)
        assert sum(rep.ops[op].hist.values()) == 50
    assert "?" not in rep.ops and rep.totals["unmatched"] == 0
    assert "not on this kernel" in rep.table()


def test_5_10_formats_name_requests_by_user_data(tmp_path, monkeypatch, data_file):
    """Linux 5.10's events name no request address (no `req` in submit, complete,
    poll_arm, task_add; fail_link without ctx): requests are keyed by user_data ^ ctx,
    and what can't be matched that way (links, io-wq punts) is listed as missing."""
    from sakura_uring.trace import dispatch
    fake = fake_formats(tmp_path, monkeypatch)
    for ev in ("io_uring_submit_req", "io_uring_submit_sqe", "io_uring_complete",
               "io_uring_poll_arm"):
        fmt = fake / ev / "format"
        if not fmt.exists():
            continue
        fmt.write_text("\n".join(ln for ln in fmt.read_text().splitlines() if " req;" not in ln))
    fmt = fake / "io_uring_queue_async_work" / "format"
    fmt.write_text("\n".join(ln for ln in fmt.read_text().splitlines()
                             if " opcode;" not in ln and " user_data;" not in ln))
    macros, missing = dispatch.kernel_macros()
    assert macros["KEY_SUBMIT"] == macros["KEY_POLL_ARM"] == "(args->user_data ^ (u64)args->ctx)"
    assert any(m.startswith("io_uring_queue_async_work (") for m in missing)
    assert any(m.startswith("io_uring_link (") for m in missing)
    with su.Ring(64, sqpoll=True) as ring, Cat(ring, data_file) as cat, \
            DispatchTracer() as tr:
        cat.run(50)
    rep = tr.final
    for op in cat.steps:
        c = rep.ops[op].counts
        assert c["sub_sqpoll"] == 50 and c["done"] == 50, (op, c)
    assert rep.totals["unmatched"] == 0 and rep.totals["chains"] == 0


def test_without_bpf_fetch_atomics_the_chain_columns_go(monkeypatch, data_file):
    """Before 5.12 the verifier refuses atomics that return a value; the tracer then
    leaves chains out instead of failing to load (Debian's 5.10 has 5.15's io_uring
    tracepoints, io_uring_link included, but 5.10's BPF)."""
    from sakura_uring.trace import dispatch
    monkeypatch.setattr(dispatch, "bpf_atomic_fetch", lambda: False)
    macros, missing = dispatch.kernel_macros()
    assert "HAVE_LINK" not in macros and "HAVE_FAIL_LINK" not in macros
    assert any("Linux 5.12" in m for m in missing)
    with su.Ring(64, sqpoll=True) as ring, Cat(ring, data_file) as cat, \
            DispatchTracer() as tr:
        cat.run(50)
    rep = tr.final
    assert rep.ops[cat.steps[0]].counts["done"] == 50 and rep.totals["chains"] == 0


def test_maps_are_read_one_key_at_a_time_where_batches_are_missing(monkeypatch, data_file):
    """Batch lookups (Linux 5.6) read the 8,192 latency buckets ten times faster; without
    them every map is still read, key by key, to the same report."""
    import bcc.table
    def refuse(self):
        raise OSError("no batch operations")
    with su.Ring(64) as ring, Cat(ring, data_file) as cat, DispatchTracer() as tr:
        cat.run(20)
        fast = tr.report()
        monkeypatch.setattr(bcc.table.TableBase, "items_lookup_batch", refuse)
        slow = tr.report()
    for op in cat.steps:
        assert fast.ops[op].counts == slow.ops[op].counts and fast.ops[op].counts["done"] == 20
        assert fast.ops[op].hist == slow.ops[op].hist and sum(slow.ops[op].hist.values()) == 20
    assert ({p: (r.submitted, r.done) for p, r in slow.procs.items()}
            == {p: (r.submitted, r.done) for p, r in fast.procs.items()}
            == {os.getpid(): (20 * len(cat.steps),) * 2})
