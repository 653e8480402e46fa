"""Actors and tasks several test modules share (importable on the nodes: they get the driver's
path)."""

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


class PairLog:
    """Records (who, i) pairs in the order its calls ran (a base for a module's own log actor)."""

    def __init__(self):
        self.seen = []

    def add(self, who, i):
        self.seen.append((who, i))
        return i

    def history(self):
        return list(self.seen)


@runtime.remote(num_cpus=0)
class Echo:
    """Says the number it was made with (many of them: no CPU each)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def who(self) -> int:
        return self.n


@runtime.remote
def gate(started: str, go: str) -> str:
    """Say it started (a file), then wait (bounded) until the test opens the gate (another)."""
    open(started, "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.005)
    return "opened"
