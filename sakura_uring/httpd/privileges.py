"""Serve as an unprivileged user without giving up the process's root.

A server started as root must serve only what that user could read (nginx's workers run
as `nobody`). The server's own threads take the user's *filesystem* identity with the raw
setgroups / setfsgid / setfsuid system calls, which act on the calling thread only (glibc's
wrappers would change every thread of the process, the test runner's included). A
non-root fsuid also clears the filesystem capabilities (CAP_DAC_OVERRIDE, ...) of that
thread. A ring created by such a thread gives its SQPOLL thread and io-wq workers the same
credentials. The kernel model's ring is created with full privileges (it loads BPF), so its
openat2 carries an io_uring personality registered by a thread holding the user's
credentials (IORING_REGISTER_PERSONALITY)."""
from __future__ import annotations

import ctypes
import os
import pwd
import threading
from dataclasses import dataclass

SYS_setgroups, SYS_setfsuid, SYS_setfsgid, SYS_io_uring_register = 116, 122, 123, 427
IORING_REGISTER_PERSONALITY = 9

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, name: str) -> "User":
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise ValueError(f"no user named {name!r} to serve as (--user NAME)") from None
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid)


def serving_user(name: str | None) -> User | None:
    """Whom to serve as: `name`, or `nobody` when running as root; None: as we are."""
    if name is None:
        return User.lookup("nobody") if os.geteuid() == 0 else None
    user = User.lookup(name)
    if os.geteuid() != 0 and user.uid != os.geteuid():
        raise ValueError(f"--user {name}: only root can serve as another user")
    return user


def _raw(nr: int, *args) -> int:
    rc = _libc.syscall(nr, *args)
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return rc


def become(user: User | None) -> None:
    """Give the calling thread (only) `user`'s filesystem identity; no supplementary groups."""
    if user is None or os.geteuid() != 0:
        return
    _raw(SYS_setgroups, 0, None)
    _libc.syscall(SYS_setfsgid, user.gid)
    _libc.syscall(SYS_setfsuid, user.uid)
    # setfs*id return the previous id whatever happens: read them back to be sure
    if _libc.syscall(SYS_setfsuid, -1) != user.uid or _libc.syscall(SYS_setfsgid, -1) != user.gid:
        raise OSError(f"could not take user {user.name}'s file identity in this thread")


def register_personality(ring_fd: int, user: User | None) -> int:
    """An io_uring personality id carrying `user`'s credentials (0: none needed)."""
    if user is None or os.geteuid() != 0:
        return 0
    out: list = []

    def register():
        try:
            become(user)
            out.append(_raw(SYS_io_uring_register, ring_fd, IORING_REGISTER_PERSONALITY,
                            None, 0))
        except OSError as e:
            out.append(e)

    t = threading.Thread(target=register, name="httpd-personality")
    t.start()
    t.join()
    if isinstance(out[0], OSError):
        raise OSError(out[0].errno, f"registering an io_uring personality for {user.name}: "
                      f"{out[0].strerror}")
    return out[0]
