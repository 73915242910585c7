"""The compiled cffi module; built by `pip install` (setup.py), never at import time."""
try:
    from ._sakura import ffi, lib  # noqa: F401
except ImportError as exc:  # pragma: no cover - a build problem, not a runtime one
    raise ImportError(
        "sakura_uring's native extension is not built. Run `make venv` (or "
        "`pip install -e .` with liburing-dev installed) in the project directory."
    ) from exc
