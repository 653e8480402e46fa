"""What a node's zygote warms and how: parts after the LATER mark in helpers of their own, at
the lowest priority until a group asks for them; imports with the collector off, then frozen;
the frameworks a program's main script imports."""

from __future__ import annotations

import gc
import importlib.util
import os
import subprocess
import sys
import time

import pytest

import runtime
from runtime.train import _preload

pytestmark = pytest.mark.timeout(120)


def _starts(path: str) -> list[int]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(line.split()[1]) for line in f if line.startswith("start ")]


def _priority(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def _warm_probe(tmp_path, monkeypatch, hang_s: str, yield_s: str) -> tuple[str, set[int]]:
    """Start a mesh whose node zygotes import ``json``, then fork helpers that import the
    probe, which waits for a third "start" line in its log (until the test writes it, the
    helpers hang, at most ``hang_s``); the log and the helpers' pids once both warm."""
    log = str(tmp_path / "probe.log")
    monkeypatch.setenv("SLOW_PROBE_LOG", log)
    monkeypatch.setenv("SLOW_PROBE_S", hang_s)
    monkeypatch.setenv("SLOW_PROBE_WAIT_FOR", "3")
    monkeypatch.setenv("RUNTIME_ZYGOTE_PRELOAD", "json;tests.train.slow_probe")
    monkeypatch.setenv("RUNTIME_ZYGOTE_YIELD_S", yield_s)
    runtime.init(num_cpus=2)
    try:
        deadline = time.monotonic() + 60
        while len(_starts(log)) < 2:
            assert time.monotonic() < deadline, "the helpers did not start warming"
            time.sleep(0.05)
    except BaseException:
        runtime.shutdown()
        raise
    return log, set(_starts(log))


@runtime.remote(num_cpus=1)
class _Facts:
    def facts(self) -> dict[str, object]:
        probe = sys.modules.get("tests.train.slow_probe")
        return {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "priority": _priority(0),
            "gc_enabled": gc.isenabled(),
            "frozen": gc.get_freeze_count(),
            "probe_imported_in": getattr(probe, "IMPORTED_IN", None),
        }


def test_a_part_after_the_later_mark_is_warmed_apart_and_a_child_not_naming_it_never_waits(
    tmp_path, monkeypatch
):
    # helpers warm at the lowest priority for this long after a child starts (and their own
    # start): here for the whole test
    log, helpers = _warm_probe(tmp_path, monkeypatch, hang_s="90", yield_s="600")
    try:
        if os.geteuid() == 0:  # root may take its priority back: warming yields
            assert {_priority(h) for h in helpers} == {19}
        # a dedicated process that names nothing is forked by a zygote at once
        actor = _Facts.options(dedicated_process=True).remote()
        plain = runtime.get(actor.facts.remote(), timeout=30)
        assert plain["ppid"] not in helpers and plain["probe_imported_in"] is None
        assert plain["priority"] == _priority(os.getpid())
        # the zygote imported with the collector off, then froze what it imported
        assert plain["gc_enabled"] and plain["frozen"] > 0
        # one that names the probe goes to a helper, which gets its priority back and forks
        # it once its import is done
        named = _Facts.options(dedicated_process=["tests.train.slow_probe"]).remote()
        deadline = time.monotonic() + 30
        while min(_priority(h) for h in helpers) == 19 and os.geteuid() == 0:
            assert time.monotonic() < deadline, "no helper got its priority back"
            time.sleep(0.05)
        with open(log, "a") as f:
            f.write("start 0 0\n")  # the third start: the helpers' imports end
        facts = runtime.get(named.facts.remote(), timeout=60)
        assert facts["ppid"] in helpers and facts["probe_imported_in"] == facts["ppid"]
        assert facts["priority"] == _priority(os.getpid()) and facts["gc_enabled"]
    finally:
        runtime.shutdown()
    for helper in helpers:
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{helper}") and _state(helper) != "Z":
            assert time.monotonic() < deadline, f"the helper {helper} outlives its node"
            time.sleep(0.05)


def test_helpers_warm_at_normal_priority_once_no_child_is_starting(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("changing a helper's priority back needs root (or RLIMIT_NICE)")
    log, helpers = _warm_probe(tmp_path, monkeypatch, hang_s="60", yield_s="0.2")
    try:
        deadline = time.monotonic() + 60
        # still importing (the probe waits for a third start), at our priority again
        while {_priority(h) for h in helpers} != {_priority(os.getpid())}:
            assert time.monotonic() < deadline, {h: _priority(h) for h in helpers}
            time.sleep(0.05)
        with open(log, "a") as f:
            f.write("start 0 0\n")
    finally:
        runtime.shutdown()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_frameworks_are_warmed_where_installed_and_named_by_the_script_each_in_a_part_of_its_own():
    base = [*_preload.BASE_MODULES, *_preload.TORCH_MODULES]
    assert _preload.warm_list(set()) == base
    assert _preload.warm_list({"os", "json", "lightningish"}) == base
    installed = [f for f, _ in _preload.WARM_FRAMEWORKS if importlib.util.find_spec(f)]
    if "lightning" not in installed or "xgboost" not in installed:
        pytest.skip(f"lightning and xgboost are needed here; installed: {installed}")
    got = _preload.warm_list({"lightning.pytorch", "runtime.train.xgboost.XGBoostTrainer"})
    assert got == [
        *base,
        ";",
        "lightning",
        "runtime.train.lightning",
        ";",
        "xgboost",
        "runtime.train.xgboost",
    ]


def test_the_main_script_s_imports_name_the_frameworks_its_nodes_warm(tmp_path):
    pytest.importorskip("torch")
    if not importlib.util.find_spec("xgboost"):
        pytest.skip("xgboost is not installed")
    script = tmp_path / "script.py"
    script.write_text(
        "import os\n"
        "def loop(config):\n"
        "    import xgboost  # in a function: the loop imports it in its ranks\n"
        "import runtime.train\n"
        "print(os.environ['RUNTIME_ZYGOTE_PRELOAD'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RUNTIME_ZYGOTE_PRELOAD"}
    got = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, check=True, timeout=60
    )
    named = got.stdout.decode().strip()
    assert named.endswith(";xgboost,runtime.train.xgboost"), named
    assert "lightning" not in named


def test_a_rank_waits_until_rank_0_s_store_listens_before_joining_and_gives_up_at_the_timeout():
    # torch's store client, refused by a store not yet listening, tries again only after
    # 0.3-0.7 s: a rank that starts first waits for the listener instead
    import socket
    import threading

    pytest.importorskip("torch")
    from runtime.train.torch._backend import _wait_until_listening

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    accepted = threading.Event()
    listener = socket.socket()

    def listen_later() -> None:
        time.sleep(0.2)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        conn, _ = listener.accept()
        accepted.set()
        conn.close()

    thread = threading.Thread(target=listen_later, daemon=True)
    thread.start()
    try:
        _wait_until_listening("127.0.0.1", port, 30.0)
        assert accepted.wait(10), "it returned before anything listened"
    finally:
        thread.join(10)
        listener.close()
    # nothing listens: it returns at its timeout (the join then fails with torch's error)
    start = time.monotonic()
    _wait_until_listening("127.0.0.1", port, 0.3)
    assert 0.3 <= time.monotonic() - start < 30
