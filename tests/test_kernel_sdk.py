"""The kernel-handler SDK's safety nets, on the real kernel: cancel that stops a request,
signed results, declared argument counts, handler paths, names the compiler does not know,
and the verifier's walk reported and explained."""
import errno
import os
import socket
import time
import warnings
from pathlib import Path

import pytest

from sakura_uring.kernel import HandlerCompileError, KernelRing, handler_path, verifier_stats
from sakura_uring.kernel.program import BUDGET, WARN_SHARE, VerifierBudgetWarning

from helpers import inode_known, open_fds, require_kernel_engine

pytestmark = pytest.mark.usefixtures("kernel_engine")


@pytest.fixture(scope="module")
def kernel_engine():
    require_kernel_engine()


# arg0 = 1: push NOPs to itself for ever (a runaway handler); 0: finish at once
RUNAWAY = r"""
SK_NARGS(1);
static int on_complete(struct sk_event *e)
{
    if (e->r->arg[0])
        return sk_nop(e, 1);
    return sk_finish(e, 7, 0, 0);
}
"""

# waits in recv(arg0) for data that may never come; echoes what it gets
RECV = Path(__file__).parent / "handlers" / "recv_wait.c"


def _settle(kr, deadline_s: float = 5.0) -> dict:
    end = time.monotonic() + deadline_s
    while kr.stats()["in_flight"] and time.monotonic() < end:
        time.sleep(0.01)
    return kr.stats()


# ---- cancel ---------------------------------------------------------------------------

def test_run_timeout_stops_a_runaway_handler_and_frees_its_slot():
    with KernelRing(RUNAWAY, requests=1) as kr:
        with pytest.raises(TimeoutError, match="cancelled"):
            kr.run(1, timeout=0.2)
        st = _settle(kr)
        assert st["in_flight"] == 0 and st["cancelled"] >= 1
        events = st["events"]
        time.sleep(0.2)
        assert kr.stats()["events"] == events          # no more pushes, no more events
        assert kr.run(0, timeout=5).result == 7        # the only slot is free again


def test_future_cancel_stops_a_request_blocked_in_recv():
    a, b = socket.socketpair()
    try:
        with KernelRing(RECV, requests=1) as kr:
            fut = kr.call(a.fileno())
            time.sleep(0.05)
            assert not fut.done()
            assert fut.cancel() and fut.cancelled()
            st = _settle(kr)
            assert st["in_flight"] == 0 and st["cancelled"] >= 1
            b.send(b"next")                             # the next request gets the data
            assert kr.run(a.fileno(), timeout=5).data == b"next"
            assert not fut.cancel() or fut.cancelled()
    finally:
        a.close()
        b.close()


def test_cancel_of_a_finished_request_is_refused():
    with KernelRing(RUNAWAY) as kr:
        fut = kr.call(0)
        assert fut.result(5).result == 7
        assert not fut.cancel()
        assert kr.stats()["cancelled"] == 0


def test_map_timeout_cancels_what_is_in_flight():
    with KernelRing(RUNAWAY, requests=4) as kr:
        with pytest.raises(TimeoutError):
            kr.map([(1,)] * 8, timeout=0.3)
        st = _settle(kr)
        assert st["in_flight"] == 0
        assert [r.result for r in kr.map([(0,)] * 8, timeout=5)] == [7] * 8


