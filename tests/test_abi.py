"""One ABI (bpf/abi.h) for the BPF side, the native side and Python: every offset and
number Python uses comes from the compiler, and the BPF compiler lays the shared structs
out exactly as the C compiler does."""
import struct

from sakura_uring import chain
from sakura_uring._native import ffi, lib
from sakura_uring.kernel import ring as kring
from sakura_uring.resources import bpf_dir


def test_python_packs_a_step_where_the_compiler_puts_each_field():
    fields = ffi.typeof("struct sk_step").fields
    fmt = chain.STEP_STRUCT.format
    assert chain.STEP_STRUCT.size == ffi.sizeof("struct sk_step") == 64
    for i, (name, f) in enumerate(fields):
        # the i-th item of the format starts at the compiler's offset of the i-th field
        assert struct.calcsize("<" + fmt[1:i + 1]) == f.offset, name
    packed = chain._pack(*range(1, len(fields) + 1))
    view = ffi.from_buffer("struct sk_step *", bytearray(packed))
    assert [getattr(view, n) for n, _ in fields] == list(range(1, len(fields) + 1))


def test_the_kernel_engine_takes_its_numbers_from_the_abi():
    assert kring.N_VARS == lib.SK_VARS == 21 and kring.MAX_ARGS == lib.SK_ARGS == 6
    assert kring.SK_STALLED == lib.SK_ERR_STALLED == -4096
    assert kring.STAT_NAMES == ("events", "pushed", "push_full", "push_contended", "stale",
                                "stalled", "finished", "after_finish", "foreign", "cancelled")
    assert len(kring.STAT_NAMES) == lib.SK_STAT_COUNT <= lib.SK_STATS
    assert ffi.sizeof("struct sk_req") == 320
    assert ffi.sizeof("struct sk_ctl_head") == lib.SK_CTL_SEQ_OFF == 128


def test_the_bpf_compiler_lays_the_shared_structs_out_as_the_c_compiler_does():
    """Every field offset and size cffi reports is asserted in a program bcc compiles for
    the BPF target: one mismatch and the compile fails."""
    from sakura_uring.bpfenv import load_bcc
    checks = []
    for ctype in ("struct sk_req", "struct sk_ctl_head"):
        checks.append(f"_Static_assert(sizeof({ctype}) == {ffi.sizeof(ctype)}, \"{ctype}\");")
        for name, f in ffi.typeof(ctype).fields:
            checks.append(f"_Static_assert(__builtin_offsetof({ctype}, {name}) == {f.offset}, "
                          f"\"{ctype}.{name}\");")
    for const in ("SK_VARS", "SK_ARGS", "SK_REQ_DONE", "SK_STAT_FOREIGN", "SK_ERR_STALLED",
                  "SK_CTL_SEQ_OFF", "SK_UD_GEN_SHIFT"):
        checks.append(f"_Static_assert({const} == {getattr(lib, const)}, \"{const}\");")
    checks.append(f"_Static_assert(SK_UD_INTERNAL == {lib.SK_UD_INTERNAL}ULL, \"ud\");")
    text = '#include "abi.h"\n' + "\n".join(checks) + "\nint nothing(void *ctx) { return 0; }\n"
    bcc = load_bcc()
    b = bcc.BPF(text=text.encode(), cflags=[f"-I{bpf_dir()}"])   # raises on a failed assert
    b.cleanup()
    assert len(checks) >= 24
