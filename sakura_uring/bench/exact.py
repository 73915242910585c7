"""Kernel-handler engine exactness with every producer at once (issue: 10 million requests).

One KernelRing with the shipped `steps` handler; requests of k NOP steps (k = i % 7 + 1, so
most SQEs are pushed by the handler). At the same time: `runners` threads call run(k, 0, 0),
`callers` threads call call(k, 0, 0) and collect the Futures in groups of 32, and the main
thread calls map() in batches of 20,000 (window 128, or fewer slots). Every request must come
back exactly once with result k: wrong, lost, stalled and after_finish must all be 0."""
from __future__ import annotations

import sys
import threading
import time
from typing import Any

from ..kernel import KernelRing, handler_path


def run(n: int, *, entries: int = 4096, buffers: int = 256, cq_entries: int | None = None,
        runners: int = 4, callers: int = 2, seconds: float | None = None,
        progress: bool = False) -> dict:
    """Run up to n requests (or until `seconds` pass); returns the counts."""
    kr = KernelRing(handler_path("steps"), entries=entries, requests=buffers,
                    cq_entries=cq_entries)
    lock = threading.Lock()
    state: dict[str, Any] = {"next": 0, "wrong": 0, "returned": 0, "errors": []}
    end = None if seconds is None else time.monotonic() + seconds

    def take(count: int) -> list[int]:
        with lock:
            if end is not None and time.monotonic() >= end:
                return []
            first = state["next"]
            last = min(n, first + count)
            state["next"] = last
        return [i % 7 + 1 for i in range(first, last)]

    def check(ks, results) -> None:
        bad = sum(1 for k, r in zip(ks, results) if r.result != k)
        with lock:
            state["wrong"] += bad
            state["returned"] += len(results)

    def runner() -> None:
        try:
            while ks := take(1):
                check(ks, [kr.run(ks[0], 0, 0)])
        except BaseException as exc:
            state["errors"].append(exc)

    def caller() -> None:
        try:
            while ks := take(32):
                futs = [kr.call(k, 0, 0) for k in ks]
                check(ks, [f.result(120) for f in futs])
        except BaseException as exc:
            state["errors"].append(exc)

    threads = [threading.Thread(target=runner) for _ in range(runners)] + \
              [threading.Thread(target=caller) for _ in range(callers)]
    t0 = time.monotonic()
    reported = 0
    try:
        for t in threads:
            t.start()
        window = min(128, buffers)
        while ks := take(20_000):
            check(ks, kr.map([(k, 0, 0) for k in ks], window=window, timeout=600))
            if progress and state["returned"] - reported >= 1_000_000:
                reported = state["returned"]
                rate = reported / (time.monotonic() - t0)
                print(f"  {reported:,} requests, {state['wrong']} wrong, {rate:,.0f}/s",
                      file=sys.stderr, flush=True)
        for t in threads:
            t.join()
        st = kr.stats()
    finally:
        kr.close()
    if state["errors"]:
        raise state["errors"][0]
    took = time.monotonic() - t0
    return dict(requests=state["next"], returned=state["returned"], wrong=state["wrong"],
                lost=state["next"] - state["returned"], stalled=st["stalled"],
                after_finish=st["after_finish"], overflow_flushes=st["overflow_flushes"],
                seconds=took, rate=state["returned"] / took)


def main(args) -> int:
    print(f"kernel engine exactness: {args.n:,} requests, {args.runners} run() threads, "
          f"{args.callers} call() threads and map() at once", file=sys.stderr, flush=True)
    r = run(args.n, buffers=args.buffers, runners=args.runners, callers=args.callers,
            progress=True)
    print(f"| requests | wrong | lost | stalled | after_finish | overflow_flushes | rate |")
    print(f"|---|---|---|---|---|---|---|")
    print(f"| {r['requests']:,} | {r['wrong']} | {r['lost']} | {r['stalled']} | "
          f"{r['after_finish']} | {r['overflow_flushes']} | {r['rate']:,.0f}/s |")
    ok = not (r["wrong"] or r["lost"] or r["stalled"] or r["after_finish"])
    print("exact" if ok else "NOT EXACT", file=sys.stderr)
    return 0 if ok else 1
