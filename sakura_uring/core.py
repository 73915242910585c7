"""The native ring the parts of a Ring share (pools, publisher, reaper), and its life:
open, closing (no new chains; what is in flight is being cancelled), closed (freed)."""
from __future__ import annotations

import os
import threading

from .errors import InheritedAfterFork, RingClosed


class RingCore:
    __slots__ = ("r", "lock", "sqpoll", "closing", "closed", "inherited", "creator")

    def __init__(self, r, sqpoll: bool):
        self.r = r                       # struct sk_ring *; NULL once freed
        self.lock = threading.Lock()     # publishing: the SQ and the pools
        self.sqpoll = sqpoll
        self.closing = False
        self.closed = False
        self.inherited = False           # set in a fork() child: see fork.py
        self.creator = os.getpid()

    def check_open(self) -> None:
        if self.closing:
            if self.inherited:
                raise InheritedAfterFork("Ring", self.creator)
            raise RingClosed("the ring is closed; create a new Ring")

    def after_fork_in_child(self) -> None:
        self.inherited = True
        self.closing = True
        self.lock = threading.Lock()     # a thread of the parent may have held it at fork
