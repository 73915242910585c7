"""`bench scan`: the kernel handlers and plain Python agree on the file, and it reports."""
import json
import subprocess
import sys

from helpers import require_kernel_engine


def test_bench_scan_quick_runs_and_its_models_agree():
    require_kernel_engine()
    out = subprocess.run([sys.executable, "-m", "sakura_uring.bench", "scan", "--quick",
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr        # (it raises when the models disagree)
    res = json.loads(out.stdout)
    assert res["rounds"] == 2 and set(res["ms"]) == {
        f"{job}/{model}" for job in ("count", "find")
        for model in ("kernel handler", "kernel, byte loop", "python, 16 KiB",
                      "python, whole file")}
    assert all(v > 0 for v in res["ms"].values())
