"""cffi API-mode build of sakura_uring._native._sakura (run by the package build, never at import)."""
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).parent

ffi = FFI()
ffi.cdef("""
struct __kernel_timespec { int64_t tv_sec; long long tv_nsec; };
""" + (HERE / "shim.h").read_text().split("*/", 1)[1])
ffi.set_source(
    "sakura_uring._native._sakura",
    '#include <liburing.h>\n#include "shim.h"\n' + (HERE / "shim.c").read_text(),
    libraries=["uring"],
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffi.compile(tmpdir=str(HERE.parent.parent), verbose=True)
