"""Nodes as Slurm jobs: one single-node batch job per autoscaler node."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

from ._decide import NodeType
from ._providers import NODE_LABEL, NodeProvider

#: Every job the provider submits is named this, then the node's id.
JOB_PREFIX = "runtime-autoscaler-"
Run = Callable[[list[str]], str]


class SlurmProvider(NodeProvider):
    """Each node is a batch job (``sbatch``) of one Slurm node that runs ``python -m
    runtime.node`` there, listening on every interface and advertising the node's address;
    stopped with ``scancel --signal=TERM`` (it drains, then the job ends). ``token_file``
    must be on a file system every Slurm node sees; ``sbatch_args`` adds options (a
    partition, an account, a time limit)."""

    def __init__(
        self,
        address: str,
        *,
        token_file: str,
        python: str = sys.executable,
        sbatch_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        run: Run | None = None,
    ) -> None:
        self.address = address
        self.token_file = token_file
        self.python = python
        self.sbatch_args = list(sbatch_args)
        self.env = {**os.environ, **(env or {})}
        self.run = run or self._run
        self._nodes: dict[str, tuple[str, str]] = {}  # node id -> (job id, type name)
        self._stopping: set[str] = set()
        self._lock = threading.Lock()

    def _run(self, argv: list[str]) -> str:
        out = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({out.returncode}): {out.stderr.strip()[:500]}")
        return out.stdout

    def node_command(self, node_id: str, node_type: NodeType) -> str:
        """The job's shell command (its own address found where it runs)."""
        res = dict(node_type.resources)
        cpus, gpus = res.pop("CPU", 0.0), res.pop("GPU", 0.0)
        labels = {**node_type.labels, NODE_LABEL: node_id}
        argv = [self.python, "-m", "runtime.node", "--address", self.address,
                "--token-file", self.token_file, "--host", "0.0.0.0",
                "--num-cpus", repr(cpus), "--num-gpus", repr(gpus),
                "--resources", json.dumps(res), "--labels", json.dumps(labels)]  # fmt: skip
        me = '"$(getent hosts "$(hostname)" | awk \'{ print $1; exit }\')"'
        return f"exec {shlex.join(argv)} --advertise-address {me}"

    def create_node(self, node_type: NodeType) -> str:
        node_id = f"slurm-{os.urandom(6).hex()}"
        cpus = max(1, int(node_type.resources.get("CPU", 1) + 0.999))
        argv = ["sbatch", "--parsable", f"--job-name={JOB_PREFIX}{node_id}", "--nodes=1",
                "--ntasks=1", f"--cpus-per-task={cpus}", "--output=/dev/null", *self.sbatch_args,
                "--wrap", self.node_command(node_id, node_type)]  # fmt: skip
        job = self.run(argv).strip().split(";")[0]
        with self._lock:
            self._nodes[node_id] = (job, node_type.name)
        return node_id

    def terminate_node(self, node_id: str) -> None:
        with self._lock:
            entry = self._nodes.get(node_id)
            self._stopping.add(node_id)
        if entry is not None:
            self.run(["scancel", "--full", "--signal=TERM", entry[0]])

    def non_terminated_nodes(self) -> dict[str, str]:
        queued = set(self.run(["squeue", "-h", "-o", "%i"]).split())
        with self._lock:
            for node_id, (job, _) in list(self._nodes.items()):
                if job not in queued:  # the job ended
                    del self._nodes[node_id]
                    self._stopping.discard(node_id)
            return {i: t for i, (_, t) in self._nodes.items() if i not in self._stopping}

    def jobs(self) -> dict[str, str]:
        """Node id -> Slurm job id of the jobs not ended yet (stopping ones included)."""
        with self._lock:
            return {i: job for i, (job, _) in self._nodes.items()}

    def close(self) -> None:
        for node_id in list(self.jobs()):
            self.terminate_node(node_id)


__all__ = ["JOB_PREFIX", "SlurmProvider"]
