"""A static-file HTTP/1.1 server in four execution models (the seed's request handler):

  threads  (a) blocking threads with plain system calls
  flexsc   (b) the FlexSC model: io_uring, each call's result back in Python before the next
  link     (c) Sakura link: Python parses the request line, the rest is one linked chain
  kernel   (d) Sakura kernel: the whole handler, parsing included, is a BPF kernel handler

    sakura-uring httpd --model kernel --root DIR --port 8080

    with Server("link", root) as srv:        # in-process, on 127.0.0.1, a free port
        urllib.request.urlopen(srv.url + "/index.html")

Every model opens each file beneath the root with openat2(RESOLVE_BENEATH), serves it with
the permissions of an unprivileged user (`nobody` when started as root, --user NAME), ends
idle and slow connections (Limits), and makes room for a new client by closing the oldest
idle one. docs/http.md has the security model.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import socket
import sys
import threading

from . import privileges
from .conns import Conns
from .http import Limits
from .serving import Context
from .site import Site

MODELS = {
    "threads": "(a) blocking threads, plain system calls",
    "flexsc": "(b) FlexSC model: one io_uring request per system call",
    "link": "(c) Sakura link: the handler after parsing is one linked chain",
    "kernel": "(d) Sakura kernel: the whole handler in a BPF kernel handler",
}


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it (Linux): no Nagle delay on the last segment of a
    # response, and no system call per connection to ask for it
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((host, port))
    s.listen(backlog)
    return s


class Server:
    """Runs one model in a background thread until close()."""

    def __init__(self, model: str, root, host: str = "127.0.0.1", port: int = 0, *,
                 user: str | None = None, limits: Limits | None = None):
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
        if limits is not None and not isinstance(limits, Limits):
            raise TypeError(f"limits must be an httpd.Limits, not {type(limits).__name__}")
        self.model = model
        self.user = privileges.serving_user(user)
        self.limits = limits or Limits()
        self.site = Site(root)
        try:
            self.listener = listen(host, port)
        except BaseException:
            self.site.close()
            raise
        self.conns = Conns(self.limits, f"httpd-{model}")
        self.ctx = Context(self.site, self.limits, self.conns, self.user)
        self.host, self.port = self.listener.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._stop = threading.Event()
        self._ready = threading.Event()
        serve = importlib.import_module(f".{model}", __name__).serve
        self.error: BaseException | None = None
        self._t = threading.Thread(target=self._run, args=(serve,), name=f"httpd-{model}",
                                   daemon=True)
        self._t.start()
        # the kernel model compiles its handler first: wait until it accepts connections
        while not self._ready.wait(0.05):
            if not self._t.is_alive():
                self._release()
                raise self.error or RuntimeError(f"the {model} server stopped while starting")

    def _run(self, serve) -> None:
        try:
            serve(self.listener, self.ctx, self._stop, self._ready)
        except BaseException as exc:      # reported by close()
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._t.join(10)
        self._release()
        if self.error is not None:
            raise self.error

    def _release(self) -> None:
        self.conns.close()
        self.listener.close()
        self.site.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="sakura-uring httpd", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=list(MODELS), required=True,
                    help="; ".join(f"{k}: {v}" for k, v in MODELS.items()))
    ap.add_argument("--root", required=True, help="the directory to serve")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--user", default=None,
                    help="serve only what this user may read (default: nobody when root)")
    d = Limits()
    ap.add_argument("--header-timeout", type=float, default=d.header_timeout, metavar="S")
    ap.add_argument("--keepalive-timeout", type=float, default=d.keepalive_timeout, metavar="S")
    ap.add_argument("--send-timeout", type=float, default=d.send_timeout, metavar="S")
    ap.add_argument("--max-connections", type=int, default=d.max_connections, metavar="N",
                    help="beyond this the oldest idle connection is closed")
    args = ap.parse_args(argv)
    try:
        limits = Limits(header_timeout=args.header_timeout,
                        keepalive_timeout=args.keepalive_timeout,
                        send_timeout=args.send_timeout, max_connections=args.max_connections)
        srv = Server(args.model, args.root, args.host, args.port, user=args.user,
                     limits=limits)
    except (ValueError, OSError) as exc:
        print(f"sakura-uring httpd: {exc}", file=sys.stderr)
        return 1
    done = threading.Event()
    # handlers first: whoever reads the line below may stop us at once
    signal.signal(signal.SIGINT, lambda *a: done.set())
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    who = f" as {srv.user.name}" if srv.user else ""
    print(f"serving {srv.site.root} at {srv.url} with model {args.model}{who}: "
          f"{MODELS[args.model]}", file=sys.stderr, flush=True)
    while not done.wait(0.2):
        if not srv._t.is_alive():
            break
    try:
        srv.close()
    except Exception as exc:
        print(f"sakura-uring httpd: {exc}", file=sys.stderr)
        return 1
    if not done.is_set():
        print("sakura-uring httpd: the server stopped by itself", file=sys.stderr)
        return 1
    return 0
