"""Parameterized chains: a chain built once with Params, run with new values each time;
the native layer binds each run's values into its steps (struct sk_bind)."""
import errno
import os

import pytest

import sakura_uring as su
from sakura_uring import Chain, ChainError


def _cat(length=4096):
    c = Chain()
    path = c.param("path")
    f = c.openat(path)
    data = c.read(f, length)
    c.close(f)
    return c, data


def _files(tmp_path, n):
    out = []
    for i in range(n):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(100 + i))
        out.append(p)
    return out


def test_one_chain_reads_different_files(any_ring, tmp_path):
    c, data = _cat()
    for p in _files(tmp_path, 20):
        r = any_ring.run(c, path=str(p))
        assert r.ok
        assert r[data].data == p.read_bytes()
    assert any_ring.free_slots == any_ring.slots and any_ring.inflight == 0


def test_path_values_of_every_type(ring, tmp_path):
    c, data = _cat()
    p = _files(tmp_path, 1)[0]
    for v in (str(p), os.fsencode(p), p):
        assert ring.run(c, path=v)[data].data == p.read_bytes()


def test_fd_offset_and_data_params(ring, tmp_path):
    c = Chain()
    fd, blob, off = c.param("fd"), c.param("blob"), c.param("off")
    w = c.write(fd, blob, off)
    with open(tmp_path / "out", "wb+") as fh:
        for i, payload in enumerate([b"hello", b"", b"x" * 70000]):
            r = ring.run(c, fd=fh, blob=payload, off=i * 10)
            assert r.ok and r[w].res == len(payload)
        fh.seek(0)
        got = fh.read()
    assert got[:5] == b"hello" and got[20:20 + 70000] == b"x" * 70000


def test_length_param_reads_that_many(ring, data_file):
    c = Chain()
    n, off = c.param("n"), c.param("off")
    f = c.openat(str(data_file))
    d = c.read(f, n, off, max_length=1024)
    c.close(f)
    want = data_file.read_bytes()
    for k, o in ((0, 0), (1, 5), (1024, 100), (700, 3500)):
        r = ring.run(c, n=k, off=o)
        assert r.ok and r[d].data == want[o:o + k]
        assert r[d].short == (len(want[o:o + k]) < k)      # judged against this run's n
    with pytest.raises(ChainError, match="out of range"):
        ring.run(c, n=1025, off=0)


def test_a_short_data_write_fails_against_the_runs_length(ring, tmp_path):
    """A write is exact: a short one fails, measured against the data of *this* run."""
    r_fd, w_fd = os.pipe()
    os.set_blocking(w_fd, False)
    try:
        c = Chain()
        blob = c.param("blob")
        w = c.write(w_fd, blob, -1)
        big = b"z" * (1 << 20)       # more than the pipe holds: a short write
        r = ring.run(c, blob=big)
        assert 0 < r[w].res < len(big) and r[w].short and not r.ok
        with pytest.raises(su.StepFailed, match="fewer than the 1048576"):
            r.raise_for_error()
    finally:
        os.close(r_fd)
        os.close(w_fd)


def test_missing_extra_and_bad_values_are_refused_before_the_kernel(ring):
    c = Chain()                 # a plain-fd open: no direct slot, so every kernel has it
    c.openat(c.param("path"), direct=False)
    before = ring.stats()["cqes"]
    with pytest.raises(ChainError, match="no value for Param 'path'"):
        ring.run(c)
    with pytest.raises(ChainError, match="no Param 'paht'"):
        ring.run(c, path="/etc/hostname", paht="x")
    with pytest.raises(ChainError, match="NUL"):
        ring.run(c, path=b"/etc\0/passwd")
    with pytest.raises(ChainError, match="empty"):
        ring.run(c, path="")
    with pytest.raises(ChainError, match="4095"):
        ring.run(c, path="a" * 5000)
    with pytest.raises(TypeError, match="is a path"):
        ring.run(c, path=3)
    fdc = Chain()
    fdc.read(fdc.param("fd"), 10)
    with pytest.raises(ChainError, match="out of range"):
        ring.run(fdc, fd=-1)
    with pytest.raises(TypeError, match="an int"):
        ring.run(fdc, fd="0")
    assert ring.stats()["cqes"] == before            # nothing reached the kernel
    assert ring.free_slots == ring.slots and ring.inflight == 0


def test_values_for_a_chain_without_params_are_refused(ring):
    c = Chain()
    c.nop()
    with pytest.raises(ChainError, match="no Param 'x'"):
        ring.run(c, x=1)


def test_param_rules(tmp_path):
    c = Chain()
    p = c.param("p")
    with pytest.raises(ChainError, match="already has a Param"):
        c.param("p")
    with pytest.raises(ChainError, match="keyword"):
        c.param("timeout")
    with pytest.raises(TypeError, match="identifier"):
        c.param("not a name")
    c.openat(p)
    with pytest.raises(ChainError, match="already used as a path"):
        c.read(p, 10)                     # the same Param as an fd
    assert len(c) == 1                    # the refused step took nothing
    other = Chain()
    with pytest.raises(ChainError, match="another chain"):
        other.openat(p)
    with pytest.raises(ChainError, match="max_length"):
        c.read(c.param("f"), c.param("n"))
    with pytest.raises(TypeError):
        su.Param(c, "x", 0)


def test_a_param_fd_shared_by_two_steps(ring, data_file):
    fd = os.open(data_file, os.O_RDONLY)
    try:
        c = Chain(link=su.Link.HARD)
        f = c.param("f")
        a = c.read(f, 10, 0)
        b = c.read(f, 10, 4000)
        r = ring.run(c, f=fd)
        want = data_file.read_bytes()
        assert r[a].data == want[:10] and r[b].data == want[4000:4010]
    finally:
        os.close(fd)


def test_params_with_submit_and_run_async(ring, tmp_path):
    import asyncio
    c, data = _cat()
    files = _files(tmp_path, 30)
    futs = [ring.submit(c, path=str(p)) for p in files]
    assert [f.result(5)[data].data for f in futs] == [p.read_bytes() for p in files]

    async def go():
        rs = await asyncio.gather(*[ring.run_async(c, path=str(p)) for p in files])
        return [r[data].data for r in rs]
    assert asyncio.run(go()) == [p.read_bytes() for p in files]


def test_a_missing_file_is_the_runs_error_not_the_chains(ring, tmp_path):
    c, data = _cat()
    r = ring.run(c, path=str(tmp_path / "nope"))
    assert not r.ok and r.failed_step.error.errno == errno.ENOENT
    p = _files(tmp_path, 1)[0]
    assert ring.run(c, path=str(p))[data].data == p.read_bytes()
    assert ring.free_slots == ring.slots


def test_steady_state_runs_allocate_nothing_that_stays(ring, tmp_path):
    """100,000 runs of a parameterized chain: Python memory is flat (each result is freed;
    the lease, the row and the native views are not kept)."""
    import tracemalloc
    c, data = _cat()
    p = _files(tmp_path, 1)[0]
    path = os.fsencode(p)
    for _ in range(2000):
        ring.run(c, path=path)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(100_000):
        ring.run(c, path=path).data(data)
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert grown < 16 * 1024, f"{grown} bytes stayed after 100,000 runs"
