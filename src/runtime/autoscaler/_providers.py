"""Where the autoscaler gets nodes from: the provider interface, and local processes."""

from __future__ import annotations

import abc
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

from ._decide import NodeType

#: The label every provider node carries: the provider's id for it, by which the autoscaler
#: finds its hosts in ``runtime.nodes()``.
NODE_LABEL = "runtime.io/autoscaler-node"


class NodeProvider(abc.ABC):
    """Starts and stops nodes of the given types. Every node it starts must join the cluster
    with the label :data:`NODE_LABEL` set to the id :meth:`create_node` returned."""

    @abc.abstractmethod
    def create_node(self, node_type: NodeType) -> str:
        """Start one node of ``node_type`` (without waiting for it to join); its id."""

    @abc.abstractmethod
    def terminate_node(self, node_id: str) -> None:
        """Stop a node (gracefully: it drains its running work first)."""

    @abc.abstractmethod
    def non_terminated_nodes(self) -> dict[str, str]:
        """Node id -> node type name of every node started and not stopped yet."""

    def close(self) -> None:  # noqa: B027 - optional: providers without state need nothing
        """Release what the provider holds (the local one stops its nodes)."""


class LocalProcessProvider(NodeProvider):
    """Nodes as ``python -m runtime.node`` processes on this machine, joined to ``address``
    (a host per node: its own resources, its own node processes). Stopped with SIGTERM, so
    each drains first (docs/deploy.md)."""

    def __init__(
        self,
        address: str,
        *,
        token_file: str | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        self.address = address
        self.token_file = token_file
        self.env = dict(env) if env is not None else None
        self.args = list(args)
        self.python = python
        self._procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        self._stopping: set[str] = set()
        self._lock = threading.Lock()
        self._seq = 0

    def create_node(self, node_type: NodeType) -> str:
        res = dict(node_type.resources)
        cpus, gpus = res.pop("CPU", 0.0), res.pop("GPU", 0.0)
        memory = res.pop("memory", None)
        with self._lock:
            self._seq += 1
            node_id = f"local-{os.getpid()}-{self._seq}"
        labels = {**node_type.labels, NODE_LABEL: node_id}
        argv = [self.python, "-m", "runtime.node", "--address", self.address,
                "--num-cpus", repr(cpus), "--num-gpus", repr(gpus),
                "--resources", json.dumps(res), "--labels", json.dumps(labels)]  # fmt: skip
        if memory is not None:
            argv += ["--memory", repr(memory)]
        if self.token_file:
            argv += ["--token-file", self.token_file]
        proc = subprocess.Popen(
            [*argv, *self.args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with self._lock:
            self._procs[node_id] = (proc, node_type.name)
        return node_id

    def terminate_node(self, node_id: str) -> None:
        with self._lock:
            entry = self._procs.get(node_id)
            self._stopping.add(node_id)
        if entry is not None and entry[0].poll() is None:
            entry[0].send_signal(signal.SIGTERM)

    def non_terminated_nodes(self) -> dict[str, str]:
        with self._lock:
            for node_id, (proc, _) in list(self._procs.items()):
                if proc.poll() is not None:  # exited (drained, or crashed): reaped
                    del self._procs[node_id]
                    self._stopping.discard(node_id)
            return {i: t for i, (_, t) in self._procs.items() if i not in self._stopping}

    def pids(self) -> dict[str, int]:
        """Node id -> pid of the running node processes (stopping ones included)."""
        with self._lock:
            return {i: p.pid for i, (p, _) in self._procs.items() if p.poll() is None}

    def close(self, timeout: float = 30.0) -> None:
        with self._lock:
            procs = [p for p, _ in self._procs.values()]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        with self._lock:
            self._procs.clear()
            self._stopping.clear()


__all__ = ["NODE_LABEL", "LocalProcessProvider", "NodeProvider"]
