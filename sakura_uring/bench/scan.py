"""A file scanned in the kernel against the same job in plain Python, side by side in one
process (rounds interleaved, median kept): count the newlines of a file (wc -l) and find
the first offset of a byte that is only at its end (the whole file is scanned).

kernel handler      sakura_uring.kernel.handlers.count / .find: a Python kernel handler
                    reads the file 16 KiB at a time and scans each read with
                    sk.count_byte / sk.find_byte (8 bytes per step), pushing the next
                    read itself; one run() per file
kernel, byte loop   the same job with a loop over self.buf[i], a byte per step (what a
                    handler did before the scans): 2 KiB reads, as a loop with two
                    data-dependent branches per byte must stay under the verifier's 8,192
                    pending branches
python, 16 KiB      the same reads with os.pread and bytes.count / bytes.find on each
python, whole file  one read of the whole file, then bytes.count / bytes.find (memory
                    for the whole file)

The file (text lines of random length, a 0x01 byte at its very end) is in the page cache.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time

from ..kernel import Arg, KernelRing, Step, handler, sdk as sk
from ..kernel.handlers import count, find

BYTES = 2048                                  # the byte loop's read


@handler
class ByteLoop:
    """count (find = 0) or find (find = 1) a byte in the file fd, a byte per step."""
    fd: Arg
    byte: Arg
    find: Arg
    READ: Step
    off: int
    seen: int

    def on_complete(self, e):
        if e.step != sk.START:
            if e.res < 0:
                return e.res
            if e.res == 0:
                return sk.finish_value(e, -1 if self.find else self.seen)
            n = 0
            for i in range(BYTES):
                if i >= e.res:
                    break
                if self.buf[i] == self.byte:
                    if self.find:
                        return sk.finish_value(e, self.off + i)
                    n += 1
            self.seen += n
            self.off += e.res
        return sk.read(e, self.READ, self.fd, 0, BYTES, self.off)

CHUNK = sk.SCAN_MAX
MARK = 1                                      # the byte find looks for: only the last one


def _make(path: str, size: int) -> None:
    rnd = random.Random(7)
    with open(path, "wb") as f:
        while f.tell() < size - 1:
            f.write(b"x" * rnd.randrange(0, 120) + b"\n")
        f.write(bytes([MARK]))


def models(fd: int, size: int, rings: dict) -> dict:
    """{(job, model): a function returning the job's answer}."""
    nl = b"\n"
    mark = bytes([MARK])

    def py_count():
        total = 0
        off = 0
        while chunk := os.pread(fd, CHUNK, off):
            total += chunk.count(nl)
            off += len(chunk)
        return total

    def py_find():
        off = 0
        while chunk := os.pread(fd, CHUNK, off):
            at = chunk.find(mark)
            if at >= 0:
                return off + at
            off += len(chunk)
        return -1

    def whole(op):
        return lambda: getattr(os.pread(fd, size, 0), op)(nl if op == "count" else mark)
    return {
        ("count", "kernel handler"): lambda: rings["count"].run(fd, nl[0], timeout=60).result,
        ("count", "kernel, byte loop"): lambda: rings["bytes"].run(fd, nl[0], 0, timeout=60).result,
        ("count", "python, 16 KiB"): py_count,
        ("count", "python, whole file"): whole("count"),
        ("find", "kernel handler"): lambda: rings["find"].run(fd, MARK, timeout=60).result,
        ("find", "kernel, byte loop"): lambda: rings["bytes"].run(fd, MARK, 1, timeout=60).result,
        ("find", "python, 16 KiB"): py_find,
        ("find", "python, whole file"): whole("find"),
    }


def main(args) -> int:
    size = (2 if args.quick else args.mb) * 1_000_000
    rounds = 2 if args.quick else args.rounds
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    tmp = tempfile.mkdtemp(prefix="sakura-scan-")
    path = os.path.join(tmp, "text")
    _make(path, size)
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size                  # (the last line may run past it)
    rings = {"count": KernelRing(count, buffer_size=CHUNK, requests=1),
             "find": KernelRing(find, buffer_size=CHUNK, requests=1),
             "bytes": KernelRing(ByteLoop, buffer_size=CHUNK, requests=1)}
    times: dict = {}
    try:
        runs = models(fd, size, rings)
        answers = {k: f() for k, f in runs.items()}           # warm up, and agree
        for job in ("count", "find"):
            got = {answers[(j, m)] for j, m in runs if j == job}
            if len(got) != 1:
                raise AssertionError(f"{job}: the models disagree: {got}")
        log(f"a {size / 1e6:.0f} MB file in the page cache, {rounds} rounds, "
            f"kernel {os.uname().release}; {answers[('count', 'kernel handler')]} lines, "
            f"the mark at {answers[('find', 'kernel handler')]}")
        for rnd in range(rounds):
            for key, f in runs.items():
                t0 = time.perf_counter()
                f()
                times.setdefault(key, []).append((time.perf_counter() - t0) * 1e3)
            log(f"  round {rnd + 1}/{rounds} done")
    finally:
        for kr in rings.values():
            kr.close()
        os.close(fd)
        os.unlink(path)
        os.rmdir(tmp)
    med = {k: statistics.median(v) for k, v in times.items()}
    if args.json:
        print(json.dumps({"mb": size / 1e6, "rounds": rounds,
                          "ms": {f"{j}/{m}": round(v, 3) for (j, m), v in med.items()}}))
        return 0
    hdr = ["job", "kernel handler ms", "kernel, byte loop ms", "python, 16 KiB ms",
           "python, whole file ms", "byte loop / kernel", "16 KiB / kernel", "whole / kernel"]
    md = args.markdown
    if md:
        print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    else:
        print("  ".join(f"{h:>22}" for h in hdr))
    for job in ("count", "find"):
        k = med[(job, "kernel handler")]
        cells = [job, f"{k:.2f}", f"{med[(job, 'kernel, byte loop')]:.2f}",
                 f"{med[(job, 'python, 16 KiB')]:.2f}",
                 f"{med[(job, 'python, whole file')]:.2f}",
                 f"{med[(job, 'kernel, byte loop')] / k:.2f}x",
                 f"{med[(job, 'python, 16 KiB')] / k:.2f}x",
                 f"{med[(job, 'python, whole file')] / k:.2f}x"]
        print(("| " + " | ".join(cells) + " |") if md else "  ".join(f"{c:>22}" for c in cells))
    return 0
