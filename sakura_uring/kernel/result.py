"""What a kernel handler gives back: the result it passed to sk_finish() and its bytes."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .._native import lib
from ..errors import SakuraError

SK_STALLED = lib.SK_ERR_STALLED      # from bpf/abi.h, through the compiler


class HandlerStalled(SakuraError):
    """The handler returned without finishing the request and left nothing in flight."""


@dataclass(frozen=True)
class HandlerResult:
    """What the handler passed to sk_finish(): a result (>= 0, or -errno) and bytes.
    `signed` is True when it finished with sk_finish_value() (finish_value() in Python):
    the result is then a value, negative or not, and never an error."""
    result: int
    data: bytes
    signed: bool = False

    def __repr__(self) -> str:
        signed = ", signed=True" if self.signed else ""
        return f"HandlerResult(result={self.result!r}, data={self.data!r}{signed})"

    @property
    def ok(self) -> bool:
        return self.signed or self.result >= 0

    @property
    def error(self) -> Exception | None:
        if self.ok:
            return None
        if self.result == SK_STALLED:
            return HandlerStalled("the kernel handler returned without calling sk_finish() "
                                  "and left nothing in flight: every path of on_complete must "
                                  "push a step, return -errno, or finish")
        return OSError(-self.result, f"kernel handler: {os.strerror(-self.result)}")

    def raise_for_error(self) -> "HandlerResult":
        err = self.error
        if err is not None:
            raise err
        return self
