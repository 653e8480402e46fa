"""The simulated hosts are really apart: own address, hostname, /dev/shm and /tmp each."""

from __future__ import annotations

from .harness import SUBNET


def test_each_host_has_its_own_address_hostname_shm_and_tmp(make_cluster):
    cluster = make_cluster(2)
    h0, h1 = cluster.hosts
    h0.run("sh", "-c", "echo zero > /dev/shm/mark && echo zero > /tmp/mark")
    assert h1.run("sh", "-c", "ls /dev/shm /tmp").split() == ["/dev/shm:", "/tmp:", "cluster-token"]
    assert h0.run("hostname").strip() == "h0" and h1.run("hostname").strip() == "h1"
    assert f"{SUBNET}.2/24" in h1.run("ip", "-4", "addr", "show", "eth0")
    # h1 reaches the head on h0 over the bridge (a TCP connect from another namespace).
    probe = f"import socket; socket.create_connection(('{h0.ip}', 6380), timeout=5).close()"
    h1.run("python3", "-c", probe)
