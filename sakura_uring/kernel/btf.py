"""Where the running kernel keeps a request's file, a task's open files, and a file's
length and mode, read from its own type information (/sys/kernel/btf/vmlinux), for
sk_file_size() and sk_fd_size() in bpf/sakura.h.

bcc compiles against whatever header tree this machine has (Debian's 6.1 headers on a
6.18 kernel, here), so a struct's layout from those headers may be another kernel's; BTF
describes the kernel that is running. Only a few member offsets are wanted, so this reads
BTF's type section directly (the format: the kernel's Documentation/bpf/btf.rst) instead
of depending on a BTF library. Anything unexpected -- no BTF, another format version, a
struct or member missing -- gives None, and the handler asks statx instead."""
from __future__ import annotations

import functools
import struct

VMLINUX = "/sys/kernel/btf/vmlinux"
_MAGIC = 0xEB9F
# bytes after the 12-byte struct btf_type, by kind (per member where vlen counts them)
_KIND_INT, _KIND_ARRAY, _KIND_STRUCT, _KIND_UNION, _KIND_ENUM = 1, 3, 4, 5, 6
_KIND_FUNC_PROTO, _KIND_VAR, _KIND_DATASEC, _KIND_DECL_TAG, _KIND_ENUM64 = 13, 14, 15, 17, 19
_FIXED_EXTRA = {_KIND_INT: 4, _KIND_ARRAY: 12, _KIND_VAR: 4, _KIND_DECL_TAG: 4}
_PER_MEMBER = {_KIND_STRUCT: 12, _KIND_UNION: 12, _KIND_ENUM: 8, _KIND_FUNC_PROTO: 8,
               _KIND_DATASEC: 12, _KIND_ENUM64: 12}
_QUALIFIERS = {8, 9, 10, 11, 18}      # typedef, volatile, const, restrict, type_tag

# (macro, struct, member): what sk_file_size() follows, request -> file -> inode, and
# sk_fd_size(), task -> its file table -> the file of an fd
WANTED = (("SK_KOFF_REQ_FILE", "io_kiocb", "file"),
          ("SK_KOFF_FILE_INODE", "file", "f_inode"),
          ("SK_KOFF_INODE_SIZE", "inode", "i_size"),
          ("SK_KOFF_INODE_MODE", "inode", "i_mode"),
          ("SK_KOFF_TASK_FILES", "task_struct", "files"),
          ("SK_KOFF_FILES_FDT", "files_struct", "fdt"),
          ("SK_KOFF_FDT_MAX", "fdtable", "max_fds"),
          ("SK_KOFF_FDT_FD", "fdtable", "fd"))


class _Types:
    def __init__(self, data: bytes):
        magic, version, _flags, hdr_len, type_off, type_len, str_off, _str_len = \
            struct.unpack_from("<HBBIIIII", data)
        if magic != _MAGIC or version != 1:
            raise ValueError(f"not BTF version 1 (magic {magic:#x}, version {version})")
        self._data = data
        self._strings = hdr_len + str_off
        self.types: list[tuple] = [(0, 0, 0, ())]          # type 0 is void
        p, end = hdr_len + type_off, hdr_len + type_off + type_len
        while p < end:
            name_off, info, size_or_type = struct.unpack_from("<III", data, p)
            p += 12
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            members: tuple = ()
            if kind in (_KIND_STRUCT, _KIND_UNION):
                ms = struct.unpack_from("<" + "III" * vlen, data, p)
                # with kflag the offset's low 24 bits are the bit offset (high: bitfield size)
                members = tuple((ms[i], ms[i + 1], ms[i + 2] & 0xFFFFFF if kflag else ms[i + 2])
                                for i in range(0, 3 * vlen, 3))
            p += _FIXED_EXTRA.get(kind, 0) + _PER_MEMBER.get(kind, 0) * vlen
            self.types.append((kind, name_off, size_or_type, members))

    def name(self, off: int) -> str:
        start = self._strings + off
        return self._data[start:self._data.index(b"\0", start)].decode()

    def struct_ids(self, names: set[str]) -> dict[str, int]:
        """{name: type id} of the first struct of each name, in one pass over the types."""
        out: dict[str, int] = {}
        for i, (kind, name_off, _, _) in enumerate(self.types):
            if kind == _KIND_STRUCT and name_off:
                name = self.name(name_off)
                if name in names:
                    out.setdefault(name, i)
        return out

    def member_bits(self, tid: int, member: str) -> int | None:
        """Bit offset of `member` in struct `tid`, looking into anonymous unions/structs."""
        for name_off, mtype, bits in self.types[tid][3]:
            if name_off:
                if self.name(name_off) == member:
                    return bits
                continue
            while self.types[mtype][0] in _QUALIFIERS:
                mtype = self.types[mtype][2]
            if self.types[mtype][0] in (_KIND_STRUCT, _KIND_UNION):
                inner = self.member_bits(mtype, member)
                if inner is not None:
                    return bits + inner
        return None


@functools.lru_cache(maxsize=None)
def file_offsets(path: str = VMLINUX) -> dict[str, int] | None:
    """{macro: byte offset} for WANTED, or None when this kernel's BTF can't say."""
    try:
        with open(path, "rb") as f:
            types = _Types(f.read())
        ids = types.struct_ids({sname for _, sname, _ in WANTED})
        out = {}
        for macro, sname, member in WANTED:
            tid = ids.get(sname)
            bits = types.member_bits(tid, member) if tid is not None else None
            if bits is None or bits % 8:
                return None
            out[macro] = bits // 8
        return out
    except (OSError, ValueError, struct.error, IndexError, UnicodeDecodeError):
        return None
