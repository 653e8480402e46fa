"""The mesh as processes: local meshes, heads and nodes from the command line, tokens, CLI.

Killed drivers and heads, and a thousand idle connections, are chaos scenarios: see
tests/chaos/test_driver_kill.py, test_head_restart.py and test_attacks.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import psutil
import pytest

import runtime
from runtime.exceptions import AuthenticationError

from ..conftest import HeadProcess, stop_process, wait_gone

pytestmark = pytest.mark.timeout(90)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m runtime ARGS`` against the cluster ``env`` points at."""
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def _run_driver(
    code: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_init_starts_a_local_mesh_and_shutdown_leaves_no_process(monkeypatch):
    runtime.init(num_cpus=2)
    try:
        assert runtime.is_initialized()
        children = psutil.Process().children(recursive=True)
        assert len(children) == 3  # head + two nodes
        resources = runtime.cluster_resources()  # the host's, as Ray reports them
        assert set(resources) == {"CPU", "memory", "object_store_memory"}
        assert resources["CPU"] == 2.0
    finally:
        runtime.shutdown()
    assert not runtime.is_initialized()
    assert wait_gone([c.pid for c in children], timeout=5) == []


def test_init_twice_is_an_error_unless_ignored():
    runtime.init(num_cpus=1)
    try:
        with pytest.raises(RuntimeError, match="already"):
            runtime.init(num_cpus=1)
        assert runtime.init(ignore_reinit_error=True)["address"]
    finally:
        runtime.shutdown()


def test_async_connect_runs_on_the_callers_loop():
    import asyncio

    @runtime.remote
    def double(x):
        return 2 * x

    async def main():
        async with runtime.connect(num_cpus=1) as cluster:
            assert cluster.address
            values = await asyncio.gather(*[double.remote(i) for i in range(10)])
            return values, len(psutil.Process().children())

    values, nchildren = asyncio.run(main())
    assert values == [2 * i for i in range(10)]
    assert nchildren == 2
    assert not runtime.is_initialized()


def test_nodes_join_a_head_and_auto_finds_it(head: HeadProcess):
    # One host of 2 CPUs in 2 processes; its custom resources are the host's, shared.
    node = head.start_node("--num-cpus", "2", "--procs", "2", "--resources", '{"gadget": 2}')
    try:
        out = _run_driver(
            """
            import time, runtime
            runtime.init(address="auto")
            deadline = time.monotonic() + 30
            while runtime.cluster_resources().get("CPU", 0) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            print(runtime.cluster_resources())

            @runtime.remote(resources={"gadget": 1})
            def f():
                return "ran"

            print(runtime.get(f.remote()))
            runtime.shutdown()
            """,
            head.env,
        )
        assert out.returncode == 0, out.stderr
        assert "'CPU': 3.0" in out.stdout and "'gadget': 2.0" in out.stdout
        assert "ran" in out.stdout
    finally:
        stop_process(node)


def test_the_cli_reports_status_and_lists(head: HeadProcess):
    env = head.env
    status = _cli(env, "status")
    assert status.returncode == 0, status.stderr
    assert "CPU: 1 of 1 available" in status.stdout
    driver = _run_driver(
        """
        import runtime
        runtime.init(address="auto")

        @runtime.remote
        class Keeper:
            def ping(self):
                return 1

        k = Keeper.options(name="keeper", lifetime="detached").remote()
        runtime.get(k.ping.remote())
        t = Keeper.options(name="temporary").remote()
        runtime.get(t.ping.remote())
        runtime.shutdown()
        """,
        env,
    )
    assert driver.returncode == 0, driver.stderr
    listed = _cli(env, "list", "actors")
    assert listed.returncode == 0, listed.stderr
    rows = {
        line.split()[1] + ":" + line.split()[2]: line for line in listed.stdout.splitlines()[1:]
    }
    # The detached actor outlives its driver; the other one died with it.
    assert "ALIVE" in rows["Keeper:keeper"]
    assert "DEAD" in rows["Keeper:temporary"]
    nodes = _cli(env, "list", "nodes")
    assert head.address in nodes.stdout
    stop = _cli(env, "stop")
    assert stop.returncode == 0
    head.proc.wait(15)
    again = _cli(env, "stop")
    assert again.returncode == 0 and "no cluster to stop" in again.stdout


def test_a_wrong_token_is_refused(head: HeadProcess):
    with pytest.raises(AuthenticationError):
        runtime.init(address=head.address, token=b"not the cluster token")
    assert not runtime.is_initialized()
    assert head.proc.poll() is None


def test_a_node_with_a_wrong_token_cannot_join(head: HeadProcess, tmp_path):
    bad = tmp_path / "bad-token"
    bad.write_text("00" * 32)
    node = head.start_node("--token-file", str(bad))
    try:
        assert node.wait(30) != 0
    finally:
        stop_process(node)
    # The node proves first (so a challenge gives nothing to guess against): the head
    # refuses its proof, and the node exits.
    assert "wrong cluster token" in head.log()
    assert head.proc.poll() is None


def test_local_mode_runs_everything_in_this_process():
    runtime.init(local_mode=True, num_cpus=2)
    try:

        @runtime.remote
        def pid():
            return os.getpid()

        @runtime.remote
        class Box:
            def __init__(self, v):
                self.v = v

            async def get(self):
                return self.v

        assert runtime.get(pid.remote()) == os.getpid()
        assert runtime.get(Box.remote([1, 2]).get.remote()) == [1, 2]
        assert psutil.Process().children() == []
    finally:
        runtime.shutdown()
