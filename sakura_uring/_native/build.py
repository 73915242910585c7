"""cffi API-mode build of sakura_uring._native._sakura (run by the package build, never at import).

The C is compiled as separate sources (shim.c: the link engine's hot paths; kring.c: the
kernel-handler ring). cffi sees their headers, and bpf/abi.h -- the layouts and numbers
shared with the BPF side -- through the C preprocessor, so Python reads each of them from
the compiler (ffi.offsetof, lib.SK_*) instead of a copy."""
import re
import subprocess
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).parent
BPF = HERE.parent / "bpf"          # sakura_uring/bpf: the top-level bpf/ (a link in a checkout)
ABI = BPF / "abi.h"
# what <linux/types.h> gives the C (asm-generic/int-ll64.h), for cffi's parser
KERNEL_TYPES = ("typedef unsigned long long __u64; typedef long long __s64;\n"
                "typedef unsigned int __u32; typedef int __s32;\n")


def _decls(name: str) -> str:
    """A header's declarations for cffi: its leading comment and #include lines dropped."""
    text = (HERE / name).read_text().split("*/", 1)[1]
    return "\n".join(ln for ln in text.splitlines() if not ln.startswith("#include"))


def _abi() -> str:
    """bpf/abi.h preprocessed (its macros expanded, comments gone), then each of its
    integer #defines declared for cffi to take from the compiler."""
    pre = subprocess.run(["cc", "-E", "-P", "-x", "c", str(ABI)], check=True,
                         capture_output=True, text=True).stdout
    names = re.findall(r"^#define (SK_\w+) ", ABI.read_text(), re.M)
    consts = [n for n in names if n not in ("SK_ABI_H", "SK_CTL_HEAD_FIELDS")]
    return pre + "".join(f"#define {n} ...\n" for n in consts)


ffi = FFI()
ffi.cdef("struct __kernel_timespec { int64_t tv_sec; long long tv_nsec; };\n" + KERNEL_TYPES
         + _abi() + _decls("shim.h") + _decls("kring.h"))
ffi.set_source(
    "sakura_uring._native._sakura",
    '#include <liburing.h>\n#include "shim.h"\n#include "kring.h"\n',
    sources=[str(HERE / "shim.c"), str(HERE / "kring.c")],
    libraries=["uring"],
    include_dirs=[str(HERE), str(BPF)],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffi.compile(tmpdir=str(HERE.parent.parent), verbose=True)
