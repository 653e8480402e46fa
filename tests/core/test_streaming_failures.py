"""A streaming generator whose node dies: the stream ends with an error, within a bound."""

from __future__ import annotations

import os
import signal
import time

import pytest

import runtime
from runtime.exceptions import ActorDiedError, NodeDiedError

pytestmark = pytest.mark.timeout(60)


@runtime.remote
class Streamer:
    def pid(self):
        return os.getpid()

    @runtime.method(num_returns="streaming")
    def forever(self):
        i = 0
        while True:
            yield i
            i += 1


def test_node_death_ends_the_stream_with_an_error(mesh):
    s = Streamer.remote()
    pid = runtime.get(s.pid.remote())
    gen = s.forever.remote()
    assert runtime.get(next(gen)) == 0
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    last = None
    for ref in gen:
        last = ref
        assert time.monotonic() < deadline
    with pytest.raises((ActorDiedError, NodeDiedError)):
        runtime.get(last)
