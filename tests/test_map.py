"""Ring.map(chain, rows): one parameterized chain over many rows in one native loop
(sk_map_run), checked against plain os.* reads of the same files."""
import asyncio
import os
import threading
import time
import tracemalloc

import pytest

import sakura_uring as su
from sakura_uring import Chain, ChainError, RingClosed


def _cat():
    c = Chain()
    f = c.openat(c.param("path"))
    data = c.read(f, 4096)
    c.close(f)
    return c, f, data


@pytest.fixture
def files(tmp_path):
    out = []
    for i in range(600):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(i % 4097))
        out.append(os.fsencode(p))
    return out


def _plain(paths):
    out = []
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        out.append(os.read(fd, 4096))
        os.close(fd)
    return out


def _clean(ring):
    assert ring.free_slots == ring.slots and ring.inflight == 0
    assert len(ring._pools.free_tags) == len(ring._pools._tag_arrays) - 1


@pytest.mark.parametrize("window", [None, 1, 7, 64])
def test_map_reads_what_plain_os_reads(any_ring, files, window):
    c, f, data = _cat()
    mr = any_ring.map(c, files, window=window)
    assert len(mr) == len(files) and mr.ok
    assert mr.data(data) == _plain(files)
    assert [bytes(v) for v in mr.views(data)] == _plain(files)
    assert mr.res(f) == [0] * len(files)
    assert mr[17][data].data == _plain([files[17]])[0] and mr[-1].ok
    assert any_ring.stats()["chains"] >= len(files)
    _clean(any_ring)


def test_rows_as_dicts_and_several_params(ring, files):
    c = Chain()
    n, off = c.param("n"), c.param("off")
    f = c.openat(c.param("path"))
    d = c.read(f, n, off, max_length=64)
    c.close(f)
    rows = [dict(path=p, n=i % 65, off=i % 7) for i, p in enumerate(files)]
    mr = ring.map(c, rows)
    want = [b[r["off"]:r["off"] + r["n"]] for b, r in zip(_plain(files), rows)]
    assert mr.data(d) == want
    assert [mr[i][d].short for i in range(len(rows))] == [len(w) < r["n"] for w, r in zip(want, rows)]
    _clean(ring)


def test_failed_rows_are_theirs_alone(any_ring, files, tmp_path):
    c, f, data = _cat()
    rows = files[:50] + [os.fsencode(tmp_path / "missing")] + files[50:100]
    mr = any_ring.map(c, rows)
    assert not mr.ok
    bad = mr.failed()
    assert [i for i, _ in bad] == [50]
    assert bad[0][1].failed_step.error.errno == 2
    got = mr.data(data)
    assert got[50] is None and got[:50] + got[51:] == _plain(files[:100])
    _clean(any_ring)


def test_bad_rows_are_refused_before_anything_is_laid(ring, files):
    c = Chain()                 # a plain-fd open: no direct slot, so every kernel has it
    c.openat(c.param("path"), direct=False)
    before = ring.stats()["cqes"]
    with pytest.raises(ChainError, match="row 3.*NUL"):
        ring.map(c, files[:3] + [b"a\0b"] + files[3:10])
    with pytest.raises(ChainError, match="row 2.*empty"):
        ring.map(c, [files[0], files[1], b""])
    with pytest.raises(TypeError, match="row 1.*is a path"):
        ring.map(c, [{"path": files[0]}, {"path": 7}])
    with pytest.raises(ChainError, match="row 1: no value"):
        ring.map(c, [{"path": files[0]}, {}])
    with pytest.raises(ChainError, match="no rows"):
        ring.map(c, [])
    c2 = Chain()
    c2.read(c2.param("fd"), c2.param("n"), max_length=10)
    with pytest.raises(ChainError, match="row 1.*out of range"):
        ring.map(c2, [dict(fd=0, n=1), dict(fd=0, n=11)])
    plain = Chain()
    plain.nop()
    with pytest.raises(ChainError, match="has none"):
        ring.map(plain, [1, 2])
    assert ring.stats()["cqes"] == before
    _clean(ring)


def test_map_of_chains_still_works(ring, files):
    chains = []
    for p in files[:20]:
        c = Chain()
        f = c.openat(p)
        c.read(f, 4096)
        c.close(f)
        chains.append(c)
    assert [r.data(1) for r in ring.map(chains)] == _plain(files[:20])


@pytest.mark.needs("link")
def test_map_and_run_from_other_threads_share_the_ring(any_ring, files):
    """While a map reaps, other threads' chains complete too (the map hands their tags back)."""
    c, f, data = _cat()
    single, d1 = Chain(), None
    h = single.openat(files[3])
    d1 = single.read(h, 4096)
    single.close(h)
    errors, got = [], []

    def runner():
        try:
            for _ in range(300):
                got.append(any_ring.run(single)[d1].data)
        except Exception as exc:         # pragma: no cover - reported below
            errors.append(exc)
    t = threading.Thread(target=runner)
    t.start()
    results = [any_ring.map(c, files) for _ in range(4)]
    t.join(30)
    assert not t.is_alive() and not errors
    assert got == _plain([files[3]]) * 300
    for mr in results:
        assert mr.data(data) == _plain(files)
    _clean(any_ring)


