"""The host's ledger and the host-aware placement, as plain state (no mesh)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from runtime.core.scheduling.host import HostLedger, HostScheduler, visible_devices
from runtime.core.scheduling.labels import check_label_selector, matches
from runtime.core.scheduling.scheduler import bundles_feasible, pick_node, place_bundles


def test_processes_of_a_host_share_its_cpus_through_one_ledger(tmp_path):
    path = str(tmp_path / "host.ledger")
    HostLedger(path, {"CPU": 3.0}).close()
    a, b, c = (HostScheduler(HostLedger(path), slot=1.0) for _ in range(3))
    assert a.request("two", {"CPU": 2.0})  # more than its slot: it runs alone in a
    assert a.ledger.available()["CPU"] == 1.0
    assert b.request("one", {"CPU": 1.0})
    assert not c.request("another", {"CPU": 1.0})  # the host is full: it queues in c
    assert c._grant() == []
    assert a.release({"CPU": 2.0}) == []
    assert c._grant() == ["another"]  # c sees what a gave back
    assert c.ledger.available()["CPU"] == 1.0


def test_a_busy_process_keeps_cpu_work_off_while_the_host_has_room(tmp_path):
    path = str(tmp_path / "host.ledger")
    HostLedger(path, {"CPU": 4.0}).close()
    a = HostScheduler(HostLedger(path), slot=1.0)
    assert a.request(1, {"CPU": 1.0})
    assert not a.request(2, {"CPU": 1.0})  # its one CPU slot is busy: it waits here
    assert a.request(3, {"CPU": 0.0})  # work that needs no CPU is not held back
    assert a.release({"CPU": 1.0}) == [2]  # handed over within the process
    assert a.ledger.available()["CPU"] == 3.0


def test_half_cpu_tasks_share_one_process_slot(tmp_path):
    sched = HostScheduler(HostLedger(None, {"CPU": 2.0}), slot=1.0)
    assert sched.request(1, {"CPU": 0.5})
    assert sched.request(2, {"CPU": 0.5})
    assert not sched.request(3, {"CPU": 0.5})


def test_gpus_are_granted_by_device_and_fractions_share_one(tmp_path):
    ledger = HostLedger(None, {"CPU": 4.0, "GPU": 2.0})
    assert ledger.take({"GPU": 0.5}) == [0]
    assert ledger.take({"GPU": 0.5}) == [0]  # the fullest device it fits on
    assert ledger.take({"GPU": 1.0}) == [1]
    assert ledger.take({"GPU": 0.25}) is None
    ledger.give({"GPU": 0.5}, [0])
    assert ledger.take({"GPU": 0.25}) == [0]
    assert ledger.gpu_free() == [0.25, 0.0]


def test_a_process_that_dies_gives_back_what_it_held(tmp_path):
    path = str(tmp_path / "host.ledger")
    owner = HostLedger(path, {"CPU": 3.0, "GPU": 1.0})
    code = (
        "import os, sys\n"
        "from runtime.core.scheduling.host import HostLedger\n"
        f"ledger = HostLedger({path!r})\n"
        "assert ledger.take({'CPU': 2.0, 'GPU': 1.0}, long=True) == [0]\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=os.environ)
    assert owner.available() == {"CPU": 1.0, "GPU": 0.0}
    assert owner.reserved() == {"CPU": 2.0, "GPU": 1.0}
    survivor = HostLedger(path)  # a process that joins sweeps the dead one's row
    assert survivor.available() == {"CPU": 3.0, "GPU": 1.0}
    assert survivor.reserved() == {}
    assert survivor.gpu_free() == [1.0]


def test_gpu_ids_map_through_the_nodes_own_visible_devices(monkeypatch):
    from runtime.core.scheduling import gpus as host

    monkeypatch.setattr(host, "_VISIBLE_AT_START", "4,5")
    assert visible_devices([1]) == "5"
    monkeypatch.setattr(host, "_VISIBLE_AT_START", None)
    assert visible_devices([0, 1]) == "0,1"


@dataclass
class Node:
    node_id: str
    host_id: str
    resources: dict[str, float]
    available: dict[str, float]
    slot: float = 1.0
    used: dict[str, float] = field(default_factory=dict)
    pinned: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    reserved: dict[str, float] = field(default_factory=dict)
    is_driver: bool = False
    alive: bool = True


def host(name: str, cpus: float, procs: int, **labels: str) -> list[Node]:
    res = {"CPU": cpus}
    return [Node(f"{name}-{i}", name, res, dict(res), labels=labels) for i in range(procs)]


def test_strict_pack_bundles_go_to_one_host_and_to_separate_processes_of_it():
    nodes = host("a", 4.0, 4)
    placed = place_bundles(nodes, [{"CPU": 2.0}, {"CPU": 2.0}], "STRICT_PACK")
    assert placed is not None
    assert len(set(placed.values())) == 2
    assert {n.split("-")[0] for n in placed.values()} == {"a"}
    assert bundles_feasible(nodes, [{"CPU": 2.0}] * 3, "STRICT_PACK") is not None


def test_strict_spread_counts_hosts_not_processes():
    nodes = host("a", 2.0, 2) + host("b", 2.0, 2)
    assert bundles_feasible(nodes, [{"CPU": 1.0}] * 3, "STRICT_SPREAD") is not None
    placed = place_bundles(nodes, [{"CPU": 1.0}] * 2, "STRICT_SPREAD")
    assert placed is not None
    assert {n.split("-")[0] for n in placed.values()} == {"a", "b"}


def test_a_task_goes_to_an_idle_process_of_a_host_with_room():
    nodes = host("a", 3.0, 3)
    nodes[0].used = {"CPU": 1.0}
    nodes[1].used = {"CPU": 1.0}
    for n in nodes:
        n.available = {"CPU": 1.0}
    assert pick_node(nodes, {"CPU": 1.0}, {}) == "a-2"


def test_label_selectors_match_equal_not_in_and_not_in():
    labels = {"zone": "a", "gpu": "t4"}
    assert matches(labels, {"zone": "a"})
    assert not matches(labels, {"zone": "!a"})
    assert matches(labels, {"zone": "in(b, a)", "gpu": "!in(a100)"})
    assert matches(labels, {"region": "!x"})  # absent: not x
    assert not matches(labels, {"region": "x"})
    nodes = host("a", 1.0, 1, zone="a") + host("b", 1.0, 1, zone="b")
    assert pick_node(nodes, {"CPU": 1.0}, {}, labels={"zone": "b"}) == "b-0"


@pytest.mark.parametrize(
    ("selector", "error"),
    [
        ({"zone": 1}, TypeError),
        (["zone"], TypeError),
        ({"": "a"}, ValueError),
        ({"zone": "in()"}, ValueError),
        ({"zone": "!"}, ValueError),
    ],
)
def test_a_malformed_label_selector_is_refused(selector, error):
    with pytest.raises(error):
        check_label_selector(selector)


def test_the_visible_devices_go_back_once_no_gpu_holder_is_left(monkeypatch):
    from runtime.core.scheduling import gpus as host

    monkeypatch.setattr(host, "_VISIBLE_AT_START", None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    host.set_visible_devices([1])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    host.set_visible_devices(None)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_a_large_request_that_waits_for_the_host_is_not_starved_by_small_ones(tmp_path):
    path = str(tmp_path / "host.ledger")
    HostLedger(path, {"CPU": 3.0}).close()
    big, small, other = (HostScheduler(HostLedger(path), slot=1.0) for _ in range(3))
    assert small.request("s1", {"CPU": 1.0})
    assert other.request("o1", {"CPU": 1.0})
    assert not big.request("two", {"CPU": 2.0})  # 1 free: it waits for the host
    big.claim_for_queue()  # (its poll) it claims the 2 CPUs it waits for
    assert not small.request("s2", {"CPU": 1.0})  # queued behind s1 in its own slot
    # s1 ends: no hand-over to s2 within the process while big claims, the CPU goes back
    assert small.release({"CPU": 1.0}) == []
    assert small._grant() == []  # s2 may not take what big claims
    assert big._grant() == ["two"]  # 2 free now: the claim is granted, and dropped
    assert not big.ledger.claimed_elsewhere() and not small.ledger.claimed_elsewhere()
    assert big.release({"CPU": 2.0}) == []
    assert small._grant() == ["s2"]


def test_a_claim_of_a_process_that_died_is_dropped(tmp_path):
    path = str(tmp_path / "host.ledger")
    owner = HostLedger(path, {"CPU": 2.0})
    code = (
        "import os\n"
        "from runtime.core.scheduling.host import HostLedger\n"
        f"ledger = HostLedger({path!r})\n"
        "assert ledger.claim({'CPU': 2.0})\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=os.environ)
    assert owner.claimed_elsewhere()
    survivor = HostLedger(path)  # joining sweeps the dead claimer
    assert not survivor.claimed_elsewhere()
    assert survivor.take({"CPU": 1.0}) == []
