"""Usage:
    python -m sakura_uring.matrix [--kernels LIST] [--timeout S] [--accel A] [--write]

Boots Debian kernels under QEMU and runs the kernel-facing tests inside each (chains,
kernel handlers, the tracer), plus the same tests on the host kernel; prints one table
per kernel and, with --write, puts it in docs/kernels.md.

--kernels   comma list of: 5.10 6.1 6.12 sid host, or oldest / newest (default: all)
--timeout   seconds per kernel, boot to power-off (default 1500)
--accel     tcg (default), kvm, or auto (try KVM once, fall back to TCG)
Kernels are fetched into .cache/matrix with a private apt configuration (never
installed, /etc/apt untouched). A kernel that can't be fetched or booted is reported as
such and the others still run. Exit status 1 when any kernel failed in any way."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..resources import checkout
from .kernels import BY_LABEL, KERNELS, Apt, FetchError, fetch
from .report import write_doc, summary, Row
from .vm import boot

def _checkout() -> Path:
    root = checkout()
    if root is None:
        sys.exit("the kernel matrix runs a checkout's tests in each guest: run it from a "
                 "source checkout (`make matrix`), not an installed wheel")
    return root


REPO = _checkout()
CACHE = REPO / ".cache" / "matrix"
RESULTS = CACHE / "results.json"


def labels_of(arg: str) -> list:
    out = []
    for word in filter(None, arg.split(",")):
        word = {"oldest": KERNELS[0].label, "newest": KERNELS[-1].label}.get(word, word)
        if word not in BY_LABEL and word != "host":
            raise SystemExit(f"unknown kernel {word!r}: choose from "
                             f"{', '.join([*BY_LABEL, 'host', 'oldest', 'newest'])}")
        if word not in out:
            out.append(word)
    return out


def run_host(progress) -> Row:
    """The host kernel: the same tests, natively, in a child process."""
    import subprocess
    from .inside import MARK
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "sakura_uring.matrix.inside"], cwd=REPO,
                       capture_output=True, text=True)
    res = next((json.loads(l[len(MARK):]) for l in p.stdout.splitlines() if l.startswith(MARK)), None)
    import os
    row = Row("host", os.uname().release, "the machine's own kernel", "native",
              round(time.monotonic() - t0, 1), res,
              "" if res else f"no result (exit {p.returncode}): {p.stderr[-300:]}")
    progress(f"[host] done in {row.seconds} s")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sakura_uring.matrix", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", default=",".join([k.label for k in KERNELS] + ["host"]))
    ap.add_argument("--timeout", type=int, default=1500)
    ap.add_argument("--accel", choices=("tcg", "kvm", "auto"), default="tcg")
    ap.add_argument("--write", action="store_true", help="write docs/kernels.md")
    ap.add_argument("--mem", default="3G")
    ap.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    a = ap.parse_args(argv)
    labels = labels_of(a.kernels)
    progress = lambda s: print(s, file=sys.stderr, flush=True)
    t0 = time.monotonic()
    rows, apt, accel = [], None, a.accel
    for label in labels:
        if label == "host":
            progress("[host] running the kernel-facing tests on the host kernel")
            rows.append(run_host(progress))
            continue
        spec = BY_LABEL[label]
        try:
            if apt is None:
                apt = Apt(CACHE / "apt")
                progress("[matrix] apt-get update (private sources list under .cache/matrix)")
                apt.update()
            k = fetch(apt, spec, CACHE, log=progress)
        except (FetchError, OSError) as exc:
            progress(f"[{label}] fetch failed: {exc}")
            rows.append(Row(label, "?", f"{spec.suite}", "-", 0.0, None, f"fetch failed: {exc}"))
            continue
        progress(f"[{label}] booting {k.package} ({accel.upper()}, timeout {a.timeout} s)")
        b = None
        if accel in ("kvm", "auto"):
            b = boot(k, REPO, CACHE / "run", accel="kvm", mem=a.mem, timeout=a.timeout,
                     boot_timeout=30 if accel == "auto" else None, args=a.pytest_args,
                     progress=progress)
            if accel == "auto" and b.guest_boot_s is None:
                progress(f"[{label}] KVM did not boot ({b.error[:120]}); TCG from now on")
                accel, b = "tcg", None
        if b is None:
            b = boot(k, REPO, CACHE / "run", accel="tcg", mem=a.mem, timeout=a.timeout,
                     args=a.pytest_args, progress=progress)
        rows.append(Row(label, k.release, k.package, b.accel, b.seconds, b.result, b.error))
        progress(f"[{label}] {summary(rows[-1])}")
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous.update({r.label: r.to_json() for r in rows})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(previous, indent=1, sort_keys=True))
    print()
    for r in rows:
        print(f"{r.label:5} {summary(r)}")
    if a.write:
        order = [k.label for k in KERNELS] + ["host"]
        merged = [Row.from_json(previous[l]) for l in order if l in previous]
        path = write_doc(merged, REPO / "docs" / "kernels.md")
        progress(f"[matrix] wrote {path.relative_to(REPO)} ({len(merged)} kernels)")
    progress(f"[matrix] {len(rows)} kernels in {time.monotonic() - t0:.0f} s")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
