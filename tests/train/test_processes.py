"""Every rank runs in a process of its own, started for the worker group and ended with it;
with GPUs declared, each rank sees only its own (CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import runtime
from runtime import train

from . import loops

pytestmark = pytest.mark.timeout(120)


def _facts(out: str, n: int) -> list[dict[str, object]]:
    facts = []
    for rank in range(n):
        with open(os.path.join(out, f"facts_r{rank}.json")) as f:
            facts.append(json.load(f))
    return facts


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone_soon(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _fit(out: str, tmp_path, scaling: train.ScalingConfig) -> train.Result:  # type: ignore[no-untyped-def]
    trainer = train.DataParallelTrainer(
        loops.process_facts,
        train_loop_config={"out": out},
        scaling_config=scaling,
        run_config=train.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    return trainer.fit()


@pytest.fixture
def two_cpus() -> object:
    runtime.init(num_cpus=2)
    try:
        yield
    finally:
        runtime.shutdown()


def test_each_rank_runs_in_a_process_of_its_own_that_ends_with_the_run(two_cpus, tmp_path, out):
    result = _fit(out, tmp_path / "a", train.ScalingConfig(num_workers=2))
    assert result.error is None, result.error
    first = _facts(out, 2)
    pids = [int(f["pid"]) for f in first]  # type: ignore[call-overload]
    parents = [int(f["ppid"]) for f in first]  # type: ignore[call-overload]
    assert len(set(pids)) == 2
    driver_side = {os.getpid()}
    assert not driver_side & set(pids)
    # started by node processes for the rank, and ended with the group
    for pid in pids:
        assert _gone_soon(pid), f"rank process {pid} still runs after fit() returned"
    for parent in parents:
        assert _alive(parent), "the node process that started a rank outlives it"
    assert runtime.available_resources().get("CPU") == 2
    # a second run gets fresh processes (no torch.distributed state carried over)
    result = _fit(out, tmp_path / "b", train.ScalingConfig(num_workers=2))
    assert result.error is None, result.error
    second = [int(f["pid"]) for f in _facts(out, 2)]  # type: ignore[call-overload]
    assert not set(second) & set(pids)


def test_each_rank_sees_its_own_declared_gpu(tmp_path, out):
    # GPUs declared on a machine without CUDA: the ranks' visibility is set per process;
    # torch has no CUDA here, so the device falls back to the CPU (as Ray's does)
    runtime.init(num_cpus=2, num_gpus=2)
    try:
        result = _fit(out, tmp_path, train.ScalingConfig(num_workers=2, use_gpu=True))
    finally:
        runtime.shutdown()
    assert result.error is None, result.error
    facts = _facts(out, 2)
    assert sorted(str(f["cuda"]) for f in facts) == ["0", "1"]
    assert facts[0]["pid"] != facts[1]["pid"]
    for f in facts:
        assert f["device"] == "cpu" and f["devices"] == ["cpu"]


@runtime.remote(num_cpus=1)
class _Probe:
    def facts(self) -> tuple[int, int, str | None]:
        from . import preload_probe

        return os.getpid(), preload_probe.IMPORTED_IN, os.environ.get("PROBE_VAR")


def test_dedicated_processes_fork_from_a_warm_process_that_imported_the_named_modules():
    runtime.init(num_cpus=1)  # one node process: every actor below is its child
    probe = "tests.train.preload_probe"
    try:
        first = _Probe.options(dedicated_process=[probe]).remote()
        pid, imported_in, _ = runtime.get(first.facts.remote(), timeout=60)
        assert imported_in != pid  # imported before the process existed: in the warm one
        runtime.kill(first)
        assert _gone_soon(pid)
        second = _Probe.options(dedicated_process=[probe]).remote()
        pid2, imported_in2, _ = runtime.get(second.facts.remote(), timeout=60)
        # a fresh process, forked from the same warm one (nothing imported again)
        assert pid2 != pid and imported_in2 == imported_in
        runtime.kill(second)
        # other environment variables: a fresh interpreter, which imports the module itself
        env = {"env_vars": {"PROBE_VAR": "x"}}
        third = _Probe.options(dedicated_process=[probe], runtime_env=env).remote()
        pid3, imported_in3, var = runtime.get(third.facts.remote(), timeout=60)
        assert imported_in3 == pid3 and var == "x"
        runtime.kill(third)
        # a module that cannot be imported is not preloaded; the actor starts all the same
        fourth = _Probe.options(dedicated_process=["tests.train.no_such_module"]).remote()
        pid4, imported_in4, _ = runtime.get(fourth.facts.remote(), timeout=60)
        assert pid4 not in (pid, pid2, pid3) and imported_in4 == imported_in
        with pytest.raises(TypeError, match="list of module names"):
            _Probe.options(dedicated_process=[1]).remote()
    finally:
        runtime.shutdown()


def test_ranks_are_forked_with_the_backend_and_the_frameworks_their_loop_imports():
    from runtime.train._preload import preload_modules
    from runtime.train.torch import TorchConfig
    from runtime.train.xgboost import XGBoostConfig

    def loop(config: dict[str, object]) -> None:
        import lightning  # noqa: F401
        import mymodule  # type: ignore[import-not-found]  # noqa: F401

        json.dumps(config)  # a module global that is no framework

    torch_mods = preload_modules(loop, TorchConfig.preload_modules, False)
    assert torch_mods[:4] == ["runtime.train", "pyarrow.fs", "torch", "torch.distributed"]
    assert "torch._dynamo" in torch_mods
    assert "lightning" in torch_mods
    assert "mymodule" not in torch_mods and "json" not in torch_mods
    assert preload_modules(loops.process_facts, XGBoostConfig.preload_modules, True) == [
        "runtime.train",
        "pyarrow.fs",
        "xgboost",
        "runtime.data",
    ]


def _probe_log(path: str) -> dict[str, dict[int, float]]:
    """``{"start"|"end": {pid: time}}`` from slow_probe's log."""
    seen: dict[str, dict[int, float]] = {"start": {}, "end": {}}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                what, pid, when = line.split()
                seen[what][int(pid)] = float(when)
    return seen


