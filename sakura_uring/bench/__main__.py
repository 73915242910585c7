"""Usage:
    python -m sakura_uring.bench chains [-n N] [--rounds R] [--quick] [--markdown] [--json]
    python -m sakura_uring.bench steps [--steps S] [--rounds R] [--quick] [--markdown] [--json]

chains   the same open -> read 4 KiB -> close, N times, in every execution model, in one
         process, interleaved over R rounds (median kept): time per chain, system calls per
         chain (counted with a bcc tracepoint program, not assumed) and the speed-up over
         plain os.* calls.
steps    chains of 1..32 NOP or 4 KiB read steps in the FlexSC model, the link engine and
         kernel handlers: time per chain, cost per added step, system calls per chain.
"""
import argparse
import sys

from .chains import main as chains_main
from .steps import main as steps_main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sakura_uring.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("chains", help="open/read/close in every execution model")
    c.add_argument("-n", type=int, default=20000, help="chains per model and round")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--quick", action="store_true", help="n=3000, 2 rounds (the demo)")
    c.add_argument("--markdown", action="store_true", help="print a Markdown table")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    s = sub.add_parser("steps", help="cost per step: FlexSC model, link engine, kernel handlers")
    s.add_argument("--steps", type=int, default=20000, help="steps per cell and round")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--quick", action="store_true", help="fewer steps, 2 rounds")
    s.add_argument("--markdown", action="store_true", help="print Markdown tables")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.what == "chains":
        return chains_main(args)
    if args.what == "steps":
        return steps_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
