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
    """What the handler passed to sk_finish(): a result (>= 0, or -errno) and bytes."""
    result: int
    data: bytes

    @property
    def ok(self) -> bool:
        return self.result >= 0

    @property
    def error(self) -> Exception | None:
        if self.result >= 0:
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