@pytest.mark.needs("link")     # the maps run in threads: a refusal there is no skip
def test_two_maps_at_once(any_ring, files):
    c, f, data = _cat()
    out = {}

    def go(k, rows):
        out[k] = any_ring.map(c, rows, window=8).data(data)
    ts = [threading.Thread(target=go, args=(k, files[k::2])) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert out[0] == _plain(files[0::2]) and out[1] == _plain(files[1::2])
    _clean(any_ring)


def test_close_during_a_map_gives_ring_closed_and_leaks_nothing(tmp_path):
    r_fd, w_fd = os.pipe()           # reads that never complete: the map can only be cancelled
    try:
        ring = su.Ring(64)
        c = Chain()
        d = c.read(c.param("fd"), 10)
        caught = []

        def go():
            try:
                ring.map(c, [r_fd] * 40, window=8)
            except Exception as exc:
                caught.append(exc)
        t = threading.Thread(target=go)
        t.start()
        time.sleep(0.3)
        assert t.is_alive()
        ring.close()
        t.join(10)
        assert not t.is_alive()
        assert len(caught) == 1 and isinstance(caught[0], RingClosed), caught
        assert d is not None
    finally:
        os.close(r_fd)
        os.close(w_fd)


def test_map_timeout_is_per_run(ring):
    r_fd, w_fd = os.pipe()
    try:
        c = Chain()
        d = c.read(c.param("fd"), 10)
        t0 = time.monotonic()
        mr = ring.map(c, [r_fd] * 6, window=3, timeout=0.1)
        el = time.monotonic() - t0
        assert all(mr[i][d].timed_out for i in range(6))
        assert 0.15 < el < 2.0          # two windows of 0.1 s each
        _clean(ring)
    finally:
        os.close(r_fd)
        os.close(w_fd)


def test_map_async(files):
    c, f, data = _cat()

    async def go(ring):
        beats = 0

        async def heartbeat():
            nonlocal beats
            while True:
                beats += 1
                await asyncio.sleep(0.001)
        hb = asyncio.ensure_future(heartbeat())
        mr = await ring.map_async(c, files * 5)
        hb.cancel()
        return mr, beats
    with su.Ring(256, sqpoll=True) as ring:
        mr, beats = asyncio.run(go(ring))
        assert mr.data(data) == _plain(files) * 5
        assert beats >= 1             # the loop kept running while the map was in flight


def test_a_maps_python_memory_is_its_rows(ring, files):
    """What a map allocates in Python grows with its rows' values (their words and paths),
    not with anything per run: 10x the rows stay under 256 bytes each."""
    c, f, data = _cat()
    ring.map(c, files[:50])

    def peak(rows):
        tracemalloc.start()
        mr = ring.map(c, rows)
        assert mr.ok
        pk = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return pk
    small, big = peak(files[:60]), peak(files * 10)
    assert (big - small) / (len(files) * 10 - 60) < 256


@pytest.mark.parametrize("sqpoll", [False, True], ids=["inline", "sqpoll"])
def test_cores_split_the_rows_and_keep_their_order(files, tmp_path, sqpoll):
    c, f, data = _cat()
    rows = files[:250] + [os.fsencode(tmp_path / "missing")] + files[250:]
    with su.Ring(64, sqpoll=sqpoll) as ring:
        mr = ring.map(c, rows, cores=2)
        assert len(mr) == len(rows) and not mr.ok
        assert [i for i, _ in mr.failed()] == [250]
        got = mr.data(data)
        assert got[250] is None and got[:250] + got[251:] == _plain(files)
        assert mr[400][data].data == _plain([rows[400]])[0] and mr[-1].ok
        assert [bytes(v) for v in mr.views(data) if v is not None] == _plain(files)
        assert len(ring._helpers) == (2 if sqpoll else 1)
        helpers = list(ring._helpers)
        with pytest.raises(ValueError, match="cores"):
            ring.map(c, rows, cores=0)
    assert all(h.closed for h in helpers)


def test_the_region_is_reused_only_when_no_view_sees_it(ring, files):
    c, f, data = _cat()
    mr = ring.map(c, files)
    views = mr.views(data)
    region = mr._data
    del mr
    mr2 = ring.map(c, files[::-1])          # must not write where the views still look
    assert mr2._data is not region
    assert [bytes(v) for v in views] == _plain(files)
    del views, mr2
    mr3 = ring.map(c, files)
    assert mr3.data(data) == _plain(files)
