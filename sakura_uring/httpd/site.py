"""The document root, and the one place a Python-side model turns a target into an open file.

Nothing outside the root is reachable by construction: every request opens its file with
openat2(root_fd, path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so the kernel refuses any
`..`, absolute path or symlink that would leave the root at the moment of the open, and
everything after (the size, the bytes) comes from that open file, never from a path or a
cache. O_NONBLOCK keeps a FIFO or device from hanging the open; anything but a regular
file is then a 404. The kernel model does the same in BPF (bpf/handlers/http.c)."""
from __future__ import annotations

import ctypes
import errno
import os
import stat
from dataclasses import dataclass

SYS_openat2 = 437                 # x86_64 and the generic table alike
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_HOW = _OpenHow(OPEN_FLAGS, 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
_HOW_SIZE = ctypes.sizeof(_OpenHow)


def openat2(dirfd: int, path: bytes) -> int:
    """The file at `path` beneath dirfd, read-only and non-blocking; raises OSError."""
    fd = _libc.syscall(SYS_openat2, dirfd, path, ctypes.byref(_HOW), _HOW_SIZE)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return fd


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
        try:
            fd = openat2(self.fd, rel)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                return 403
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
                return 503
            return 404                # ENOENT, ENOTDIR, EXDEV (escapes), ELOOP, ...
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return 404
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return 404                # a directory, FIFO, device, socket
        return Opened(fd, st.st_size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
