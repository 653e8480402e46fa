"""Issue 15, item 9 (Serve): controller checkpoints (``serve/controller-*.pkl``) do not pile
up. ``serve.shutdown()`` removes its own; one left by a cluster stopped without it (its
controller gone with its processes) is removed by the next ``serve.start()`` on the host
once it is a minute old; a live controller's checkpoint is never removed, however old.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import runtime
from runtime import serve
from runtime.serve import _state

pytestmark = pytest.mark.timeout(120)


@serve.deployment
class Hello:
    def __call__(self) -> str:
        return "hi"


@pytest.fixture
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("RUNTIME_TMPDIR", str(tmp_path / "rt"))
    yield tmp_path / "rt" / "serve"
    serve.shutdown()
    runtime.shutdown()


def _run_app() -> None:
    serve.start(http_options={"port": 0})  # a free port: no clash with anyone else's 8000
    serve.run(Hello.bind(), name="app", route_prefix=None)


def _checkpoints(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("controller-*.pkl")} if folder.exists() else set()


def _age(folder: Path, names: set[str], seconds: float) -> None:
    past = time.time() - seconds
    for name in names:
        os.utime(folder / name, (past, past))


def test_checkpoints_go_with_their_controller_and_stale_ones_are_swept(tmpdir_env: Path) -> None:
    folder = tmpdir_env
    runtime.init(num_cpus=1)
    _run_app()
    assert len(_checkpoints(folder)) == 1
    serve.shutdown()  # its own checkpoint (and lock) go with it
    assert _checkpoints(folder) == set()
    assert not any(folder.iterdir())

    _run_app()
    (left,) = _checkpoints(folder)
    runtime.shutdown()  # the cluster goes without serve.shutdown(): the file stays behind
    assert _checkpoints(folder) == {left}

    runtime.init(num_cpus=1)
    _run_app()  # a minute has not passed: kept
    (live,) = _checkpoints(folder) - {left}
    assert _checkpoints(folder) == {left, live}
    _age(folder, {left, live}, 3600)
    assert _state.sweep(str(folder)) == [str(folder / left)]  # the live one is held
    assert _checkpoints(folder) == {live}
    assert serve.get_app_handle("app").remote().result(timeout_s=30) == "hi"


def test_a_new_controller_sweeps_what_stopped_clusters_left(tmpdir_env: Path) -> None:
    folder = tmpdir_env
    left = set()
    for _ in range(3):  # three clusters stopped without serve.shutdown()
        runtime.init(num_cpus=1)
        _run_app()
        runtime.shutdown()
        left |= _checkpoints(folder)
    assert len(left) == 3
    _age(folder, left, 3600)
    runtime.init(num_cpus=1)
    _run_app()
    assert len(_checkpoints(folder)) == 1
    assert not _checkpoints(folder) & left
