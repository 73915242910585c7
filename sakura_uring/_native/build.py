"""cffi API-mode build of sakura_uring._native._sakura (run by the package build, never at import)."""
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).parent


def _decls(name: str) -> str:
    return (HERE / name).read_text().split("*/", 1)[1]   # drop the header comment


ffi = FFI()
ffi.cdef("struct __kernel_timespec { int64_t tv_sec; long long tv_nsec; };\n"
         + _decls("shim.h") + _decls("kring.h"))
ffi.set_source(
    "sakura_uring._native._sakura",
    # kring.c's constants for flags newer than liburing 2.3's headers
    "#include <liburing.h>\n#include \"shim.h\"\n#include \"kring.h\"\n"
    "#define SKK_SETUP_NO_MMAP (1U << 14)\n#define SKK_SETUP_NO_SQARRAY (1U << 16)\n"
    "enum { SK_REQ_RUNNING_ = 1, SK_REQ_DONE_ = 2, SK_REQ_REPORTED_ = 3 };\n"
    + (HERE / "shim.c").read_text() + (HERE / "kring.c").read_text(),
    libraries=["uring"],
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffi.compile(tmpdir=str(HERE.parent.parent), verbose=True)
