"""The document root, and the one place a Python-side model turns a target into an open file.

Nothing outside the root is reachable by construction: every request opens its file with
openat2(root_fd, path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so the kernel refuses any
`..`, absolute path or symlink that would leave the root at the moment of the open, and
everything after (the size, the bytes) comes from that open file, never from a path or a
cache. O_NONBLOCK keeps a FIFO or device from hanging the open; anything but a regular
file is then a 404. The kernel model does the same in BPF (bpf/handlers/http.c)."""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from .._native import ffi, lib


@dataclass(frozen=True)
class Opened:
    fd: int          # yours to close
    size: int        # of the open file, taken after the open: what Content-Length says


class Site:
    """A document root, held open as a directory fd for the server's lifetime."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"the document root {root!r} is not a directory")
        self.fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def open(self, target: bytes) -> Opened | int:
        """The file a decoded target names -> Opened, or the status to answer with
        (403 not readable by the serving user, 404 anything else, 503 out of fds)."""
        rel = target.lstrip(b"/")
        if not rel or rel.endswith(b"/"):
            rel += b"index.html"
        # openat2 + fstat in one native call (sk_open_beneath in _native/shim.c)
        size = ffi.new("long long *")                # per call: threads share the Site
        fd = lib.sk_open_beneath(self.fd, rel, size)
        if fd >= 0:
            return Opened(fd, size[0])
        if fd in (-errno.EACCES, -errno.EPERM):
            return 403
        if fd in (-errno.EMFILE, -errno.ENFILE, -errno.ENOMEM):
            return 503
        return 404        # ENOENT, ENOTDIR, EXDEV (escapes), ELOOP, ENXIO (not a regular file)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
