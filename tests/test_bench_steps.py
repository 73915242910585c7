"""`bench steps`: every engine, and each shipped handler in C and in Python, report."""
import json
import subprocess
import sys

from helpers import require_kernel_engine


def test_bench_steps_quick_reports_c_and_python_handlers():
    require_kernel_engine()
    out = subprocess.run([sys.executable, "-m", "sakura_uring.bench", "steps", "--quick",
                          "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert {r["engine"] for r in res["rows"]} == {"FlexSC model", "link engine",
                                                  "kernel handler", "kernel handler (Python)"}
    assert res["kernel_long_chain_ns_per_nop"] > 0 and res["python_long_chain_ns_per_nop"] > 0
    assert set(res["handlers_us"]) == {"follow", "copy", "sendfile", "steps"}
    assert all(v["C"] > 0 and v["Python"] > 0 for v in res["handlers_us"].values())
