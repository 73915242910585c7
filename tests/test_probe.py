"""probe(): the kernel's io_uring capabilities, and the op table against the native layer."""
import os

import sakura_uring as su
from sakura_uring import ops
from sakura_uring._native import ffi, lib


def test_probe_reports_this_kernel():
    p = su.probe()
    assert p.release == os.uname().release
    assert p.version[:2] >= (5, 1)
    assert 0 in p.opcodes                      # NOP exists everywhere
    assert max(p.opcodes) == p.last_op         # the probe reports the highest op number
    assert "NODROP" in p.features and "EXT_ARG" in p.features


def test_every_table_op_is_judged():
    p = su.probe()
    assert set(p.ops) == {op.name for op in su.OPS}
    for op in su.OPS:
        assert p.supports(op.name) == (op.opcode in p.opcodes)
        if not p.supports(op.name):
            assert op.since in p.missing()[op.name]


def test_table_is_consistent_with_native_helpers():
    # the C switch prepares exactly the ops the table marks "liburing"
    out = ffi.new("uint8_t[]", 64)
    n = lib.sk_known_ops(out, 64)
    native = {out[i] for i in range(n)}
    assert native == {op.opcode for op in ops.OPS if op.native == "liburing"}
    assert len({op.opcode for op in ops.OPS}) == len(ops.OPS)
    assert len({op.name for op in ops.OPS}) == len(ops.OPS)


def test_release_tuple():
    assert ops.release_tuple("6.18.44-fc-v669") == (6, 18, 44)
    assert ops.release_tuple("5.10.0-rc1+") == (5, 10, 0)


def test_table_names_agree_with_the_kernel_op_names():
    # the tracer names opcodes from KERNEL_OP_NAMES; the op table must say the same
    alias = {"install_fd": "fixed_fd_install"}
    for op in ops.OPS:
        assert ops.KERNEL_OP_NAMES[op.opcode] == alias.get(op.name, op.name)
    assert su.probe().last_op <= len(ops.KERNEL_OP_NAMES)
