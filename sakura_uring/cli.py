"""`sakura-uring`: the command line.

    sakura-uring trace [-p PID | -a | -- COMMAND ...] [-i INTERVAL] [-d SECONDS] [--json]
    sakura-uring httpd --model {threads,flexsc,link,kernel} --root DIR [--port PORT]
"""
from __future__ import annotations

import sys

COMMANDS = {
    "trace": ("how the kernel dispatches each io_uring request (bcc)", "sakura_uring.trace.command"),
    "httpd": ("a static-file HTTP server in four execution models", "sakura_uring.httpd"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: sakura-uring COMMAND ...\n\ncommands:", file=sys.stderr)
        for name, (what, _) in COMMANDS.items():
            print(f"  {name:<8} {what}", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    import importlib
    return importlib.import_module(COMMANDS[argv[0]][1]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
