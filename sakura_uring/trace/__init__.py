"""bcc-based tracing (tracepoints only: this kernel kind has no kprobes)."""
from ..bpfenv import TracingUnavailable  # noqa: F401
from .dispatch import DispatchTracer, Report  # noqa: F401
from .syscount import SyscallCounter  # noqa: F401
