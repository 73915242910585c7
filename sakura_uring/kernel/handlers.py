"""The shipped kernel handlers, written in Python: the same jobs as bpf/handlers/follow.c,
copy.c, sendfile.c and steps.c, with the same results (tests/test_kernel_python.py runs
both), and two file scans, count and find; translated to C when this module is imported.

    from sakura_uring.kernel import KernelRing
    from sakura_uring.kernel.handlers import copy
    with KernelRing(copy) as kr:
        kr.run(src_fd, dst_fd)           # -> HandlerResult(result=<bytes copied>)

bpf/handlers/http.c stays C: it is 760 lines tuned against the verifier's limits (the
16-bit jump range, the 8,192 pending branches of its parser loops), where the C's exact
shape matters more than its language."""
from __future__ import annotations

import errno
import os
import socket

from . import sdk as sk
from .python import Arg, Step, handler

AT_FDCWD = -100


@handler
class follow:
    """Follow a path, all in kernel: open and read a small file that names another file,
    then open and read that one and return its bytes (up to the buffer size).
    kr.run(data=b"/path/to/pointer\\0") -> HandlerResult(result=n, data=<n bytes>)"""
    OPEN_PTR: Step
    READ_PTR: Step
    CLOSE_PTR: Step
    OPEN_TARGET: Step
    READ_TARGET: Step
    CLOSE_TARGET: Step
    ptr_fd: int
    target_fd: int

    def on_complete(self, e):
        n = e.res
        if e.step == sk.START:                       # the input is the pointer's path
            if self.in_len == 0:
                return -errno.EINVAL
            return sk.openat(e, self.OPEN_PTR, AT_FDCWD, 0, os.O_RDONLY)
        if e.step == self.OPEN_PTR:
            if n < 0:
                return n
            self.ptr_fd = n
            return sk.read(e, self.READ_PTR, n, 0, 4095, 0)
        if e.step == self.READ_PTR:
            sk.close(e, self.CLOSE_PTR, self.ptr_fd)
            if n < 0:
                return n
            if n == 0 or n > 4095:
                return -errno.ENOENT
            self.buf[n] = 0                          # the content, NUL-terminated,
            if self.buf[n - 1] == ord("\n"):         # without a trailing newline
                self.buf[n - 1] = 0
            return sk.openat(e, self.OPEN_TARGET, AT_FDCWD, 0, os.O_RDONLY)
        if e.step == self.CLOSE_PTR or e.step == self.CLOSE_TARGET:
            return 0
        if e.step == self.OPEN_TARGET:
            if n < 0:
                return n
            self.target_fd = n
            return sk.read(e, self.READ_TARGET, n, 0, sk.BUF_SIZE, 0)
        if e.step == self.READ_TARGET:
            sk.close(e, self.CLOSE_TARGET, self.target_fd)
            if n < 0:
                return n
            return sk.finish(e, n, 0, n)
        return -errno.EINVAL


class _Pump:
    """Move a file through the request's buffer: read a chunk, hand exactly the bytes the
    read returned to out() (a subclass writes or sends them), finish a short write or send
    before reading on, until end of file; the result is the bytes moved."""
    src: Arg
    dst: Arg
    READ: Step
    OUT: Step
    off: int           # file offset of the chunk
    length: int        # its bytes
    done: int          # bytes of it written or sent

    def pump(self, e, chunk):
        n = e.res
        if e.step == sk.START:
            return sk.read(e, self.READ, self.src, 0, chunk, 0)
        if e.step == self.READ:
            if n < 0:
                return n
            if n == 0:
                return sk.finish(e, self.off)
            self.length = n
            self.done = 0
            return self.out(e, 0, n)
        if e.step == self.OUT:
            if n < 0:
                return n
            if n == 0:
                return -errno.EIO
            self.done += n
            if self.done < self.length:
                return self.out(e, self.done, self.length - self.done)
            self.off += self.length
            return sk.read(e, self.READ, self.src, 0, chunk, self.off)
        return -errno.EINVAL


@handler
class copy(_Pump):
    """Copy a file in chunks of up to 64 KiB until end of file, each write exactly the
    bytes the read before it returned. kr.run(src_fd, dst_fd) -> result = bytes copied"""

    def out(self, e, at, n):
        return sk.write(e, self.OUT, self.dst, at, n, self.off + at)

    def on_complete(self, e):
        return self.pump(e, min(sk.BUF_SIZE, 65536))


@handler
class sendfile(_Pump):
    """Send a whole file to a socket, exactly the bytes each read returned.
    kr.run(file_fd, socket_fd) -> result = bytes sent"""

    def out(self, e, at, n):
        return sk.send(e, self.OUT, self.dst, at, n, socket.MSG_NOSIGNAL)

    def on_complete(self, e):
        return self.pump(e, sk.BUF_SIZE)


@handler
class steps:
    """The benchmark's chain: n steps, each pushed when the one before it completes;
    kind 0: NOPs, 1: 4 KiB reads of fd at offset 0. kr.run(n, kind, fd) -> steps run"""
    n: Arg
    kind: Arg
    fd: Arg
    NEXT: Step
    done: int

    def on_complete(self, e):
        if e.step != sk.START:
            if e.res < 0:
                return e.res
            self.done += 1
        if self.done < self.n:
            if self.kind:
                return sk.read(e, self.NEXT, self.fd, 0, 4096, 0)
            return sk.nop(e, self.NEXT)
        return sk.finish(e, self.done)


class _Scan:
    """Read a file SCAN_MAX bytes at a time, all in kernel, scanning each read with a
    word-at-a-time helper before pushing the next read. A subclass says what scan(e, n)
    does with the n bytes read (-errno, 1 when it finished the request, 0 to read on) and
    what end(e) finishes with at end of file."""
    fd: Arg
    byte: Arg
    READ: Step
    off: int            # file offset of the next read

    def on_complete(self, e):
        if e.step != sk.START:
            if e.res < 0:
                return e.res
            if e.res == 0:                                   # end of file
                return self.end(e)
            rc = self.scan(e, e.res)         # < 0: failed, 1: finished, 0: read on
            if rc != 0:
                return min(rc, 0)
            self.off += e.res
        return sk.read(e, self.READ, self.fd, 0, sk.SCAN_MAX, self.off)


@handler
class count(_Scan):
    """How many bytes of the file fd equal byte (count(fd, ord("\\n")) is wc -l).
    kr.run(fd, byte) -> result = the count; KernelRing(count, buffer_size=sk.SCAN_MAX)"""
    seen: int

    def scan(self, e, n):
        self.seen += sk.count_byte(e, 0, n, self.byte)
        return 0

    def end(self, e):
        return sk.finish(e, self.seen)


@handler
class find(_Scan):
    """The offset of the first byte of the file fd equal to byte, -1 when there is none
    (a signed result). kr.run(fd, byte) -> result = the offset"""

    def scan(self, e, n):
        at = sk.find_byte(e, 0, n, self.byte)
        if at < 0:
            return 0
        sk.finish_value(e, self.off + at)
        return 1

    def end(self, e):
        return sk.finish_value(e, -1)


__all__ = ["follow", "copy", "sendfile", "steps", "count", "find"]
