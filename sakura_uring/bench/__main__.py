"""Usage:
    python -m sakura_uring.bench chains [-n N] [--rounds R] [--quick] [--markdown] [--json]
    python -m sakura_uring.bench steps [--steps S] [--rounds R] [--quick] [--markdown] [--json]
    python -m sakura_uring.bench tracer [-n N] [--rounds R] [--quick] [--markdown] [--json]
    python -m sakura_uring.bench http [--seconds S | --full] [--servers ...] [--write] [--markdown]
    python -m sakura_uring.bench exact [-n N] [--buffers B]
    python -m sakura_uring.bench scan [--mb M] [--rounds R] [--quick] [--markdown] [--json]

chains   the same open -> read 4 KiB -> close, N times, in every execution model, in one
         process, interleaved over R rounds (median kept): time per chain, system calls per
         chain (counted with a bcc tracepoint program, not assumed) and the speed-up over
         plain os.* calls.
tracer   the same workloads with and without `sakura-uring trace` attached.
http     wrk against nginx and `sakura-uring httpd` in its four models (the main job).
soak     each model one minute under 256 connections: no failed request, no fd/memory growth.
steps    chains of 1..32 NOP or 4 KiB read steps in the FlexSC model, the link engine and
         kernel handlers: time per chain, cost per added step, system calls per chain.
scan     a file counted (wc -l) and searched in the kernel by Python kernel handlers
         (word-at-a-time scans) against the same job in plain Python.
exact    the kernel-handler engine, 10,000,000 requests from run(), call() and map() at
         once: every one back exactly once with the right result (`make exact`).
"""
import argparse
import sys

from .chains import main as chains_main
from .exact import main as exact_main
from .scan import main as scan_main
from .steps import main as steps_main
from .http import SERVERS, main as http_main, soak as soak_main
from .tracer import main as tracer_main


# name -> (help, entry point, the size option, its default and help, what --quick does)
BENCHES = {
    "chains": ("open/read/close in every execution model", chains_main,
               "-n", 20000, "chains per model and round", "n=3000, 2 rounds (the demo)"),
    "steps": ("cost per step: FlexSC model, link engine, kernel handlers", steps_main,
              "--steps", 20000, "steps per cell and round", "6,000 steps, 2 rounds"),
    "tracer": ("the dispatch tracer's own cost, with and without it attached", tracer_main,
               "-n", 10000, "operations per workload and round", "n=2000, 2 rounds"),
    "scan": ("a file scanned in the kernel vs the same job in plain Python", scan_main,
             "--mb", 10, "file size in MB", "2 MB, 2 rounds"),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sakura_uring.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    for name, (help_, _, size, default, size_help, quick) in BENCHES.items():
        p = sub.add_parser(name, help=help_)
        p.add_argument(size, type=int, default=default, help=size_help)
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--quick", action="store_true", help=quick)
        p.add_argument("--markdown", action="store_true", help="print Markdown tables")
        p.add_argument("--json", action="store_true", help="print one JSON object")
    h = sub.add_parser("http", help="wrk against nginx and the four HTTP server models")
    h.add_argument("--seconds", type=int, default=1, help="wrk time per run (whole seconds)")
    h.add_argument("--full", action="store_true", help="10 s per run")
    h.add_argument("--servers", nargs="+", choices=SERVERS, help="only these servers")
    h.add_argument("--write", action="store_true", help="write docs/results.md and PNG plots")
    h.add_argument("--markdown", action="store_true", help="print Markdown tables")
    h.add_argument("--json", action="store_true", help="print one JSON object")
    x = sub.add_parser("exact", help="kernel engine: 10M requests from every producer, exactly once")
    x.add_argument("-n", type=int, default=10_000_000)
    x.add_argument("--buffers", type=int, default=256)
    x.add_argument("--runners", type=int, default=4)
    x.add_argument("--callers", type=int, default=2)
    k = sub.add_parser("soak", help="each HTTP model under 256 connections: no failures, no growth")
    k.add_argument("--seconds", type=int, default=60)
    k.add_argument("--servers", nargs="+", choices=SERVERS, help="only these servers")
    args = ap.parse_args(argv)
    if args.what == "http":
        return http_main(args)
    if args.what == "soak":
        return soak_main(args)
    if args.what == "exact":
        return exact_main(args)
    return BENCHES[args.what][1](args)


if __name__ == "__main__":
    sys.exit(main())
