"""The core's cluster behaviour across simulated hosts: nothing is shared but the bridge."""

from __future__ import annotations

import pytest

from .harness import FAST_DETECTION, SUBNET

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(120)]


def test_tasks_actors_and_objects_work_between_hosts_over_tcp_only(make_cluster):
    cluster = make_cluster(3)
    h0, h1, h2 = cluster.hosts
    for host in (h1, h2):
        cluster.start_node(host)
    out = cluster.drive(h0, "tasks_actors_objects", nodes=2)
    assert out["driver_host"] == "h0"
    assert out["hosts"] == ["h1", "h2"]
    assert out["addresses"] == {"h1": h1.ip, "h2": h2.ip}
    expected = out["expected"]
    assert out["read_on_b"] == [expected, "h2"]  # made on h1, read on h2
    assert out["read_here"] == expected  # made on h1, read by the driver on h0
    assert out["read_put"] == [[expected, "h1"], [expected, "h2"]]  # put on h0
    assert out["actor_host"] == "h2"
    assert out["actor_calls"] == [11, ["h1", 16]]
    # Each host's shared memory holds only its own node's folder: nothing was mapped across.
    for host, node in out["node_of_host"].items():
        assert all(e.startswith(node) for e in out["shm"][host]), out["shm"]


def test_strict_spread_puts_each_bundle_on_another_host(make_cluster):
    cluster = make_cluster(3)
    for host in cluster.hosts:
        cluster.start_node(host, num_cpus=2)
    out = cluster.drive(cluster.hosts[0], "strict_spread", nodes=3, bundles=3, too_many=4)
    assert out["ready"] is True
    assert sorted(out["placed"]) == ["h0", "h1", "h2"]
    assert out["too_many_ready"] is False  # 4 bundles, 3 hosts: never placed


def test_strict_spread_counts_hosts_not_node_processes(make_cluster):
    cluster = make_cluster(3)
    for host in cluster.hosts[1:]:
        cluster.start_node(host, procs=2)
    out = cluster.drive(cluster.hosts[0], "strict_spread", nodes=4, bundles=2, too_many=3)
    assert out["ready"] is True
    assert out["too_many_ready"] is False  # 3 bundles, 2 hosts: never placed, as in Ray


def test_a_task_of_two_cpus_runs_on_a_host_that_offers_two(make_cluster):
    cluster = make_cluster(2)
    cluster.start_node(cluster.hosts[1], procs=2)
    out = cluster.drive(cluster.hosts[0], "task_of_two_cpus", nodes=2)
    assert out == {"ran_on": "h1", "error": None}


def test_a_host_whose_node_dies_loses_its_work_to_the_others(make_cluster):
    cluster = make_cluster(3, env=FAST_DETECTION)
    h0, h1, h2 = cluster.hosts
    for host in (h1, h2):
        cluster.start_node(host, num_cpus=2)
    driver = cluster.driver(h0, "node_death", nodes=2, victim="h2")
    assert driver.checkpoint() == {"actor_host": "h2"}
    assert h2.kill()  # kill -9 every runtime process of h2
    driver.resume()
    out = driver.result()
    assert out["squares"] == [i * i for i in range(16)]
    assert (out["before"], out["after"]) == ("h2", "h1")  # restarted on the surviving host
    assert out["victim_dead"] is True
    assert out["survivors"] == ["h1"]


def test_the_head_restarts_on_its_state_and_the_hosts_rejoin(make_cluster):
    cluster = make_cluster(3, env=FAST_DETECTION)
    _, h1, h2 = cluster.hosts
    for host in (h1, h2):
        cluster.start_node(host)
    driver = cluster.driver(h1, "head_restart", nodes=2)
    driver.checkpoint()
    cluster.kill_head()
    driver.resume()
    driver.checkpoint()
    cluster.start_head()
    driver.resume()
    out = driver.result()
    assert out["during"] == 102  # node-to-node calls went on while the head was down
    assert out["after"] == 103  # the named detached actor, found through the new head
    assert out["actor_host"] == "h2"
    assert out["hosts_back"] == ["h1", "h2"]
    assert out["squares"] == [9, 9]


def test_a_host_the_driver_never_called_reads_an_object_the_driver_owns(make_cluster):
    cluster = make_cluster(4)
    for host in cluster.hosts[1:3]:
        cluster.start_node(host, resources={host.name: 1})
    out = cluster.drive(
        cluster.hosts[3], "driver_object_borrowed_by_a_host_it_never_called", nodes=2
    )
    assert out["read"] == [out["expected"], "h2"]


def test_nodes_follow_the_head_to_a_new_address_under_its_name(make_cluster):
    # A Kubernetes head pod comes back with a new IP behind the same Service name.
    cluster = make_cluster(3, env=FAST_DETECTION, head_name="runtime-head")
    h0, h1, h2 = cluster.hosts
    for host in (h1, h2):
        cluster.start_node(host, procs=2)
    assert cluster.drive(h1, "members", nodes=4) == {
        "hosts": ["h1", "h1", "h2", "h2"],
        "head": [h0.ip],
    }
    cluster.kill_head()
    moved = f"{SUBNET}.101"
    h0.run("ip", "addr", "add", f"{moved}/24", "dev", "eth0")
    cluster.net.resolve("runtime-head", moved)
    cluster.head_ip = moved
    cluster.start_head()
    assert cluster.drive(h2, "members", nodes=4) == {
        "hosts": ["h1", "h1", "h2", "h2"],
        "head": [moved],
    }
