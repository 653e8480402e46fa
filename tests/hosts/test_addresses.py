"""Where a node listens and what it advertises, across simulated hosts: ``--host 0.0.0.0``
with ``--advertise-address``, and ``--procs N`` with a base ``--port``."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(120)]


def test_a_node_listening_on_every_interface_advertises_the_address_it_is_reached_at(
    make_cluster,
):
    cluster = make_cluster(3)
    h0, h1, h2 = cluster.hosts
    args = ["--address", cluster.address, "--num-cpus", "1", "--procs", "1"]
    h1.spawn("node", *cluster.node_command(h1, *args, "--advertise-address", h1.ip, ip="0.0.0.0"))
    cluster.start_node(h2)
    out = cluster.drive(h0, "node_addresses", nodes=2)
    (a, b) = out["nodes"]
    assert a[:2] == ["h1", h1.ip] and b[:2] == ["h2", h2.ip]
    # The driver on h0 reached both; a task on h1 called an actor on h2 and back.
    assert out["actor_call"] == ["h1", 3]
    # It really listens on every interface: the advertised port answers on h1's loopback too.
    probe = f"import socket; socket.create_connection(('127.0.0.1', {a[2]}), timeout=5).close()"
    assert h1.exit_code("python3", "-c", probe) == 0


def test_procs_with_a_base_port_listen_on_consecutive_ports(make_cluster):
    cluster = make_cluster(3)
    h0, h1, h2 = cluster.hosts
    args = ["--address", cluster.address, "--num-cpus", "3", "--procs", "3", "--port", "7100"]
    h1.spawn("node", *cluster.node_command(h1, *args))
    cluster.start_node(h2)
    out = cluster.drive(h0, "node_addresses", nodes=4)
    assert [n for n in out["nodes"] if n[0] == "h1"] == [
        ["h1", h1.ip, 7100],
        ["h1", h1.ip, 7101],
        ["h1", h1.ip, 7102],
    ]
    assert out["actor_call"] == ["h1", 3]


def test_a_node_on_every_interface_without_an_advertised_address_is_refused(make_cluster):
    cluster = make_cluster(2)
    h1 = cluster.hosts[1]
    argv = cluster.node_command(h1, "--address", cluster.address, ip="0.0.0.0")
    assert h1.exit_code(*argv, timeout=60) != 0
    bad = cluster.node_command(
        h1, "--address", cluster.address, "--advertise-address", f"{h1.ip}:7000"
    )
    assert h1.exit_code(*bad, timeout=60) != 0
