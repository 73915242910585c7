"""The tracer against programs nobody here wrote the counting of: a liburing program
(tests/progs/uring_work.c: link-cp's read -> write chains, timeouts of known length) and
fio, each compared with the program's own counts."""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from sakura_uring.trace.dispatch import kernel_macros
from sakura_uring.trace.report import bucket

from helpers import end, links_traced, running, spawn, trace_json

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


@pytest.fixture(scope="module")
def uring_work(tmp_path_factory):
    exe = tmp_path_factory.mktemp("progs") / "uring_work"
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(exe),
                    str(ROOT / "tests/progs/uring_work.c"), "-luring"], check=True)
    return exe


def test_link_cp_chains_are_exact_with_many_in_flight(uring_work, tmp_path):
    """50 MiB in 32 KiB read -> write chains, 8 in flight (each request's address is
    reused as soon as it completes, while its chain's write still runs), then 7 chains
    whose read fails and 5 whose read is short: the kernel cancels those 12 writes."""
    if not links_traced(kernel_macros()[1]):
        pytest.skip("this kernel's io_uring_link can't be used (BPF atomics that return a "
                    "value, Linux 5.12, or the event itself are missing)")
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(50 * MIB))
    s, _, out = trace_json("--", uring_work, "copy", src, dst, 32768, 8, 7, 5)
    assert out.returncode == 0, out.stderr
    own = json.loads(out.stdout.splitlines()[0])       # the program's own line comes first
    assert own == dict(chains=1612, reads=1612, writes=1612, read_ok=1600, read_short=5,
                       read_err=7, write_ok=1600, write_canceled=12, write_err=0), own
    assert dst.read_bytes() == src.read_bytes()
    t, rd, wr = s["totals"], s["ops"]["read"], s["ops"]["write"]
    assert t["chains"] == t["chains_done"] == own["chains"], t
    assert t["chains_broken"] == t["links_failed"] == own["write_canceled"], t
    assert rd["done"] == wr["done"] == 1612
    assert rd.get("errors", 0) == own["read_err"] and rd.get("short", 0) == own["read_short"], rd
    assert rd.get("broke", 0) == 12 and not wr.get("broke"), (rd, wr)
    assert wr.get("canceled", 0) == own["write_canceled"] and not wr.get("errors"), wr
    assert not rd.get("canceled"), rd


def test_timeouts_of_known_length_land_in_their_bucket(uring_work):
    """200 io_uring timeouts of 1.5 ms: bpf_log2l() puts them in 1024-2047 us, so the
    median is labelled 2047 (the labels were once one bucket too high: 4095)."""
    s, _, out = trace_json("--", uring_work, "timeouts", 200, 1500)
    assert out.returncode == 0, out.stderr
    own = json.loads(out.stdout.splitlines()[0])
    assert own["etime"] == 200 and own["least_us"] >= 1500, own
    tm = s["ops"]["timeout"]
    assert tm["done"] == 200 and tm["p50_us"] == 2047.0, tm
    hist = {(lo, hi): n for lo, hi, n in tm["hist_us"]}
    assert sum(hist.values()) == 200
    assert not any(n for (lo, hi), n in hist.items() if hi < 1024), hist    # none too early
    assert hist.get((1024, 2047), 0) >= 100, hist
    assert bucket(11) == (1024, 2047) and bucket(1) == (0, 1) and bucket(2) == (2, 3)


def fio(tmp_path, *extra) -> list[str]:
    """fio reading a 4 MiB file (made by it) through its io_uring engine, 2 jobs."""
    data = tmp_path / "fio.data"
    if not data.exists():
        data.write_bytes(os.urandom(4 * MIB))
    return ["fio", "--name=j", "--ioengine=io_uring", "--rw=randread", "--bs=4k",
            "--size=4M", f"--filename={data}", "--numjobs=2", "--iodepth=8",
            "--output-format=json", f"--output={tmp_path / 'fio.json'}", *extra]


@pytest.mark.parametrize("mode", ["--thread", "--fork"])
def test_fio_is_counted_exactly(tmp_path, mode):
    """fio's threads, and its default forked job processes: every read it issued, seen."""
    s, _, out = trace_json("--", *fio(tmp_path, *([mode] if mode == "--thread" else [])))
    assert out.returncode == 0, out.stderr
    jobs = json.loads((tmp_path / "fio.json").read_text())["jobs"]
    ios = sum(j["read"]["total_ios"] for j in jobs)
    assert ios == 2 * 1024
    assert set(s["ops"]) == {"read"}, s["ops"].keys()
    rd = s["ops"]["read"]
    assert rd["done"] == rd["sub_app"] == ios and not rd.get("errors"), rd
    rows = {int(p): r for p, r in s["procs"].items()}
    if mode == "--thread":
        assert list(rows) == [s["pid"]] and rows[s["pid"]]["done"] == ios, rows
        assert not s["notes"]
    else:                                   # the parent forks a process per job
        workers = [r for p, r in rows.items() if p != s["pid"]]
        assert sorted(r["done"] for r in workers) == [1024, 1024], rows
        assert all(r["comm"] == "fio" for r in workers), rows
        assert not rows.get(s["pid"], {}).get("done")
        assert s["notes"] and "the processes it started completed 2048" in s["notes"][0]


def test_fio_already_running_is_traced_by_pid_with_its_jobs(tmp_path):
    """-p on fio's parent after its jobs were forked: the jobs are found in /proc."""
    # runs until killed: under emulation compiling the tracer alone can take 30 s
    proc = spawn(fio(tmp_path, "--time_based", "--runtime=600"))
    try:
        deadline = time.monotonic() + 30
        kids = []
        while len(kids) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(kids) >= 2, "fio did not fork its jobs"
        s, _, out = trace_json("-p", proc.pid, "-d", 2)
    finally:
        end(proc)
    # fio's jobs (each in a session of its own) are gone too: left running, they loaded
    # the machine for 10 minutes of later tests
    assert not [k for k in kids if running(int(k))], kids
    assert out.returncode == 0, out.stderr
    rows = {int(p): r for p, r in s["procs"].items()}
    busy = [p for p, r in rows.items() if r["done"]]
    assert {int(k) for k in kids} <= set(busy) and proc.pid not in busy, rows
    # requests submitted before tracing began complete as "?" (their submission unseen)
    assert s["requests"] == sum(r["done"] for r in rows.values()), (s["ops"], rows)
    assert set(s["ops"]) <= {"read", "?"} and s["ops"].get("?", {}).get("done", 0) <= 64
