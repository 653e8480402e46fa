"""How the cluster shows its hosts: ``runtime.nodes()`` rows (one per node process, Ray's
keys, the host's processes named in each) and ``python -m runtime status`` per host."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import runtime
from runtime.core.api import session as _api

from ..conftest import cli_json, local_mesh, until


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with local_mesh(tmp_path_factory.mktemp("nodes"), num_cpus=2):
        yield


@runtime.remote(num_cpus=2)
def hold(gate: str) -> int:
    deadline = time.monotonic() + 30
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def test_rows_keep_ray_keys_and_say_the_head_and_where_work_may_go(mesh):
    rows = runtime.nodes()
    for key in ("NodeID", "Alive", "alive", "NodeManagerAddress", "NodeName",
                "NodeManagerPort", "Resources", "Labels"):  # fmt: skip
        assert all(key in r for r in rows), key
    (head,) = [r for r in rows if r["IsHeadNode"]]
    assert not head["Schedulable"] and not head["Resources"]
    drivers = [r for r in rows if r["IsDriver"]]
    assert drivers and not any(r["Schedulable"] for r in drivers)
    work = [r for r in rows if r["Schedulable"]]
    assert len(work) == 2 and len({r["HostID"] for r in work}) == 1
    assert sorted(work[0]["HostProcesses"]) == sorted(r["NodeID"] for r in work)
    assert runtime.get_runtime_context().get_node_id() in {r["NodeID"] for r in rows}


def test_status_shows_each_host_with_its_processes_and_what_they_hold(mesh, tmp_path):
    gate = str(tmp_path / "gate")
    ref = hold.remote(gate)
    until(lambda: runtime.available_resources().get("CPU") == 0.0)
    try:
        status = cli_json("status")
        assert isinstance(status, dict)
        (host,) = status["hosts"]
        assert host["processes"] == 2 and host["resources"]["CPU"] == {
            "total": 2.0,
            "available": 0.0,
        }
        holds = sorted(m["holds"].get("CPU", 0.0) for m in host["members"])
        assert holds == [0.0, 2.0]  # one process runs the 2-CPU task
        assert len(status["heads"]) == 1
        mesh = _api._session.mesh  # type: ignore[union-attr]
        token = os.path.join(mesh.state_dir, "token")
        text = subprocess.run(
            [sys.executable, "-m", "runtime", "--address", mesh.head_address,
             "--token-file", token, "status"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert "(2 process(es)): CPU 2/2" in text and "CPU 2" in text and "idle" in text
        assert "the control plane (no user code)" in text
        assert f"cluster at {mesh.head_address}:" in text
    finally:
        open(gate, "w").close()
    runtime.get(ref, timeout=30)


def test_the_state_api_lists_nodes_with_ray_s_fields(mesh):
    from runtime.util.state import list_nodes

    (head,) = list_nodes(filters=[("is_head_node", "=", True)])
    assert head.state == "ALIVE" and head.node_ip == "127.0.0.1"
    work = [r for r in list_nodes(filters=[("state", "=", "ALIVE")]) if r.resources_total]
    assert len(work) == 2 and all(r.resources_total["CPU"] == 2.0 for r in work)


@runtime.remote(runtime_env={"env_vars": {"RT_VIEW": "1"}})
def in_env(gate: str) -> int:
    deadline = time.monotonic() + 30
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def test_a_process_kept_for_a_runtime_env_is_shown_with_its_host_and_counted_once(mesh, tmp_path):
    gate = str(tmp_path / "gate")
    ref = in_env.remote(gate)
    try:
        until(lambda: any(r["Labels"].get("runtime.io/role") == "env" and r["Alive"]
                          for r in runtime.nodes()), 60)  # fmt: skip
        host = next(r for r in runtime.nodes() if r["Schedulable"])
        totals = runtime.cluster_resources()
        for name in ("CPU", "memory", "object_store_memory"):
            assert totals[name] == host["Resources"][name], name  # the host's, once
        status = cli_json("status")
        assert isinstance(status, dict)
        (shown,) = status["hosts"]
        assert shown["processes"] == 2
        assert [m["role"] for m in shown["members"]].count("env") == 1
    finally:
        open(gate, "w").close()
    runtime.get(ref, timeout=30)
