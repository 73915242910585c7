"""The package stands on its own: a wheel built from this checkout, installed (not
editable) into a fresh venv and imported from outside the checkout, carries its BPF
sources and C sources, runs a shipped kernel handler and starts the dispatch tracer."""
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import sakura_uring
from sakura_uring.bpfenv import kernel_headers

ROOT = Path(__file__).resolve().parents[1]

OUTSIDE = textwrap.dedent("""
    import os, sys, tempfile
    import sakura_uring as su
    from sakura_uring.kernel import KernelRing, handler_path
    from sakura_uring.resources import bpf_dir, checkout
    from sakura_uring.trace import DispatchTracer
    assert not su.__file__.startswith(sys.argv[1]), su.__file__      # not the checkout's
    assert checkout() is None and bpf_dir().is_relative_to(os.path.dirname(su.__file__))
    d = tempfile.mkdtemp()
    target, ptr = os.path.join(d, "t"), os.path.join(d, "p")
    open(target, "wb").write(b"shipped handler\\n")
    open(ptr, "w").write(target)
    with DispatchTracer() as tr:
        with KernelRing(handler_path("follow")) as kr:
            r = kr.run(data=ptr.encode() + b"\\0", timeout=30)
        c = su.Chain()
        c.nop()
        with su.Ring(8) as ring:
            assert ring.run(c).ok
    assert r.data == b"shipped handler\\n", r
    assert tr.final.ops["nop"].counts["done"] >= 2 and tr.final.ops["openat"].counts["done"] >= 2
    print("outside ok")
""")


def clean_env() -> dict:
    """This environment without what points Python at the checkout or its venv."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from the checkout's tracked files alone, as a clean clone has them
    (a build/ directory left by an earlier build can't leak into it)."""
    tree, out = tmp_path_factory.mktemp("tree"), tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src, dst = ROOT / name, tree / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_file():
            dst.write_bytes(src.read_bytes())
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "-w", str(out), str(tree)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    (whl,) = out.glob("sakura_uring-*.whl")
    return whl


def test_the_wheel_carries_every_source_it_needs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"sakura_uring/bpf/{p.relative_to(ROOT / 'bpf')}"
               for p in (ROOT / "bpf").rglob("*") if p.suffix in (".c", ".h")}
    assert shipped and shipped <= names, shipped - names
    native = {f"sakura_uring/_native/{n}" for n in ("shim.c", "shim.h", "kring.c", "kring.h", "clock.h", "wait.h")}
    assert native <= names and "sakura_uring/py.typed" in names
    assert any(n.startswith("sakura_uring/_native/_sakura") and n.endswith(".so") for n in names)
    assert "sakura_uring/_native/_sakura.c" not in names        # generated, not a source


def test_installed_from_the_wheel_it_runs_a_handler_and_the_tracer(wheel, tmp_path):
    venv = tmp_path / "venv"
    # system site-packages: Debian's bcc (python3-bpfcc) lives there, as on any machine
    env = clean_env()
    base = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base), "-m", "venv", str(venv)], check=True, env=env)
    # Debian's bcc (python3-bpfcc) is a system package: expose it as `make setup` does
    site = next((venv / "lib").glob("python3*/site-packages"))
    links = tmp_path / "bcc-path"
    links.mkdir()
    (links / "bcc").symlink_to("/usr/lib/python3/dist-packages/bcc")
    (site / "debian-bcc.pth").write_text(f"{links}\n")
    pip = subprocess.run([str(venv / "bin/pip"), "install", "-q", str(wheel)],
                         capture_output=True, text=True, env=env)
    assert pip.returncode == 0, pip.stderr[-3000:]
    env["BCC_KERNEL_SOURCE"] = kernel_headers() or ""   # the machine's headers, not the package's
    out = subprocess.run([str(venv / "bin/python"), "-c", OUTSIDE, str(ROOT)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("outside ok"), out.stderr[-3000:]
    cli = subprocess.run([str(venv / "bin/sakura-uring"), "trace", "--json", "--", "true"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and '"kind": "summary"' in cli.stdout, cli.stderr[-3000:]
    assert Path(sakura_uring.__file__).is_relative_to(ROOT)      # this process: the checkout
