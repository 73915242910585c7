"""open -> read(4 KiB) -> close in each execution model, side by side in one process,
against what a Python user would pick instead.

One file, one open/read/close at a time:
(a) plain        os.open / os.read / os.close: three system calls
(p) thin         the PyPI `liburing` binding: one Python call per SQE (openat_direct ->
                 read -> close_direct, linked), submit_and_wait, a Python call per CQE
(p) aiofiles     `async with aiofiles.open(): await f.read()` in a loop (a thread per call)
(b) flexsc       the FlexSC model: one io_uring request per system call, each result back
                 in Python before the next request is made (inline, and with SQPOLL)
(c) chain        Sakura link: the three calls as one linked chain, the fd flowing through
                 a direct slot, built for every call; run() one at a time, 32 in flight
(c') prepared    the same chain built once and run N times: ring.run(chain), and
                 ring.prepare(chain).run() (one native call per run)
(n) floor        that native call alone in a loop, nothing turned into Python: the kernel's
                 own work for the three requests, under every chain run one at a time
10,000 distinct files (the bulk and asyncio cases):
(a) plain in a loop; (c) chains 64 in flight (imap, SQPOLL); one parameterized chain
(Chain.param) run per file by a Prepared; ring.map(chain, paths) (one native loop: inline,
SQPOLL, and cores=2); asyncio: every file in flight at once through `await`, sakura's
run_async and map_async against aiofiles.

Times come from uncounted rounds (interleaved, median kept); system calls from one more
pass per model with a bcc program on raw_syscalls:sys_enter attached (it slows every
system call, so it never times anything). The peers are installed by `make bench`; a
missing one is a row that says so.
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import Chain, Ring
from .. import params as _params
from .._native import lib
from ..reaper import SLICE_NS, TAGS_MAX

THIN_VERSION = "2024.5.3"     # later releases die of SIGILL at import on this CPU kind
IOSQE_FIXED_FILE, IOSQE_IO_LINK = 1, 4   # the kernel's ABI (the binding exports neither)


def _cat_chain(path: bytes) -> Chain:
    c = Chain()
    f = c.openat(path)
    c.read(f, 4096)
    c.close(f)
    return c


@dataclass
class Ctx:
    path: bytes
    files: list
    rings: dict
    prepared: dict = field(default_factory=dict)
    param_chain: Any = None
    thin: Any = None
    why: dict = field(default_factory=dict)     # peer -> why it is missing


class Thin:
    """The PyPI liburing binding (Cython over liburing), used the way its docs show."""

    def __init__(self):
        import liburing as L
        self.L = L
        self.ring = L.io_uring()
        self.cqe = L.io_uring_cqe()
        if L.io_uring_queue_init(64, self.ring) < 0 or L.io_uring_register_files_sparse(self.ring, 4) < 0:
            raise OSError("the liburing binding could not set up a ring")
        self.buf = bytearray(4096)

    def cat(self, path: bytes) -> list:
        L, ring, cqe = self.L, self.ring, self.cqe
        sqe = L.io_uring_get_sqe(ring)
        L.io_uring_prep_openat_direct(sqe, path, os.O_RDONLY, 0)
        L.io_uring_sqe_set_flags(sqe, IOSQE_IO_LINK)
        sqe = L.io_uring_get_sqe(ring)
        L.io_uring_prep_read(sqe, 0, self.buf, 4096, 0)
        L.io_uring_sqe_set_flags(sqe, IOSQE_IO_LINK | IOSQE_FIXED_FILE)
        sqe = L.io_uring_get_sqe(ring)
        L.io_uring_prep_close_direct(sqe, 0)
        L.io_uring_submit_and_wait(ring, 3)
        res = []
        for _ in range(3):
            L.io_uring_wait_cqe(ring, cqe)
            res.append(cqe.res)
            L.io_uring_cq_advance(ring, 1)
        return res

    def close(self):
        self.L.io_uring_queue_exit(self.ring)


# -- one file --------------------------------------------------------------------------
def model_plain(ctx, n):
    o, r, c, flags, path = os.open, os.read, os.close, os.O_RDONLY, ctx.path
    for _ in range(n):
        fd = o(path, flags)
        r(fd, 4096)
        c(fd)


def model_thin(ctx, n):
    cat, path = ctx.thin.cat, ctx.path
    for _ in range(n):
        cat(path)


def model_aiofiles(ctx, n):
    import aiofiles
    path = ctx.path

    async def go():
        for _ in range(n):
            async with aiofiles.open(path, "rb") as f:
                await f.read(4096)
    asyncio.run(go())


def _flexsc(kind):
    def model(ctx, n):
        run, path = ctx.rings[kind].run, ctx.path
        for _ in range(n):
            c = Chain()
            h = c.openat(path, direct=False)
            fd = run(c)[h].res
            c = Chain()
            c.read(fd, 4096)
            run(c).data(0)
            c = Chain()
            c.close(fd)
            run(c)
    return model


def _chain_run(kind):
    def model(ctx, n):
        run, path = ctx.rings[kind].run, ctx.path
        for _ in range(n):
            run(_cat_chain(path)).data(1)
    return model


def _prepared_run(kind):
    def model(ctx, n):
        run, c = ctx.rings[kind].run, _cat_chain(ctx.path)
        for _ in range(n):
            run(c).data(1)
    return model


def _prepare(kind):
    def model(ctx, n):
        run = ctx.prepared[kind].run
        for _ in range(n):
            run().data(1)
    return model


def _native_floor(kind):
    """The floor under every chain run one at a time: a prepared run's one native call
    (sk_call_run: lay, submit, reap) in a loop, nothing turned into Python -- the kernel's
    own work for the three requests plus a C call."""
    def model(ctx, n):
        p = ctx.prepared[kind]
        core, reaper = p._core, p._reaper
        args = (core.r, p._c, _params.NO_VALUES, _params.NO_ARENA, 0, 0, SLICE_NS,
                reaper.spin_ns, reaper.tags, TAGS_MAX, p._others)
        call = lib.sk_call_run
        reaper.lead()
        try:
            for _ in range(n):
                ret = call(*args)
                if ret != 1 or p._others[0]:
                    raise RuntimeError(f"sk_call_run gave {ret}: the floor is measured with "
                                       f"nothing else in flight on the ring")
        finally:
            reaper.release()
    return model


def _cat_param() -> Chain:
    c = Chain()
    f = c.openat(c.param("path"))
    c.read(f, 4096)
    c.close(f)
    return c


def _chain_imap(kind):
    def model(ctx, n):
        path = ctx.path
        for r in ctx.rings[kind].imap((_cat_chain(path) for _ in range(n)), window=32):
            r.data(1)
    return model


def model_prepared_imap(ctx, n):
    c = _cat_chain(ctx.path)
    for r in ctx.rings["sqpoll"].imap((c for _ in range(n)), window=32):
        r.data(1)


# -- many files (n is ignored: every file once) -------------------------------------------
def model_plain_files(ctx, n):
    o, r, c, flags = os.open, os.read, os.close, os.O_RDONLY
    for path in ctx.files:
        fd = o(path, flags)
        r(fd, 4096)
        c(fd)


def model_imap_files(ctx, n):
    for r in ctx.rings["sqpoll"].imap((_cat_chain(p) for p in ctx.files), window=64):
        r.data(1)


def model_prepared_files(ctx, n):
    run = ctx.prepared["param"].run
    for p in ctx.files:
        run(path=p).data(1)


def _map_files(kind, cores=1, copy=False):
    """Every file's bytes are looked at: as memoryviews into the result (no copy), or as
    bytes (copy=True: a fresh 4 KiB object per file, kept until the list goes)."""
    def model(ctx, n):
        mr = ctx.rings[kind].map(ctx.param_chain, ctx.files, cores=cores)
        for b in (mr.data(1) if copy else mr.views(1)):
            pass
    return model


def model_map_async_files(ctx, n):
    ring = ctx.rings["inline"]

    async def go():
        return (await ring.map_async(ctx.param_chain, ctx.files, cores=2)).views(1)
    asyncio.run(go())


def model_async_files(ctx, n):
    ring = ctx.rings["sqpoll"]

    async def one(p):
        return (await ring.run_async(_cat_chain(p))).data(1)

    async def go():
        await asyncio.gather(*[one(p) for p in ctx.files])
    asyncio.run(go())


def model_async_param_files(ctx, n):
    ring, chain = ctx.rings["sqpoll"], ctx.param_chain

    async def one(p):
        return (await ring.run_async(chain, path=p)).data(1)

    async def go():
        await asyncio.gather(*[one(p) for p in ctx.files])
    asyncio.run(go())


def model_aiofiles_files(ctx, n):
    import aiofiles

    async def one(p):
        async with aiofiles.open(p, "rb") as f:
            return await f.read(4096)

    async def go():
        await asyncio.gather(*[one(p) for p in ctx.files])
    asyncio.run(go())


@dataclass(frozen=True)
class Model:
    name: str
    fn: Callable
    needs: str = ""          # a peer: "thin", "aiofiles"
    files: bool = False      # one pass over the distinct files per round


MODELS = [
    Model("(a) plain os.open/read/close", model_plain),
    Model("(p) liburing binding (thin), inline", model_thin, "thin"),
    Model("(p) aiofiles, one at a time", model_aiofiles, "aiofiles"),
    Model("(b) FlexSC model, inline", _flexsc("inline")),
    Model("(b) FlexSC model, SQPOLL", _flexsc("sqpoll")),
    Model("(c) chain, run(), inline", _chain_run("inline")),
    Model("(c) chain, run(), SQPOLL", _chain_run("sqpoll")),
    Model("(c') prepared chain, run(), inline", _prepared_run("inline")),
    Model("(c') prepared chain, run(), SQPOLL", _prepared_run("sqpoll")),
    Model("(c') ring.prepare(chain).run(), inline", _prepare("inline")),
    Model("(c') ring.prepare(chain).run(), SQPOLL", _prepare("sqpoll")),
    Model("(n) the native call alone (floor), inline", _native_floor("inline")),
    Model("(c) chain, 32 in flight, inline", _chain_imap("inline")),
    Model("(c) chain, 32 in flight, SQPOLL", _chain_imap("sqpoll")),
    Model("(c') prepared chain, 32 in flight, SQPOLL", model_prepared_imap),
    Model("[files] (a) plain os.* in a loop", model_plain_files, files=True),
    Model("[files] (c) chains, 64 in flight, SQPOLL", model_imap_files, files=True),
    Model("[files] (c') one Param chain, prepare().run(path=)", model_prepared_files, files=True),
    Model("[files] (c') map(chain, paths), inline", _map_files("inline"), files=True),
    Model("[files] (c') map(chain, paths), SQPOLL", _map_files("sqpoll"), files=True),
    Model("[files] (c') map(chain, paths, cores=2)", _map_files("inline", 2), files=True),
    Model("[files] (c') map(cores=2), .data() as bytes", _map_files("inline", 2, True),
          files=True),
    Model("[files] asyncio: await map_async(cores=2)", model_map_async_files, files=True),
    Model("[files] asyncio: run_async, all at once, SQPOLL", model_async_files, files=True),
    Model("[files] asyncio: run_async(Param chain), all at once", model_async_param_files,
          files=True),
    Model("[files] asyncio: aiofiles, all at once", model_aiofiles_files, "aiofiles", files=True),
]
# the references each row is compared with: the first model of its kind in the table
PLAIN = MODELS[0].name
THIN = next(m.name for m in MODELS if m.needs == "thin")
PLAIN_FILES = next(m.name for m in MODELS if m.files)


def _counter():
    try:
        from ..trace import SyscallCounter
        return SyscallCounter(), None
    except Exception as exc:   # no root, no bcc, no headers: time is still measured
        return None, str(exc)


def _peers(ctx: Ctx) -> None:
    fix = "run `make bench`, which installs the peers into the venv"
    try:
        ctx.thin = Thin()
    except ImportError:
        ctx.why["thin"] = f"the PyPI liburing binding is not installed: {fix}"
    except OSError as exc:
        ctx.why["thin"] = str(exc)
    try:
        import aiofiles  # noqa: F401
    except ImportError:
        ctx.why["aiofiles"] = f"aiofiles is not installed: {fix}"


def main(args) -> int:
    n = 3000 if args.quick else args.n
    rounds = 2 if args.quick else args.rounds
    nfiles = 2000 if args.quick else 10_000
    two_cores = (os.cpu_count() or 1) >= 2
    if two_cores:   # keep the SQPOLL thread (CPU 1) off the application's core (CPU 0)
        os.sched_setaffinity(0, {0})
    tmp = tempfile.mkdtemp(prefix="sakura-bench-")
    path = os.path.join(tmp, "f4k").encode()
    files = [os.path.join(tmp, f"d{i}").encode() for i in range(nfiles)]
    for p in [path, *files]:
        with open(p, "wb") as f:
            f.write(os.urandom(4096))
    quiet = args.json
    say = (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    # sq_idle_ms=10: the SQPOLL thread polls its core that long after its last chain, and a
    # second's polling (the default) would take CPU 1 from the cores=2 rows that follow
    rings = {"inline": Ring(1024), "sqpoll": Ring(1024, sqpoll=True, slots=256, sq_idle_ms=10,
                                                 sq_cpu=1 if two_cores else None)}
    ctx = Ctx(path, files, rings)
    ctx.param_chain = _cat_param()
    ctx.prepared = {k: r.prepare(_cat_chain(path)) for k, r in rings.items()}
    ctx.prepared["param"] = rings["inline"].prepare(ctx.param_chain)
    _peers(ctx)
    models = [m for m in MODELS if not m.needs or m.needs not in ctx.why]
    say(f"open -> read 4 KiB -> close, n={n} per model, {nfiles} distinct files, {rounds} "
        f"rounds, kernel {os.uname().release}")
    for peer, why in ctx.why.items():
        say(f"  missing peer: {why}")
    times: dict[str, list] = {m.name: [] for m in models}
    calls: dict[str, float] = {}
    counter, why_uncounted = None, None
    try:
        for rnd in range(rounds):
            for m in models:
                count = nfiles if m.files else n
                m.fn(ctx, min(n, 300))                 # warm up
                t0 = time.perf_counter()
                m.fn(ctx, n)
                el = time.perf_counter() - t0
                times[m.name].append(el / count * 1e6)
                say(f"  round {rnd + 1}/{rounds} {m.name:<50} {el / count * 1e6:8.2f} us/chain")
        counter, why_uncounted = _counter()
        if counter:
            say("  counting system calls (one more pass per model, not timed)")
            for m in models:
                k = min(n, 1000)
                counter.reset()
                m.fn(ctx, k)
                counter.stop()
                calls[m.name] = counter.total / (nfiles if m.files else k)
    finally:
        for each in rings.values():
            each.close()
        if ctx.thin is not None:
            ctx.thin.close()
        if counter:
            counter.close()
        for p in [path, *files]:
            os.unlink(p)
        os.rmdir(tmp)
    med = {name: statistics.median(t) for name, t in times.items()}
    rows = []
    for m in models:
        t = med[m.name]
        base = med[PLAIN_FILES if m.files else PLAIN]
        rows.append(dict(model=m.name, us_per_chain=round(t, 2),
                         syscalls_per_chain=round(calls[m.name], 3) if m.name in calls else None,
                         vs_plain=round(base / t, 2),
                         vs_thin=None if m.files or THIN not in med else round(med[THIN] / t, 2)))
    meta = dict(n=n, files=nfiles, rounds=rounds, kernel=os.uname().release,
                missing=ctx.why, uncounted=why_uncounted)
    if args.json:
        print(json.dumps(dict(**meta, rows=rows)))
        return 0
    hdr = ("model", "us/chain", "syscalls/chain", "speed vs plain", "speed vs thin")
    if args.markdown:
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
    else:
        print(f"{hdr[0]:<50} {hdr[1]:>9} {hdr[2]:>15} {hdr[3]:>15} {hdr[4]:>14}")
    for r in rows:
        sc = "n/a" if r["syscalls_per_chain"] is None else f"{r['syscalls_per_chain']:.3f}"
        vt = "" if r["vs_thin"] is None else f"{r['vs_thin']:.2f}x"
        cells = (r["model"], f"{r['us_per_chain']:.2f}", sc, f"{r['vs_plain']:.2f}x", vt)
        if args.markdown:
            print("| " + " | ".join(cells) + " |")
        else:
            print(f"{cells[0]:<50} {cells[1]:>9} {cells[2]:>15} {cells[3]:>15} {cells[4]:>14}")
    print("speed = that model's chains per second over the reference's ([files] rows: over "
          "plain os.* on the same files); > 1 is faster", file=sys.stderr)
    return 0
