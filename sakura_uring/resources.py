"""Where the package's files are: the BPF sources (package data) and, in a checkout, the
checkout itself. One place, so that an editable checkout and an installed wheel find them
the same way (importlib.resources)."""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path


@functools.lru_cache(maxsize=1)
def bpf_dir() -> Path:
    """The BPF sources (sakura.h, dispatch.c, tracer.c, handlers/): the top-level bpf/ of
    a checkout (sakura_uring/bpf links to it) or the copy a wheel carries."""
    d = Path(str(resources.files("sakura_uring") / "bpf"))
    if not (d / "sakura.h").is_file():
        raise FileNotFoundError(f"the BPF sources are missing from {d}: reinstall sakura_uring "
                                "(its wheel carries them as package data)")
    return d.resolve()


def bpf_file(name: str) -> Path:
    """One BPF source by its path under bpf/ (e.g. "tracer.c", "handlers/follow.c")."""
    return bpf_dir() / name


@functools.lru_cache(maxsize=1)
def checkout() -> Path | None:
    """The source checkout this package is imported from, or None for an installed wheel
    (development tools -- the kernel matrix, `bench http --write` -- need one)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "bpf").is_dir() else None
