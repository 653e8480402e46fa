"""Actors several test modules share (importable on the nodes: they get the driver's path)."""

from __future__ import annotations

import os
import time

import runtime


@runtime.remote
class Recorder:
    """Records the numbers it is called with, in order, and says where it runs."""

    def __init__(self):
        self.seen = []

    def record(self, i):
        self.seen.append(i)
        return i

    def pid(self):
        return os.getpid()

    def nap(self, seconds):
        time.sleep(seconds)

    def history(self):
        return list(self.seen)
