"""Issue 15, item 1: another local user cannot take over through shared directories.

An attacker who creates ``/tmp/runtime-$UID`` (here ``$RUNTIME_TMPDIR``) or
``/dev/shm/runtime-$UID`` first, or plants a symbolic link, must make the runtime refuse with
an error naming the path, never join the attacker's head nor use the directory. The other
user is played by ``nobody`` (``os.chown`` as root); the checks that need no second user run
everywhere. New files the head writes are 0600 even in an existing 0755 state dir.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import runtime
from tests.conftest import HeadProcess, start_head, stop_process

pytestmark = pytest.mark.timeout(60)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def _plant_head(base: Path, owner: int | None) -> None:
    """What an attacker leaves: a world-writable runtime dir, head.json and a token that
    point at their own (here: any) head."""
    base.mkdir(mode=0o777)
    os.chmod(base, 0o777)
    state = base / "attacker-session"
    state.mkdir()
    (state / "token").write_text("aa" * 32)
    (base / "head.json").write_text(
        json.dumps({"address": "127.0.0.1:1", "state_dir": str(state), "pid": os.getpid()})
    )
    if owner is not None:
        for p in (base, state, state / "token", base / "head.json"):
            os.chown(p, owner, owner)


def _init_auto_refuses(monkeypatch: pytest.MonkeyPatch, base: Path, match: str) -> None:
    monkeypatch.setenv("RUNTIME_TMPDIR", str(base))
    with pytest.raises(PermissionError, match=match):
        runtime.init(address="auto")
    assert not runtime.is_initialized()


@needs_root
def test_init_auto_refuses_a_runtime_dir_another_user_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "runtime-victim"
    _plant_head(base, pwd.getpwnam("nobody").pw_uid)
    _init_auto_refuses(monkeypatch, base, rf"{base}.*owned by uid")


def test_init_auto_refuses_a_world_writable_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "runtime-victim"
    _plant_head(base, None)
    _init_auto_refuses(monkeypatch, base, rf"{base}.*writable by group or others")


def test_init_auto_refuses_a_planted_symlink_to_head_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "attacker"
    _plant_head(elsewhere, None)
    base = tmp_path / "runtime-victim"
    base.mkdir(mode=0o700)
    (base / "head.json").symlink_to(elsewhere / "head.json")
    _init_auto_refuses(monkeypatch, base, rf"{base / 'head.json'}.*symbolic link")


@needs_root
def test_a_node_started_with_address_auto_refuses_the_planted_head(tmp_path: Path) -> None:
    base = tmp_path / "runtime-victim"
    _plant_head(base, pwd.getpwnam("nobody").pw_uid)
    env = {**os.environ, "RUNTIME_TMPDIR": str(base)}
    env.pop("RUNTIME_AUTH_TOKEN", None)
    out = subprocess.run(
        [sys.executable, "-m", "runtime.node", "--address", "auto", "--num-cpus", "1"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0, out
    assert str(base) in out.stderr + out.stdout and "owned by uid" in out.stderr + out.stdout


@needs_root
def test_a_head_refuses_a_shm_dir_another_user_created(tmp_path: Path) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    planted = shm / f"runtime-{os.getuid()}"
    planted.mkdir(mode=0o777)
    os.chmod(planted, 0o777)
    os.chown(planted, pwd.getpwnam("nobody").pw_uid, -1)
    env = {**os.environ, "RUNTIME_SHM_DIR": str(shm), "RUNTIME_TMPDIR": str(tmp_path / "rt")}
    out = subprocess.run(
        [sys.executable, "-m", "runtime.node", "--head", "--port", "0", "--num-cpus", "0",
         "--state-dir", str(tmp_path / "state")],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode != 0, out
    assert str(planted) in out.stderr and "owned by uid" in out.stderr, out.stderr
    assert os.listdir(planted) == []  # nothing of ours went into it


def test_a_head_in_an_existing_0755_state_dir_keeps_its_files_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    head: HeadProcess = start_head(tmp_path)
    try:
        for name in ("head.sqlite", "token"):
            mode = stat.S_IMODE(os.lstat(state / name).st_mode)
            assert mode & 0o077 == 0, f"{name} is {mode:04o}"
        base = Path(head.env["RUNTIME_TMPDIR"])
        assert stat.S_IMODE(os.lstat(base).st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(base / "head.json").st_mode) & 0o077 == 0
    finally:
        stop_process(head.proc)
