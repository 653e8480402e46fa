"""Fixtures of the multi-host tests: simulated hosts (namespaces on a bridge) and a cluster
on them, made and removed by each test. Skipped with the reason where namespaces cannot be
made (not root, no ``ip``/``nsenter``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import TOKEN_PATH, Cluster, Network, Unavailable, make_network


def pytest_configure(config: pytest.Config) -> None:
    # Every multi-host test carries it (``-m hosts`` selects them); each makes its own
    # private network, so they run in parallel (``pytest -n``) without clashing.
    config.addinivalue_line("markers", "hosts: a test on simulated hosts (network namespaces)")


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(n, env=None, head_name=None)``: ``n`` hosts with the token provisioned
    on each and a head started on ``h0`` (reached by ``head_name`` when given, a name every
    host resolves; ``head=False``: no head yet); everything is removed at the end of the test."""
    networks: list[Network] = []

    def make(
        n: int, env: dict[str, str] | None = None, head_name: str | None = None, head: bool = True
    ) -> Cluster:
        try:
            net = make_network(n, tmp_path, env)
        except Unavailable as exc:
            pytest.skip(str(exc))
        networks.append(net)
        token = os.urandom(32)
        for host in net.hosts:  # provisioned like a secret: a file only root reads
            host.run("sh", "-c", f"umask 077 && cat > {TOKEN_PATH}", input=token.hex().encode())
        cluster = Cluster(net, token, head_name=head_name)
        if head_name is not None:
            net.resolve(head_name, net.hosts[0].ip)
        if head:
            cluster.start_head()
        return cluster

    try:
        yield make
    finally:
        for net in networks:
            net.close()
