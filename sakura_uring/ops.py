"""The one table of io_uring operations sakura_uring can put in a chain.

Everything that needs to know about an operation reads it from here: the Chain step
methods (opcode, argument kinds, what the step yields), the native layer (whether
liburing 2.3 has a helper for it or it is prepared by number), probing (is it supported
by this kernel, and since when) and the docs (docs/api.md lists this table).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    name: str           # Chain method name
    opcode: int         # IORING_OP_* number
    since: str          # first kernel release that has the opcode
    args: str           # argument kinds, for the docs
    yields: str         # "fixed" (fills a slot), "data" (fills a buffer), "result"
    native: str         # "liburing": prepared by a liburing 2.3 helper; "number": raw SQE
    kernel: bool = False     # a kernel handler can emit it: sk_<name>() in bpf/sakura.h
    link: bool = True        # a Chain step method exists for it


OPS: tuple[Op, ...] = (
    Op("nop",        0,  "5.1",  "",                                   "result", "liburing", kernel=True),
    Op("fsync",      3,  "5.1",  "file",                               "result", "liburing"),
    Op("accept",     13, "5.5",  "sock",                               "fixed",  "liburing", kernel=True),
    Op("connect",    16, "5.5",  "sock, address",                      "result", "liburing"),
    Op("openat",     18, "5.6",  "path, flags, mode",                  "fixed",  "liburing", kernel=True),
    Op("close",      19, "5.6",  "file",                               "result", "liburing", kernel=True),
    Op("statx",      21, "5.6",  "path",                               "data",   "liburing", kernel=True),
    Op("read",       22, "5.6",  "file, length, offset",               "data",   "liburing", kernel=True),
    Op("write",      23, "5.6",  "file, data, offset",                 "result", "liburing", kernel=True),
    Op("send",       26, "5.6",  "sock, data",                         "result", "liburing", kernel=True),
    Op("recv",       27, "5.6",  "sock, length",                       "data",   "liburing", kernel=True),
    Op("openat2",    28, "5.6",  "dirfd, path, open_how",              "result", "number",
       kernel=True, link=False),
    Op("shutdown",   34, "5.11", "sock, how",                          "result", "number",
       kernel=True, link=False),
    Op("fadvise",    24, "5.6",  "file, offset, length, advice",       "result", "number",
       kernel=True, link=False),
    Op("splice",     30, "5.7",  "file_in, off_in, file_out, off_out, length", "result", "liburing"),
    Op("socket",     45, "5.19", "family, type, proto",                "fixed",  "liburing"),
    # Newer than liburing 2.3: the native layer lays these by number.
    Op("install_fd", 54, "6.8",  "file",                               "result", "number"),
    Op("ftruncate",  55, "6.9",  "file, length",                       "result", "number"),
    Op("bind",       56, "6.11", "sock, address",                      "result", "number"),
    Op("listen",     57, "6.11", "sock, backlog",                      "result", "number"),
)

# Every IORING_OP_* the kernel numbers, in order (include/uapi/linux/io_uring.h up to 6.18),
# to name what a trace sees, whoever submitted it.
KERNEL_OP_NAMES: tuple[str, ...] = (
    "nop", "readv", "writev", "fsync", "read_fixed", "write_fixed", "poll_add", "poll_remove",
    "sync_file_range", "sendmsg", "recvmsg", "timeout", "timeout_remove", "accept",
    "async_cancel", "link_timeout", "connect", "fallocate", "openat", "close",
    "files_update", "statx", "read", "write", "fadvise", "madvise", "send", "recv",
    "openat2", "epoll_ctl", "splice", "provide_buffers", "remove_buffers", "tee", "shutdown",
    "renameat", "unlinkat", "mkdirat", "symlinkat", "linkat", "msg_ring", "fsetxattr",
    "setxattr", "fgetxattr", "getxattr", "socket", "uring_cmd", "send_zc", "sendmsg_zc",
    "read_multishot", "waitid", "futex_wait", "futex_wake", "futex_waitv",
    "fixed_fd_install", "ftruncate", "bind", "listen", "recv_zc", "epoll_wait",
    "readv_fixed", "writev_fixed", "pipe",
    "nop128", "uring_cmd128",                       # Linux 7.x (the kernel matrix's sid)
)

BY_NAME: dict[str, Op] = {op.name: op for op in OPS}
BY_OPCODE: dict[int, Op] = {op.opcode: op for op in OPS}


def release_tuple(text: str) -> tuple[int, ...]:
    """'6.11.0-rc1+' -> (6, 11, 0)."""
    out = []
    for part in text.split("-")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def markdown_table() -> str:
    """The op table as it appears in docs/api.md (a test keeps the two equal)."""
    rows = ["| step | IORING_OP | since | arguments | yields | prepared by | kernel handler |",
            "|---|---|---|---|---|---|---|"]
    for op in OPS:
        step = f"`{op.name}`" if op.link else f"({op.name})"
        rows.append(f"| {step} | {op.opcode} | {op.since} | {op.args or '—'} | {op.yields} "
                    f"| {'liburing 2.3 helper' if op.native == 'liburing' else 'opcode number'} "
                    f"| {f'`sk_{op.name}()`' if op.kernel else '—'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
