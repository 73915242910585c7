"""After fork(): what a child inherits from its parent is never used or torn down there.

A Ring's SQ and CQ, a KernelRing's maps and a DispatchTracer's counters and perf events
are shared with the parent: the child's copy of the Python object points at the same
queues. A child that laid a request, or closed the ring (its finalizer does at exit),
would write into the parent's SQ; bcc's exit handler would disable the parent's perf
events (PERF_EVENT_IOC_DISABLE acts on the shared event, not on the child's fd). So at
fork every live object is marked in the child: using it raises InheritedAfterFork, and
closing it only unmaps the child's view and closes the child's descriptors.
"""
from __future__ import annotations

import os
import weakref

_live: "weakref.WeakSet" = weakref.WeakSet()


def track(obj) -> None:
    """obj._after_fork_in_child() runs in every child forked while obj lives."""
    _live.add(obj)


def _in_child() -> None:
    for obj in list(_live):
        try:
            obj._after_fork_in_child()
        except Exception:
            pass


os.register_at_fork(after_in_child=_in_child)


def forget_bpf(bpf) -> None:
    """Make a bcc.BPF object inherited through fork harmless: close the child's copies of
    its attachment fds with close(2) alone and empty bcc's tables of them, so neither
    cleanup() nor bcc's atexit handler detaches, disables or deletes what the parent
    still uses (kprobe events are global; perf events are shared)."""
    for name in ("kprobe_fds", "uprobe_fds", "tracepoint_fds", "raw_tracepoint_fds",
                 "kfunc_entry_fds", "kfunc_exit_fds", "lsm_fds", "open_perf_events"):
        table = getattr(bpf, name, None)
        if isinstance(table, dict):
            for value in table.values():
                _close_all(value)
            table.clear()


def _close_all(value) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _close_all(v)
    elif isinstance(value, int) and value >= 0:
        try:
            os.close(value)
        except OSError:
            pass
