"""What runs inside a matrix guest: probe the kernel, ask engines(), run the
kernel-facing tests, and print one result line the host parses from the console.

    python -m sakura_uring.matrix.inside [PYTEST ARGS...]

Also usable on the host itself (the matrix's "host" row)."""
from __future__ import annotations

from typing import Any

import json
import os
import sys
import time

MARK = "SAKURA-MATRIX-RESULT "
# The tests that talk to the kernel: chains (links, SQPOLL, timeouts, bad input,
# concurrency, the os.* oracle, the kernel's per-op link rules and timeout results, the
# native layer's index checks), probing and engines, kernel handlers, the tracer (and
# the tracer against a liburing program and fio).
KERNEL_TESTS = ("test_links.py", "test_sqpoll.py", "test_steps.py", "test_bad_input.py",
                "test_concurrency.py", "test_oracle.py", "test_short_reads.py",
                "test_timeouts.py", "test_handles.py", "test_probe.py", "test_engines.py",
                "test_unavailable.py", "test_kernel_handlers.py", "test_kernel_http.py",
                "test_trace.py", "test_trace_programs.py", "test_params.py", "test_map.py",
                "test_prepared.py", "test_kernel_sdk.py", "test_kernel_python.py")


class Collect:
    """pytest plugin: each test's outcome, and why it was skipped or failed."""

    def __init__(self):
        self.tests = {}

    def pytest_runtest_logreport(self, report):
        t = self.tests.setdefault(report.nodeid, {"outcome": "passed"})
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            t.update(outcome="skipped", reason=reason.removeprefix("Skipped: "))
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            t.update(outcome="failed" if report.when == "call" else "error",
                     reason=(crash.message if crash else str(report.longrepr))[:600])
        if report.when == "call":
            t["seconds"] = round(report.duration, 2)


def facts() -> dict:
    """Release, io_uring ops and features, engines with their reasons."""
    import sakura_uring as su
    out: dict[str, Any] = {"release": os.uname().release, "python": sys.version.split()[0]}
    try:
        kp = su.probe()
        out.update(ops=sorted(op for op, ok in kp.ops.items() if ok),
                   opcodes=len(kp.opcodes), last_op=kp.last_op, features=sorted(kp.features))
    except Exception as exc:    # the table must say why, not lose the kernel
        out["probe_error"] = f"{type(exc).__name__}: {exc}"
    out["engines"] = {name: {"available": e.available, "reason": e.reason}
                      for name, e in su.engines().items()}
    try:                        # what `sakura-uring trace` leaves out on this kernel
        from sakura_uring.trace.dispatch import kernel_macros
        out["tracer_missing"] = kernel_macros()[1]
    except Exception as exc:
        out["tracer_missing"] = [f"the tracer itself: {exc}"]
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.chdir(here)
    t0 = time.monotonic()
    out = facts()
    print(f"[matrix] {out['release']}: engines "
          + ", ".join(f"{n} {'yes' if e['available'] else 'no'}" for n, e in out["engines"].items()),
          flush=True)
    import pytest
    col = Collect()
    files = [os.path.join("tests", f) for f in KERNEL_TESTS]
    rc = pytest.main(["-q", "-rs", "--color=no", "-p", "no:cacheprovider", *files, *argv], plugins=[col])
    out.update(pytest_rc=int(rc), tests=col.tests, seconds=round(time.monotonic() - t0, 1))
    print(MARK + json.dumps(out, sort_keys=True), flush=True)
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
