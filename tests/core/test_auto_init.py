"""A Ray program that never calls init(): the first .remote(), put, get, wait or get_actor
starts a local mesh, as Ray's does; RUNTIME_AUTO_INIT=0 keeps the error instead."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(90)

_PROGRAM = """
import runtime

@runtime.remote
def square(x):
    return x * x

@runtime.remote
class Box:
    def get(self):
        return "box"

print("task", runtime.get(square.remote(4)), runtime.is_initialized())
runtime.shutdown()
print("put", runtime.get(runtime.put(5)))
runtime.shutdown()
ready, _ = runtime.wait([square.remote(3)], timeout=30)
print("wait", runtime.get(ready[0]))
runtime.shutdown()
print("actor", runtime.get(Box.remote().get.remote()))
runtime.shutdown()
"""


def _run(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PROGRAM)],
        env=env, capture_output=True, text=True, timeout=80, check=False,
    )  # fmt: skip


def test_first_use_starts_a_local_mesh_without_init():
    done = _run({})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["task 16 True", "put 5", "wait 9", "actor box"]


def test_auto_init_can_be_turned_off():
    done = _run({"RUNTIME_AUTO_INIT": "0"})
    assert done.returncode != 0
    assert "the runtime is not initialized: call runtime.init()" in done.stderr
    assert "task" not in done.stdout
