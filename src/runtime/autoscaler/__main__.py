"""``python -m runtime.autoscaler``: run the autoscaler as a process of its own.

Example::

    python -m runtime.autoscaler --address HEAD:6380 --token-file token \\
        --provider local --node-type 'cpu2={"CPU": 2}' --max-workers 4 --idle-timeout 60
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

import runtime

from ._decide import NodeType
from ._kubernetes import KubernetesProvider
from ._monitor import Autoscaler
from ._providers import LocalProcessProvider, NodeProvider
from ._slurm import SlurmProvider


def _node_type(text: str, min_workers: int, max_workers: int) -> NodeType:
    name, sep, spec = text.partition("=")
    try:
        resources = json.loads(spec) if sep else None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--node-type {text!r}: the resources are not JSON: {exc}") from None
    if not name or not isinstance(resources, dict):
        raise SystemExit(f'--node-type takes NAME={{"CPU": 2, ...}}, got {text!r}')
    try:
        return NodeType(name, resources, min_workers=min_workers, max_workers=max_workers)
    except ValueError as exc:
        raise SystemExit(f"--node-type: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.autoscaler", description=__doc__)
    ap.add_argument("--address", required=True, help="HOST:PORT of the head")
    ap.add_argument("--token-file", required=True, help="the cluster token (nodes read it too)")
    ap.add_argument("--provider", choices=["local", "slurm", "kubernetes"], default="local")
    ap.add_argument("--node-type", action="append", required=True,
                    help='NAME={"CPU": 2}: a kind of node to start (repeatable)')  # fmt: skip
    ap.add_argument("--min-workers", type=int, default=0, help="per node type")
    ap.add_argument("--max-workers", type=int, default=10, help="per node type")
    ap.add_argument("--idle-timeout", type=float, default=60.0, help="seconds")
    ap.add_argument("--period", type=float, default=5.0, help="seconds between updates")
    ap.add_argument("--sbatch-arg", action="append", default=[], help="for --provider slurm")
    ap.add_argument(
        "--deployment",
        action="append",
        default=[],
        help="TYPE=DEPLOYMENT: the Deployment of a node type (--provider kubernetes)",
    )
    ap.add_argument("--namespace", default=None, help="for --provider kubernetes")
    args = ap.parse_args(argv)
    types = [_node_type(t, args.min_workers, args.max_workers) for t in args.node_type]
    logging.basicConfig(level=os.environ.get("RUNTIME_LOG_LEVEL", "INFO").upper())
    os.environ["RUNTIME_AUTH_TOKEN_FILE"] = os.path.abspath(args.token_file)
    provider: NodeProvider
    if args.provider == "kubernetes":
        deployments = dict(d.partition("=")[::2] for d in args.deployment)
        if set(deployments) != {t.name for t in types} or not all(deployments.values()):
            raise SystemExit("--provider kubernetes: give --deployment TYPE=NAME per node type")
        provider = KubernetesProvider(deployments, namespace=args.namespace)
    elif args.provider == "slurm":
        provider = SlurmProvider(args.address, token_file=os.path.abspath(args.token_file),
                                 sbatch_args=args.sbatch_arg)  # fmt: skip
    else:
        provider = LocalProcessProvider(args.address, token_file=args.token_file)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    runtime.init(address=args.address, log_to_driver=False)
    scaler = Autoscaler(provider, types, idle_timeout_s=args.idle_timeout, period_s=args.period)
    try:
        scaler.start()
        print(f"autoscaler running against {args.address}", flush=True)
        done.wait()
    finally:
        scaler.stop()
        provider.close()  # the nodes it started go with it (they drain first)
        runtime.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
