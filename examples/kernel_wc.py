"""wc -l in the kernel, written in Python: a kernel handler reads the file 16 KiB at a time
and counts its newlines with sk.count_byte (8 bytes per step), pushing the next read
itself; no Python runs between reads. The same count in plain Python follows, timed.

    python examples/kernel_wc.py FILE
"""
import os
import sys
import time

from sakura_uring.kernel import Arg, KernelRing, Step, handler, sdk as sk


@handler
class wc:
    fd: Arg
    READ: Step
    off: int                    # where the next read starts
    lines: int

    def on_complete(self, e):
        if e.step != sk.START:
            if e.res < 0:
                return e.res
            if e.res == 0:                                   # end of file
                return sk.finish(e, self.lines)
            self.lines += sk.count_byte(e, 0, e.res, ord("\n"))
            self.off += e.res
        return sk.read(e, self.READ, self.fd, 0, sk.SCAN_MAX, self.off)


def plain(path: str) -> int:
    """The same job in plain Python: the same 16 KiB reads, bytes.count on each."""
    n = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(16384):
            n += chunk.count(b"\n")
    return n


def main() -> int:
    path = sys.argv[1]
    fd = os.open(path, os.O_RDONLY)
    try:
        with KernelRing(wc, buffer_size=sk.SCAN_MAX, requests=1) as kr:
            t0 = time.perf_counter()
            lines = kr.run(fd, timeout=60).raise_for_error().result
            t_kernel = time.perf_counter() - t0
    finally:
        os.close(fd)
    t0 = time.perf_counter()
    want = plain(path)
    t_plain = time.perf_counter() - t0
    print(lines)
    print(f"kernel handler {t_kernel * 1e3:.1f} ms, plain Python {t_plain * 1e3:.1f} ms "
          f"(bytes.count on 16 KiB reads), the same count: {lines == want}", file=sys.stderr)
    return 0 if lines == want else 1


if __name__ == "__main__":
    sys.exit(main())
