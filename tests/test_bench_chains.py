"""`bench chains`: every model runs and reports, and the floor it measures is one.

The floor row (a prepared run's one native call alone, nothing turned into Python) is
what docs/results.md cites for why no chain run one at a time reaches 1.5x plain calls:
it must cost less than the full prepared run it is part of, and make the prepared run's
one system call per chain."""
import json
import subprocess
import sys

FLOOR = "(n) the native call alone (floor), inline"
PREPARED = "(c') ring.prepare(chain).run(), inline"
FRESH = "(c) chain, run(), inline"


def test_bench_chains_quick_reports_every_model_and_a_floor_below_the_prepared_run():
    out = subprocess.run([sys.executable, "-m", "sakura_uring.bench", "chains", "--quick",
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    rows = {r["model"]: r for r in res["rows"]}
    from sakura_uring.bench.chains import MODELS
    missing_peers = set(res["missing"])
    assert set(rows) == {m.name for m in MODELS if m.needs not in missing_peers}
    assert all(r["us_per_chain"] > 0 for r in rows.values())
    # the floor is part of a prepared run, which is part of a fresh chain's run
    assert rows[FLOOR]["us_per_chain"] < rows[PREPARED]["us_per_chain"]
    assert rows[PREPARED]["us_per_chain"] < rows[FRESH]["us_per_chain"]
    if res["uncounted"] is None:            # bcc counted the system calls
        assert abs(rows[FLOOR]["syscalls_per_chain"] - 1.0) < 0.05      # one io_uring_enter
        assert abs(rows["(a) plain os.open/read/close"]["syscalls_per_chain"] - 3.0) < 0.05
