"""A workload to watch with `sakura-uring trace`: it touches every path the tracer tells
apart, then (with --steady SECONDS) keeps running SQPOLL chains so that -p/-i has something
to show.

    sudo .venv/bin/sakura-uring trace -- .venv/bin/python examples/trace_demo.py
    .venv/bin/python examples/trace_demo.py --steady 30 &
    sudo .venv/bin/sakura-uring trace -p $! -i 1 -d 3
"""
import os
import sys
import tempfile
import time

import sakura_uring as su
from sakura_uring.kernel import KernelRing, handler_path


def cat(path):
    c = su.Chain()
    f = c.openat(path)
    c.read(f, 4096)
    c.close(f)
    return c


def main() -> int:
    steady = float(sys.argv[2]) if sys.argv[1:2] == ["--steady"] else 0
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f4k")
        with open(path, "wb") as f:
            f.write(os.urandom(4096))
        with su.Ring(64, sqpoll=True) as sq, su.Ring(64) as inline:
            if steady:
                end = time.monotonic() + steady
                while time.monotonic() < end:
                    sq.run(cat(path))
                    time.sleep(0.0002)
                return 0
            for _ in range(2000):                  # linked chains taken up by SQPOLL
                sq.run(cat(path))
            for _ in range(1000):                  # the same, submitted inline
                inline.run(cat(path))
            sq.run(cat(os.path.join(d, "missing")))  # a chain broken by its openat
            r, w = os.pipe()                       # a read that has to wait in poll
            c = su.Chain()
            c.read(r, 16)
            fut = inline.submit(c)
            time.sleep(0.05)
            os.write(w, b"x")
            fut.result(5)
            if su.engines()["kernel"]:             # requests carried out by a BPF handler
                ptr = os.path.join(d, "ptr")
                with open(ptr, "w") as f:
                    f.write(path)
                with KernelRing(handler_path("follow")) as kr:
                    kr.map([((), ptr.encode() + b"\0")] * 500)
    return 0


if __name__ == "__main__":
    sys.exit(main())
