"""A kernel handler end to end: bpf/handlers/follow.c reads a file that names another file,
opens and reads that one and returns its bytes -- every step decided and issued in kernel
context. Python only starts the request and receives the result.

    sudo .venv/bin/python examples/kernel_follow.py [TARGET]
"""
import os
import sys
import tempfile

import sakura_uring as su
from sakura_uring.kernel import KernelRing, handler_path


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else "/etc/hostname"
    kernel = su.engines()["kernel"]
    if not kernel:
        print(f"kernel handlers are unavailable here: {kernel.reason}", file=sys.stderr)
        return 1
    with tempfile.NamedTemporaryFile("w", suffix=".ptr") as ptr:
        ptr.write(os.path.abspath(target) + "\n")      # the pointer file names the target
        ptr.flush()
        with KernelRing(handler_path("follow")) as kr:
            result = kr.run(data=ptr.name.encode() + b"\0", timeout=5)
            result.raise_for_error()
            sys.stdout.buffer.write(result.data)
            st = kr.stats()
    print(f"[{st['events']} completions handled in kernel, {st['pushed']} system calls "
          f"pushed by the handler]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
