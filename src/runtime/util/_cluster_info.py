"""Small questions about the cluster, named as in ``ray.util``: this node's IP address and
the named actors, answered through the public API."""

from __future__ import annotations

import socket
from typing import Any

import runtime


def get_node_ip_address() -> str:
    """The IP address of the node the calling code runs on (Ray's ``util.get_node_ip_address``).

    Connected to a cluster, it is the address that node listens on; before ``init()`` it is
    this machine's address toward other hosts (``127.0.0.1`` when it has none).
    """
    try:
        node_id = runtime.get_runtime_context().get_node_id()
        listed = runtime.nodes()
    except RuntimeError:  # not connected to a cluster
        listed = []
    for node in listed:
        if node["NodeID"] == node_id:
            return str(node["NodeManagerAddress"])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet leaves: only picks the route
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def list_named_actors(all_namespaces: bool = False) -> list[Any]:
    """The names of the live named actors (Ray's ``util.list_named_actors``).

    Args:
        all_namespaces: list every namespace's actors, each as
            ``{"name": ..., "namespace": ...}``; otherwise only the names in the caller's
            namespace.
    """
    from runtime.util.state import list_actors

    namespace = runtime.get_runtime_context().namespace
    out: list[Any] = []
    for row in list_actors(limit=1_000_000):
        if not row["name"] or row["state"] == "DEAD":
            continue
        if all_namespaces:
            out.append({"name": row["name"], "namespace": row["namespace"]})
        elif row["namespace"] == namespace:
            out.append(row["name"])
    return out
