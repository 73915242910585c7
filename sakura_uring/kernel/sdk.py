"""The kernel-handler SDK as Python names, for handlers written in Python
(sakura_uring.kernel.handler). Each function here is one C function of bpf/sakura.h
(`read` is `sk_read`, ...): the translator turns a call into that C call, and calling one
from Python raises. Arguments are integers; `e` is the event on_complete was given; `step`
is a step of the handler (a `Step` annotation), which comes back as `e.step` when that
system call completes. Offsets are into the request's data buffer (the input is at 0).
Every push returns 0, -EBUSY (the ring is full) or -EAGAIN (contention), or -EINVAL when
a buffer range leaves the buffer.

    from sakura_uring.kernel import sdk as sk
    sk.read(e, self.READ, fd, 0, 4096, 0)
"""
from __future__ import annotations

import functools


class Layout:
    """A number KernelRing fixes when it compiles the handler (a C macro)."""

    def __init__(self, macro: str, doc: str):
        self.macro, self.__doc__ = macro, doc

    def __repr__(self) -> str:
        return f"<{self.macro}>"


START = 0              #: e.step of the event that starts a request
ASYNC = 0x10           #: e.sqe_flags = ASYNC: the next pushes go to an io-wq worker
RESOLVE_NO_MAGICLINKS = 0x02   #: openat2 resolve flags (struct open_how)
RESOLVE_BENEATH = 0x08
SCAN_MAX = 16384       #: the most bytes count_byte / find_byte / compare take per call
STALLED = -0x1000      #: the result of a request left with nothing in flight
BUF_SIZE = Layout("SK_BUF_SIZE", "bytes of a request's data buffer (KernelRing(buffer_size=))")
ENTRIES = Layout("SK_ENTRIES", "entries of the submission ring (KernelRing(entries=))")


def _c(fn):
    """An SDK call: the C function sk_<name>, with fn's signature and doc; it raises when
    called from Python."""
    @functools.wraps(fn)
    def call(*_a, **_k):
        raise RuntimeError(f"sakura_uring.kernel.sdk.{fn.__name__}() runs only inside a "
                           f"kernel handler (a class decorated with @sakura_uring.kernel.handler)")
    call.c_name = "sk_" + fn.__name__
    return call


# ---- pushes: one system call each -----------------------------------------------------

@_c
def nop(e, step): """A NOP: completes at once (a handler's way to go on at the next event)."""


@_c
def read(e, step, fd, buf_off, len, file_off):
    """read(fd) of len bytes into the buffer at buf_off, from file offset file_off (-1: the
    file position)."""


@_c
def write(e, step, fd, buf_off, len, file_off):
    """write(fd) of len bytes of the buffer from buf_off, at file offset file_off (-1: the
    file position)."""


@_c
def recv(e, step, fd, buf_off, len, msg_flags=0):
    """recv(fd) of up to len bytes into the buffer at buf_off (socket.MSG_* flags)."""


@_c
def send(e, step, fd, buf_off, len, msg_flags=0):
    """send(fd) of len bytes of the buffer from buf_off (socket.MSG_NOSIGNAL, ...)."""


@_c
def openat(e, step, dirfd, path_off, flags, mode=0):
    """openat(dirfd, the NUL-terminated path at buffer offset path_off, flags, mode);
    e.res is the new fd (os.O_* flags; dirfd -100 is AT_FDCWD)."""


@_c
def openat2(e, step, dirfd, path_off, how_off):
    """openat2(dirfd, path at path_off, the struct open_how at how_off, written by
    open_how()): RESOLVE_BENEATH keeps the path inside dirfd's tree."""


@_c
def close(e, step, fd): """close(fd)."""


@_c
def accept(e, step, fd, flags=0): """accept4(fd, NULL, NULL, flags); e.res is the new fd."""


@_c
def shutdown(e, step, fd, how): """shutdown(fd, how): socket.SHUT_RD, SHUT_WR, SHUT_RDWR."""


@_c
def fadvise(e, step, fd, off, len, advice): """posix_fadvise(fd, off, len, os.POSIX_FADV_*)."""


@_c
def statx(e, step, dirfd, path_off, flags, mask, stx_off):
    """statx(dirfd, path at path_off, flags, mask) into 256 bytes of the buffer at stx_off."""


@_c
def link(e, n):
    """The next n pushes are one linked chain (IOSQE_IO_LINK): the kernel runs them in
    order, a failure cancelling the rest; 0, -EBUSY or -EAGAIN."""


# ---- the buffer ----------------------------------------------------------------------

@_c
def open_how(e, how_off, flags, mode, resolve):
    """Write a struct open_how {flags, mode, resolve} (24 bytes) at how_off, for openat2."""


@_c
def count_byte(e, off, len, byte):
    """How many bytes of [off, off+len) equal byte, 8 bytes per step; -EINVAL outside the
    buffer, -E2BIG for len over SCAN_MAX."""


@_c
def find_byte(e, off, len, byte):
    """The offset of the first byte equal to byte in [off, off+len), -1 when none; -EINVAL,
    -E2BIG as count_byte."""


@_c
def compare(e, a_off, b_off, len):
    """memcmp of two ranges of the buffer: 0 when equal, else the first differing bytes'
    difference (in [-255, 255]); -EINVAL and -E2BIG (check them first) as count_byte."""


@_c
def load_u64(e, off):
    """The little-endian 8 bytes at off (any alignment); 0 when they leave the buffer."""


@_c
def store_u64(e, off, value):
    """Store value as 8 little-endian bytes at off; -EINVAL when they leave the buffer."""


@_c
def file_size(e):
    """The length of the regular file this completion's request used (a read's, an
    fadvise's), as its inode says now, with no system call; -EINVAL when it is not a regular
    file, -ENOSYS when this kernel can't tell (then ask statx)."""


@_c
def fd_size(e, fd):
    """The length of the regular file open as fd in this process (e.g. the fd an openat
    just returned), from its inode, with no system call; -EINVAL when it is not a regular
    file, -ENOSYS when this kernel can't tell (then ask statx)."""


@_c
def buf_uaddr(e, off):
    """The user-space address of buffer byte off (for a raw push)."""


# ---- the end -------------------------------------------------------------------------

@_c
def finish(e, result, out_off=0, out_len=0):
    """End the request: result (>= 0, or -errno) and out_len bytes of the buffer from
    out_off reach the caller once everything it pushed has completed."""


@_c
def finish_value(e, value, out_off=0, out_len=0):
    """finish() with a value that may be negative and is no error (HandlerResult.signed)."""


CALLS = {f.__name__: f for f in (nop, read, write, recv, send, openat, openat2, close, accept,
                                 shutdown, fadvise, statx, link, open_how, count_byte,
                                 find_byte, compare, load_u64, store_u64, file_size, fd_size, buf_uaddr,
                                 finish, finish_value)}
