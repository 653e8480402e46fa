"""Actor restarts on request: runtime.kill(no_restart=False), and the restart options.

Restarts after a node dies under an actor are chaos scenarios: tests/chaos/test_actor_restart.py.
"""

from __future__ import annotations

import pytest

import runtime
from runtime.exceptions import ActorDiedError

from ..actors import Recorder

pytestmark = pytest.mark.timeout(90)


def test_kill_without_no_restart_restarts_the_actor(mesh):
    r = Recorder.options(max_restarts=2, name="phoenix").remote()
    assert runtime.get(r.record.remote(1)) == 1
    runtime.kill(r, no_restart=False)
    assert runtime.get(r.history.remote(), timeout=30) == []  # a fresh instance
    assert runtime.get(runtime.get_actor("phoenix").record.remote(2)) == 2
    runtime.kill(r)
    with pytest.raises(ActorDiedError):
        runtime.get(r.record.remote(3), timeout=30)


def test_restart_options_are_checked(mesh):
    with pytest.raises(ValueError, match="max_restarts"):
        Recorder.options(max_restarts=-5).remote()
