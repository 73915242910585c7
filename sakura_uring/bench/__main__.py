"""Usage:
    python -m sakura_uring.bench chains [-n N] [--rounds R] [--quick] [--markdown] [--json]

chains   the same open -> read 4 KiB -> close, N times, in every execution model, in one
         process, interleaved over R rounds (median kept): time per chain, system calls per
         chain (counted with a bcc tracepoint program, not assumed) and the speed-up over
         plain os.* calls.
"""
import argparse
import sys

from .chains import main as chains_main


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
    args = ap.parse_args(argv)
    if args.what == "chains":
        return chains_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