def test_asyncio_cancel_reaches_the_kernel():
    import asyncio
    a, b = socket.socketpair()

    async def go(kr):
        task = asyncio.ensure_future(kr.call_async(a.fileno()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    try:
        with KernelRing(RECV, requests=1) as kr:
            asyncio.run(go(kr))
            assert _settle(kr)["in_flight"] == 0
    finally:
        a.close()
        b.close()


# ---- results and arguments ------------------------------------------------------------

SIGNED = r"""
SK_NARGS(2);
static int on_complete(struct sk_event *e)
{
    s64 d = (s64)e->r->arg[0] - (s64)e->r->arg[1];
    if (e->r->arg[1] == 99)
        return sk_finish(e, -ENOENT, 0, 0);
    return sk_finish_value(e, d, 0, 0);
}
"""


def test_signed_results_are_values_not_errors():
    with KernelRing(SIGNED) as kr:
        r = kr.run(3, 10, timeout=5)
        assert (r.result, r.signed, r.ok, r.error) == (-7, True, True, None)
        r = kr.run(10, 3, timeout=5)
        assert (r.result, r.signed, r.ok) == (7, True, True)
        r = kr.run(0, 99, timeout=5)
        assert (r.result, r.signed, r.ok) == (-errno.ENOENT, False, False)
        assert r.error is not None and r.error.errno == errno.ENOENT


def test_declared_argument_count_is_checked_before_the_kernel():
    with KernelRing(SIGNED) as kr:
        assert kr.nargs == 2
        started = kr.stats()["started"]
        for args in [(), (1,), (1, 2, 3)]:
            with pytest.raises(TypeError, match="takes 2 arguments, got %d" % len(args)):
                kr.run(*args, timeout=5)
            with pytest.raises(TypeError):
                kr.call(*args)
        with pytest.raises(TypeError):
            kr.map([(1,)])
        assert kr.stats()["started"] == started        # nothing reached the kernel


def test_shipped_handlers_declare_their_arguments():
    counts = {}
    for name in ("follow", "copy", "sendfile", "steps", "http"):
        with KernelRing(handler_path(name), buffer_size=16384) as kr:
            counts[name] = kr.nargs
    assert counts == {"follow": 0, "copy": 2, "sendfile": 2, "steps": 3, "http": 3}


def test_bad_argument_declarations_are_refused():
    before = open_fds()
    with pytest.raises(ValueError, match="at most 6"):
        KernelRing("SK_NARGS(7);\n" + RUNAWAY.replace("SK_NARGS(1);", ""))
    with pytest.raises(ValueError, match="more than once"):
        KernelRing("SK_NARGS(1);\nSK_NARGS(2);\n" + RUNAWAY.replace("SK_NARGS(1);", ""))
    assert not open_fds() - before


# ---- where the handler comes from -----------------------------------------------------

def test_a_str_naming_a_file_is_a_path(tmp_path):
    f = tmp_path / "h.c"
    f.write_text(RUNAWAY)
    with KernelRing(str(f)) as kr:
        assert kr.name == str(f) and kr.run(0, timeout=5).result == 7
    assert verifier_stats(str(f)).loaded


def test_a_missing_handler_file_says_so():
    before = open_fds()
    with pytest.raises(FileNotFoundError, match="no such file"):
        KernelRing("/nonexistent/handler.c")
    with pytest.raises(FileNotFoundError):
        verifier_stats("handlers/nope.c")
    assert not open_fds() - before


def test_a_misspelt_sdk_name_is_named_with_the_fix():
    src = RUNAWAY.replace("sk_finish(e, 7", "sk_fnish(e, 7")
    before = open_fds()
    with pytest.raises(HandlerCompileError) as ei:
        KernelRing(src, name="typo.c")
    msg = str(ei.value)
    assert "sk_fnish()" in msg and "did you mean sk_finish?" in msg
    assert ei.value.line == src.splitlines().index(
        next(ln for ln in src.splitlines() if "sk_fnish" in ln)) + 1
    assert not open_fds() - before


# ---- the verifier ---------------------------------------------------------------------

def test_the_walk_is_reported_at_load():
    with KernelRing(RUNAWAY) as kr:
        assert isinstance(kr.verified_insns, int) and 0 < kr.verified_insns < BUDGET
        # (verifier_stats loads with another boot token, a constant of another width)
        assert abs(kr.verified_insns - verifier_stats(RUNAWAY).processed) <= 4


# a byte loop with a data-dependent branch per byte, over the whole buffer
JUMPY = r"""
static int on_complete(struct sk_event *e)
{
    struct sk_buf *b = sk_buf(e);
    if (!b)
        return -EINVAL;
    u32 n = 0;
    for (u32 i = 0; i < 20000; i++)
        if (SK_BYTE(b, i) == '\n')
            n++;
    return sk_finish(e, n, 0, 0);
}
"""


def test_too_many_jumps_is_explained_with_the_fix():
    with pytest.raises(HandlerCompileError) as ei:
        KernelRing(JUMPY, name="jumpy.c")
    msg = str(ei.value)
    assert "slices" in msg and "sk_count_byte" in msg
    # 6.18 stops at 8,192 pending branches; 7.2 walks this loop past its 1,000,000
    # instructions first: either refusal says what to do
    assert "jumps is too complex" in msg or "more than 1,000,000 instructions" in msg
    if "jumps" in msg:
        # the branch the verifier keeps for every byte, or the line it jumps to
        branch = JUMPY.splitlines().index("        if (SK_BYTE(b, i) == '\\n')") + 1
        assert ei.value.line in (branch, branch + 1)


# a loop the verifier walks iteration by iteration: ~600,000 instructions
LONG_WALK = r"""
static int on_complete(struct sk_event *e)
{
    u64 acc = e->r->arg[0];
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < %d; i++) {
        acc = acc * 31 + i;
        asm volatile("" : "+r"(acc));
    }
    return sk_finish(e, acc & 0xffff, 0, 0);
}
"""


@pytest.mark.parametrize("iters", [1000, 100_000])
def test_a_walk_past_half_the_budget_warns(iters):
    src = LONG_WALK % iters
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with KernelRing(src, name="walk.c") as kr:
            walked = kr.verified_insns
    warned = [w for w in caught if issubclass(w.category, VerifierBudgetWarning)]
    assert bool(warned) == (walked > WARN_SHARE * BUDGET)
    if iters == 1000:
        assert not warned
    else:
        assert warned and f"{walked:,}" in str(warned[0].message)


# ---- word-at-a-time scans, against bytes.count / bytes.find / a byte compare ------------

from sakura_uring.kernel import sdk as sk                       # noqa: E402
from sakura_uring.kernel.python import Arg, handler             # noqa: E402


class _Scan:
    """OP 0: count_byte(off, length, x); 1: find_byte(off, length, x); 2: compare(off, x,
    length); 3: load_u64(off); 4: store_u64(off, x) and load it back. OP is a constant, so
    each subclass compiles to its own scan alone."""
    off: Arg
    length: Arg
    x: Arg
    OP = 0

    def on_complete(self, e):
        if self.OP == 0:
            return sk.finish_value(e, sk.count_byte(e, self.off, self.length, self.x))
        if self.OP == 1:
            return sk.finish_value(e, sk.find_byte(e, self.off, self.length, self.x))
        if self.OP == 2:
            return sk.finish_value(e, sk.compare(e, self.off, self.x, self.length))
        if self.OP == 3:
            return sk.finish_value(e, sk.load_u64(e, self.off))
        rc = sk.store_u64(e, self.off, self.x)
        if rc < 0:
            return rc
        return sk.finish_value(e, sk.load_u64(e, self.off), self.off, 8)


@handler
class Count(_Scan):
    OP = 0


@handler
class Find(_Scan):
    OP = 1


@handler
class Compare(_Scan):
    OP = 2


@handler
class Load(_Scan):
    OP = 3


@handler
class Store(_Scan):
    OP = 4


SCANS = [Count, Find, Compare, Load, Store]


def _expect(op, data, off, length, x):
    size = len(data)
    if op == 2 and (off + length > size or x + length > size):
        return -errno.EINVAL
    if op < 3 and off + length > size:
        return -errno.EINVAL
    if op < 3 and length > sk.SCAN_MAX:
        return -errno.E2BIG
    if op == 0:
        return data.count(bytes([x]), off, off + length)
    if op == 1:
        return data.find(bytes([x]), off, off + length)
    if op == 2:
        a, b = data[off:off + length], data[x:x + length]
        return next((p - q for p, q in zip(a, b) if p != q), 0)
    if off + 8 > size:
        return 0
    v = int.from_bytes(data[off:off + 8], "little")
    return v - (1 << 64) if v >= 1 << 63 else v


def test_scans_agree_with_python_bytes():
    import random
    rnd = random.Random(17)
    size = 65536
    # a small alphabet, so that bytes match often; and long runs without a match
    data = bytes(rnd.choice(b"ab\n\x00\xff") for _ in range(size // 2)) + b"z" * (size // 2)
    cases = []
    for _ in range(600):
        op = rnd.choice([0, 0, 1, 1, 2, 2, 3])
        off = rnd.choice([0, 1, 7, 8, 9, size - 1, size - 8, size - 9, size - 16384,
                          rnd.randrange(size)])
        length = rnd.choice([0, 1, 7, 8, 9, 15, 16, 17, 16383, 16384, 16385,
                             rnd.randrange(64), rnd.randrange(20000)])
        x = rnd.choice(b"ab\n\x00\xffz") if op < 2 else rnd.randrange(size)
        if op == 2 and rnd.random() < 0.5:
            x = off                                  # equal ranges
        cases.append((op, off, length, x))
    # ranges that are equal but for one byte, at every alignment of both
    ref = bytearray(data)
    for k in range(16):
        ref[30000 + k * 1000: 30000 + k * 1000 + 600] = data[k * 1000 + k: k * 1000 + k + 600]
        ref[30000 + k * 1000 + 300 + k] ^= 0x55
    data = bytes(ref)
    cases += [(2, k * 1000 + k, 600, 30000 + k * 1000) for k in range(16)]
    for op in range(4):
        mine = [c for c in cases if c[0] == op]
        with KernelRing(SCANS[op], buffer_size=size, requests=16) as kr:
            got = kr.map([(c[1:], data) for c in mine], timeout=60)
        for c, r in zip(mine, got):
            assert r.result == _expect(c[0], data, *c[1:]), c


def test_store_u64_round_trips_at_any_alignment():
    with KernelRing(Store, buffer_size=4096) as kr:
        for off in (0, 1, 5, 8, 4088, 4089):
            r = kr.run(off, 0, -2, data=bytes(4096), timeout=5)
            if off + 8 > 4096:
                assert r.result == -errno.EINVAL
            else:
                assert r.result == -2 and r.data == (2**64 - 2).to_bytes(8, "little")


# ---- a file's length from its inode (sk_file_size, sk_fd_size), against os.fstat -------

FILE_SIZE = r"""
SK_NARGS(2);     /* fd, how: 0 sk_file_size after a read of fd, 1 after a NOP (no file),
                    2 sk_fd_size(fd) at once */
static int on_complete(struct sk_event *e)
{
    if (e->step == SK_START && e->r->arg[1] == 2)
        return sk_finish_value(e, sk_fd_size(e, e->r->arg[0]), 0, 0);
    if (e->step == SK_START)
        return e->r->arg[1] ? sk_nop(e, 1) : sk_read(e, 1, e->r->arg[0], 0, 64, 0);
    return sk_finish_value(e, sk_file_size(e), 0, 0);
}
"""


def _kinds_of_file(tmp_path):
    """(name, open fd, what sk_file_size must say) for a regular file of each size, and
    for every kind of file that is not regular."""
    out = []
    for size in (0, 1, 4096, 1_000_003, 5 << 30):       # the last one sparse
        p = tmp_path / f"r{size}"
        with open(p, "wb") as f:
            f.truncate(size)
            if size and size < 1 << 20:
                f.seek(0)
                f.write(os.urandom(size))
        out.append((f"regular {size}", os.open(p, os.O_RDONLY), size))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out.append(("fifo", os.open(fifo, os.O_RDONLY | os.O_NONBLOCK), -errno.EINVAL))
    out.append(("char device", os.open("/dev/zero", os.O_RDONLY), -errno.EINVAL))
    out.append(("directory", os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), -errno.EINVAL))
    a, b = socket.socketpair()
    b.send(b"x" * 64)
    out.append(("socket", a.detach(), -errno.EINVAL))
    b.close()
    return out


def test_file_and_fd_size_are_the_inode_s_length_for_regular_files_only(tmp_path):
    from sakura_uring.kernel.btf import file_offsets
    known, fd_known = inode_known(), file_offsets() is not None
    cases = _kinds_of_file(tmp_path)
    try:
        with KernelRing(FILE_SIZE) as kr:
            for name, fd, want in cases:
                if want >= 0:
                    assert want == os.fstat(fd).st_size
                got = kr.run(fd, 0, timeout=5).result
                assert got == (want if known else -errno.ENOSYS), name
                got = kr.run(fd, 2, timeout=5).result          # the same, by fd
                assert got == (want if fd_known else -errno.ENOSYS), name
            name, fd, _ = cases[2]
            os.truncate(f"/proc/self/fd/{fd}", 123_457)      # it changes: it says so now
            assert kr.run(fd, 0, timeout=5).result == (123_457 if known else -errno.ENOSYS)
            assert kr.run(fd, 2, timeout=5).result == (123_457 if fd_known else -errno.ENOSYS)
            # an fd that is not open, and one past the table: nothing to tell
            for bad in (os.open("/dev/null", os.O_RDONLY), 1 << 30):
                if bad < 1 << 30:
                    os.close(bad)
                assert kr.run(bad, 2, timeout=5).result == -errno.ENOSYS
            # a request without a file (a NOP): nothing to tell
            assert kr.run(fd, 1, timeout=5).result == -errno.ENOSYS
    finally:
        for _, fd, _ in cases:
            os.close(fd)


def test_btf_that_is_missing_or_not_btf_gives_no_offsets(tmp_path):
    from sakura_uring.kernel import btf
    assert btf.file_offsets(str(tmp_path / "missing")) is None
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(4096))
    assert btf.file_offsets(str(junk)) is None
    real = Path(btf.VMLINUX).read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(real[:len(real) // 3])                  # a type section cut short
    assert btf.file_offsets(str(cut)) is None
    # where the kernel has BTF, the offsets are found (else every handler asks statx)
    if Path(btf.VMLINUX).exists():
        offs = btf.file_offsets()
        assert offs is not None
        assert set(offs) == {m for m, _, _ in btf.WANTED} and all(v >= 0 for v in offs.values())
