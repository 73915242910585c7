"""Getting bcc to run on a kernel without a headers package.

bcc compiles BPF C against kernel headers. Debian's linux-headers-* trees are merged
into one directory under the project's cache (`make setup` does it) and named by
BCC_KERNEL_SOURCE; debugfs must be mounted. Every failure names the fix."""
from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

from ..errors import SakuraError


class TracingUnavailable(SakuraError):
    """bcc can't trace here; the message says why and what to do."""


def _default_headers() -> str | None:
    root = Path(__file__).resolve().parents[2] / ".cache" / "kernel-headers"
    return str(root) if (root / ".done").exists() else None


def _mount_tracing() -> None:
    """Mount tracefs and debugfs where they are missing (bcc reads both)."""
    for fstype, where, probe in (("tracefs", "/sys/kernel/tracing", "events"),
                                 ("debugfs", "/sys/kernel/debug", "tracing")):
        if os.path.exists(os.path.join(where, probe)) or not os.path.isdir(where):
            continue
        subprocess.run(["mount", "-t", fstype, fstype, where], capture_output=True)


def load_bcc():
    """Import bcc with its environment in place; returns the bcc module."""
    if os.geteuid() != 0:
        raise TracingUnavailable("tracing needs root (CAP_BPF and CAP_PERFMON); run as root")
    if not os.environ.get("BCC_KERNEL_SOURCE"):
        hdrs = _default_headers()
        if hdrs is None and not os.path.exists(f"/lib/modules/{os.uname().release}/build"):
            raise TracingUnavailable(
                "bcc needs kernel headers and this kernel has none: run `make setup` (it merges "
                "Debian's linux-headers-*-common and -amd64 under .cache/) or set "
                "BCC_KERNEL_SOURCE to such a tree")
        if hdrs:
            os.environ["BCC_KERNEL_SOURCE"] = hdrs
    _mount_tracing()
    if not os.path.isdir("/sys/kernel/debug/tracing") and not glob.glob("/sys/kernel/tracing/events"):
        raise TracingUnavailable("tracefs is not mounted and could not be: mount -t tracefs tracefs "
                                 "/sys/kernel/tracing and mount -t debugfs debugfs "
                                 "/sys/kernel/debug (or run `make setup`)")
    try:
        import bcc
    except ImportError:
        raise TracingUnavailable(
            "the bcc Python module is missing: apt-get install python3-bpfcc, then `make setup` "
            "(it links Debian's bcc package into the venv)") from None
    return bcc