@runtime.remote(num_cpus=1)
class _SlowProbe:
    def facts(self) -> tuple[int, int]:
        from . import slow_probe

        return os.getpid(), slow_probe.IMPORTED_IN


def test_dedicated_processes_of_a_placement_group_start_side_by_side(tmp_path, monkeypatch):
    # each of two node processes forks its actor from its own warm process, whose import of
    # the named module waits (up to 30 s) until both imports started; the second actor is
    # created while the first one's process starts, and the head places it at once: the
    # imports overlap (before, the head awaited the first creation before placing the
    # second: a slow start held up the placement of every other actor of the cluster)
    from runtime.util import PlacementGroupSchedulingStrategy, placement_group

    log = str(tmp_path / "probe.log")
    monkeypatch.setenv("SLOW_PROBE_LOG", log)
    monkeypatch.setenv("SLOW_PROBE_S", "30")
    monkeypatch.setenv("SLOW_PROBE_WAIT_FOR", "2")
    runtime.init(num_cpus=2)
    try:
        pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD")
        runtime.get(pg.ready(), timeout=60)
        actors = []
        for i in range(2):
            actors.append(
                _SlowProbe.options(
                    dedicated_process=["tests.train.slow_probe"],
                    scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i),
                ).remote()
            )
            # the second is created while the first one's process is being started
            deadline = time.monotonic() + 60
            while len(_probe_log(log)["start"]) < 1:
                assert time.monotonic() < deadline, "the first actor's process did not start"
                time.sleep(0.02)
        facts = runtime.get([a.facts.remote() for a in actors], timeout=90)
    finally:
        runtime.shutdown()
    seen = _probe_log(log)
    zygotes = {imported_in for _, imported_in in facts}
    assert len(zygotes) == 2, f"both actors were forked from one warm process: {facts}"
    assert set(seen["end"]) == zygotes
    assert max(seen["start"][z] for z in zygotes) < min(seen["end"][z] for z in zygotes), seen


def test_nodes_warm_their_zygote_at_start_with_the_modules_named_and_reap_it_on_stop(
    tmp_path, monkeypatch
):
    log = str(tmp_path / "probe.log")
    monkeypatch.setenv("SLOW_PROBE_LOG", log)
    monkeypatch.setenv("RUNTIME_ZYGOTE_PRELOAD", "tests.train.slow_probe")
    runtime.init(num_cpus=2)
    try:
        # no actor asked for anything: each node process's warm process imports the module
        deadline = time.monotonic() + 60
        while len(_probe_log(log)["end"]) < 2:
            assert time.monotonic() < deadline, _probe_log(log)
            time.sleep(0.05)
        zygotes = set(_probe_log(log)["end"])
        # a dedicated actor is forked from one of them, with the module imported already
        actor = _SlowProbe.options(dedicated_process=True).remote()
        pid, imported_in = runtime.get(actor.facts.remote(), timeout=60)
        assert imported_in in zygotes and pid not in zygotes
        # the head (no resources) and the actor's own process (a child) warm none
        assert set(_probe_log(log)["end"]) == zygotes
        # a node killed outright takes its warm process with it
        killed = sorted(zygotes)[0]
        with open(f"/proc/{killed}/stat") as f:
            node = int(f.read().rsplit(")", 1)[1].split()[1])
        assert node != os.getpid()
        os.kill(node, signal.SIGKILL)
        assert _gone_soon(killed), f"the warm process {killed} outlives its killed node"
    finally:
        runtime.shutdown()
    for zygote in zygotes:
        assert _gone_soon(zygote), f"the warm process {zygote} outlives its node"


def test_importing_train_asks_the_nodes_started_later_to_import_torch_at_once():
    import subprocess
    import sys

    pytest.importorskip("torch")
    code = (
        "import os, sys, runtime.train\n"
        "print(os.environ.get('RUNTIME_ZYGOTE_PRELOAD'), 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "RUNTIME_ZYGOTE_PRELOAD"}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    named, imported = got.stdout.decode().split()
    assert named.split(",")[:3] == ["runtime.train", "pyarrow.fs", "torch"]
    assert "torch._dynamo" in named and ";" not in named  # no framework: `-c` has no script
    assert imported == "False"  # named for the nodes, not imported here
    # set already (empty: off): left alone
    env["RUNTIME_ZYGOTE_PRELOAD"] = ""
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert got.stdout.decode().split() == ["False"]
