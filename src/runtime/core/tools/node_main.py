"""``python -m runtime.node``: run one node process, or a supervisor of several."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time

import uvloop

from ..client import relay as client_relay
from ..common.exceptions import AuthenticationError, RuntimeBaseError
from ..common.private import private_dir
from ..execution import collector
from ..execution import logs as worker_logs
from ..execution.logs import capture as capture_output
from ..execution.processes import ChildProcesses
from ..objects.store import parse_size
from ..process import launcher
from ..process.limits import die_with_parent, raise_open_file_limit
from ..process.worker import Worker
from ..scheduling.host import HostLedger
from ..scheduling.scheduler import FOR_LABEL, ROLE_LABEL
from ..wire.tls import TlsConfig
from . import dashboard as dashboard_tool
from . import lifecycle, zygote_server
from .supervisor import is_loopback, node_token, supervise

log = logging.getLogger("runtime.node")
#: Failed rejoins in a row after which an evicted node gives up (and exits).
_REJOINS = 20


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m runtime.node",
        description="Start a head (--head) or join a cluster (--address HOST:PORT).",
    )
    role = ap.add_mutually_exclusive_group(required=True)
    role.add_argument("--head", action="store_true", help="start a head node")
    role.add_argument("--address", help="HOST:PORT of the head to join (or 'auto')")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=None, help="port to listen on (head default 6380)")
    ap.add_argument(
        "--num-cpus",
        type=float,
        default=None,
        help="CPUs this host offers (default: all its cores), run by as many node processes",
    )
    ap.add_argument("--num-gpus", type=float, default=0.0, help="GPUs this host offers")
    ap.add_argument("--memory", type=float, default=None, help="bytes of the memory resource")
    ap.add_argument("--resources", default="{}", help="custom resources as JSON, e.g. '{\"x\": 1}'")
    ap.add_argument("--labels", default="{}", help='node labels as JSON, e.g. \'{"zone": "a"}\'')
    ap.add_argument("--token-file", help="file holding the cluster token")
    ap.add_argument("--state-dir", help="directory for the token, logs and state")
    ap.add_argument(
        "--dashboard-port",
        type=int,
        default=None,
        help="serve a read-only dashboard on this port of --host (0: any free port); "
        "it needs the cluster token (head only)",
    )
    ap.add_argument(
        "--object-store-memory",
        help="bytes the object store keeps in memory before spilling to disk, e.g. 268435456 "
        "or 256MB (default: 30%% of RAM, or RUNTIME_OBJECT_STORE_MEMORY)",
    )
    ap.add_argument(
        "--client-port",
        type=int,
        default=None,
        help="accept remote drivers (runtime.init('runtime://HOST:PORT')) on this port of "
        "--host; they need the cluster token (head only)",
    )
    ap.add_argument("--tls-cert", help="this node's certificate (PEM), for TLS on the mesh")
    ap.add_argument("--tls-key", help="the certificate's private key (PEM)")
    ap.add_argument("--tls-ca", help="the cluster CA that signs every member's certificate")
    ap.add_argument(
        "--procs",
        type=int,
        default=None,
        help="node processes sharing the host's resources (default: one per CPU)",
    )
    lifecycle.add_node_arguments(ap)
    ap.add_argument("--host-ledger", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--host-id", default="", help=argparse.SUPPRESS)
    ap.add_argument("--slot", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--expect-nodes", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--parent-fd", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-head-file", action="store_true", help=argparse.SUPPRESS)
    # A process a node started for one actor or one runtime_env (execution.processes): its
    # role ("actor:ID", "env:HASH"), and where it says it joined ("node_id address").
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--fork", type=int, default=0, help=argparse.SUPPRESS)
    return ap


def _resources(args: argparse.Namespace) -> dict[str, float]:
    """The host's resources from the command line (all its cores unless --num-cpus)."""
    try:
        custom = json.loads(args.resources)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--resources is not valid JSON: {exc}") from None
    if not isinstance(custom, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in custom.values()
    ):
        raise SystemExit("--resources must be a JSON object of numbers, e.g. '{\"x\": 1}'")
    cpus = float(os.cpu_count() or 1) if args.num_cpus is None else args.num_cpus
    for name, amount in [("--num-cpus", cpus), ("--num-gpus", args.num_gpus),
                         *((f"resource {k!r}", v) for k, v in custom.items())]:  # fmt: skip
        if not math.isfinite(amount) or amount < 0:
            raise SystemExit(f"{name} must be a finite number >= 0, got {amount}")
    res = {str(k): float(v) for k, v in custom.items()}
    if args.memory is not None:
        res["memory"] = float(args.memory)
    return launcher.host_resources(cpus, args.num_gpus, res)


def _labels(args: argparse.Namespace) -> dict[str, str]:
    try:
        labels = json.loads(args.labels)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--labels is not valid JSON: {exc}") from None
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise SystemExit('--labels must be a JSON object of strings, e.g. \'{"zone": "a"}\'')
    return labels


#: Resources every host reports that do not call for node processes of their own.
_REPORTED_ONLY = ("memory", "object_store_memory")


def _host_plan(args: argparse.Namespace, resources: dict[str, float]) -> launcher.HostPlan:
    cpus = resources.get("CPU", 0.0)
    procs = args.procs if args.procs is not None else max(1, math.ceil(cpus))
    if procs < 1:
        raise SystemExit(f"--procs must be >= 1, got {procs}")
    return launcher.HostPlan(resources, procs, _labels(args))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    lifecycle.check_args(args)  # bad values are refused before anything starts
    raise_open_file_limit()
    if args.fork > 0 and (status := launcher.fork_members(args.fork)) is not None:
        return status  # the process that forked the host's nodes (launcher.FORK_ABOVE)
    tls = (args.tls_cert, args.tls_key, args.tls_ca)
    if any(tls):
        if not all(tls):
            print("error: TLS needs --tls-cert, --tls-key and --tls-ca together", file=sys.stderr)
            return 2
        # The worker (and every process started from here) reads them from the environment.
        os.environ.update(TlsConfig(*tls).export())
    # A local mesh's nodes share the driver's terminal: only warnings there, unless asked.
    quiet = args.parent_fd is not None
    level = os.environ.get("RUNTIME_LOG_LEVEL") or ("WARNING" if quiet else "INFO")
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if worker_logs.json_format():  # RUNTIME_LOG_FORMAT=json: the node's own output as JSON
        worker_logs.use_json_logging()
    if args.object_store_memory is not None:
        try:
            size = parse_size(args.object_store_memory, "--object-store-memory")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        os.environ["RUNTIME_OBJECT_STORE_MEMORY"] = str(size)  # read by the node's store
    if args.host_ledger is None:
        resources = _resources(args)
        plan = _host_plan(args, resources)
        offers = any(k not in _REPORTED_ONLY for k in resources)
        if (args.head and offers) or (not args.head and plan.procs > 1):
            # The head runs apart from the host's node processes, which share its resources.
            return supervise(args, argv if argv is not None else sys.argv[1:], plan)
        if args.head:
            resources, share = {}, ("", None, 0.0)
        else:  # the host's only process: its ledger lives in this process alone
            share = (plan.host_id, None, 0.0)
        labels = plan.labels
    else:
        ledger = HostLedger(args.host_ledger, join=False)
        resources = ledger.total
        ledger.close()
        share = (args.host_id, args.host_ledger, args.slot)
        labels = _labels(args)
    if args.address == "auto":
        try:
            args.address = launcher.find_local_head()["address"]
        except (ConnectionError, PermissionError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    state_dir = args.state_dir
    try:
        token, explicit = node_token(args, state_dir)
    except (OSError, ValueError) as exc:  # a short token, a planted head.json
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(args.host) and not explicit:
        print(
            f"error: refusing to listen on {args.host} without a cluster token: pass --token-file "
            "or set RUNTIME_AUTH_TOKEN (a non-loopback node must never run unauthenticated)",
            file=sys.stderr,
        )
        return 2
    if args.head:
        if state_dir is None:
            state_dir = launcher.new_state_dir()
        private_dir(state_dir)
        if token is None:  # a head restarted on its state dir keeps the cluster's token
            token = launcher.resolve_token(None, state_dir=state_dir)
        if token is None:
            token = launcher.new_token()
            launcher.write_token(state_dir, token)
    elif token is None:
        print(
            "error: no cluster token: pass --token-file or set RUNTIME_AUTH_TOKEN", file=sys.stderr
        )
        return 2
    # Where this node keeps its state and finds its token, for code that runs inside it (the
    # job manager starts drivers that must join this cluster).
    if state_dir is not None:
        os.environ["RUNTIME_NODE_STATE_DIR"] = os.path.abspath(state_dir)
    if args.token_file:
        os.environ["RUNTIME_NODE_TOKEN_FILE"] = os.path.abspath(args.token_file)
    # a node that hosts work forks its zygote now, before its loop (RUNTIME_ZYGOTE_PRELOAD)
    ordinary = not args.role or args.role.startswith("head-node")
    zygote_server.fork_early(ordinary and (share[2] > 0 or any(resources.values())), main)
    try:
        uvloop.run(_serve(args, token, resources, state_dir, share=share, labels=labels))
    except (OSError, RuntimeBaseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, AuthenticationError) else 1  # 2: a wrong token, for good
    return 0


async def _serve(
    args: argparse.Namespace,
    token: bytes,
    resources: dict[str, float],
    state_dir: str | None,
    *,
    share: tuple[str, str | None, float] = ("", None, 0.0),
    labels: dict[str, str] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    life = lifecycle.NodeLifecycle(args.head, args.drain_timeout, stop)
    loop.add_signal_handler(signal.SIGTERM, life.on_signal)  # a node drains first
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with lifecycle.health_server(args, life):
        await _incarnations(args, token, resources, state_dir, life, share=share, labels=labels)


async def _incarnations(
    args: argparse.Namespace,
    token: bytes,
    resources: dict[str, float],
    state_dir: str | None,
    life: lifecycle.NodeLifecycle,
    *,
    share: tuple[str, str | None, float],
    labels: dict[str, str] | None,
) -> None:
    loop, stop = asyncio.get_running_loop(), life.stop
    if args.parent_fd is not None:
        fd = args.parent_fd
        die_with_parent()

        def parent_gone() -> None:
            with contextlib.suppress(OSError):
                if os.read(fd, 1):
                    return
            loop.remove_reader(fd)
            stop.set()

        loop.add_reader(fd, parent_gone)
    listen = socket.socket(fileno=args.listen_fd) if args.listen_fd is not None else None
    port = args.port if args.port is not None else (6380 if args.head else 0)
    rejoining, rejoin_failures = False, 0
    labels = dict(labels or {})
    if args.role:
        kind, _, for_id = args.role.partition(":")
        labels.update({ROLE_LABEL: kind, FOR_LABEL: for_id})
    if args.head:  # the head hosts no user code: no task, actor or bundle lands on it
        labels[ROLE_LABEL] = "head"
    # What the process made while starting (the runtime's modules, functions, classes) lives as
    # long as it: out of the cyclic collector's full passes (10,000 actors: 68 -> 47 us of node
    # CPU per actor; docs/performance.md). After the zygote's fork: it keeps its own as they are.
    gc.freeze()
    collector.tune()  # fewer collections of the calls in flight (execution.collector)
    while True:
        worker = Worker(
            role="head" if args.head else "node",
            token=token,
            host=args.host,
            port=port,
            listen_sock=listen,
            head_address=args.address,
            # The head hosts no user code: what it would offer, a node process it starts offers.
            resources={} if args.head else resources,
            state_dir=state_dir,
            labels=labels or None,
            host_share=share,
            advertise=args.advertise_address,
        )
        left = asyncio.Event()  # the head told us to stop, or went away
        worker.on_head_lost = left.set
        try:
            evicted = await _run_worker(worker, args, state_dir, stop, left, life=life)
        except (Exception, asyncio.CancelledError) as exc:
            this_task = asyncio.current_task()
            cancelled = this_task is not None and this_task.cancelling() > 0
            if not rejoining or cancelled or stop.is_set() or rejoin_failures >= _REJOINS:
                raise  # a first start that fails, or a real cancellation, ends the node
            # Rejoining after an eviction failed half-way (the head was busy, a connection
            # dropped in the handshake): a node that was evicted tries again, within a bound.
            rejoin_failures += 1
            log.warning("rejoining failed (%s: %s); trying again", type(exc).__name__, exc)
            await asyncio.sleep(min(2.0, 0.2 * rejoin_failures))
            continue
        if not evicted:
            return
        rejoining, rejoin_failures = True, 0
        # Declared dead while alive (e.g. paused too long): rejoin as a new node.
        log.warning("this node was evicted by the head; rejoining with a new id")
        listen = None


async def _run_worker(
    worker: Worker,
    args: argparse.Namespace,
    state_dir: str | None,
    stop: asyncio.Event,
    left: asyncio.Event,
    *,
    life: lifecycle.NodeLifecycle,
) -> bool:
    """Run one incarnation of this node; True when it was evicted and should rejoin."""
    # Before it joins, too: a task may arrive in the first loop iteration after it registered.
    capture_output(worker)
    starting = asyncio.ensure_future(worker.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not starting.done():  # told to stop (or the parent died) before joining
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await worker.aclose()
        return False
    try:
        starting.result()
    except BaseException:
        await worker.aclose()
        raise
    capture_output(worker)  # what tasks print goes to the drivers, tagged
    if args.ready_fd is not None:  # the node that started this process waits for this line
        with contextlib.suppress(OSError), os.fdopen(args.ready_fd, "w") as ready:
            ready.write(f"{worker.peer_id} {worker.address}\n")
    head_nodes = None
    if args.head and not args.no_head_file and not args.expect_nodes:
        # A head alone (not a local mesh's, whose driver starts the nodes, nor a host's whose
        # supervisor does): one node process for 0-CPU work and the job manager on its host.
        head_nodes = await _start_head_nodes(worker, args)
    dashboard = None
    if args.head and args.dashboard_port is not None:
        try:
            dashboard = dashboard_tool.load(worker, worker.token)
            await dashboard.start(args.host, args.dashboard_port)
        except ImportError as exc:  # the `dashboard` extra is not installed
            log.warning("no dashboard: %s", exc)
            dashboard = None
        except OSError as exc:  # a taken port must not stop the cluster
            log.warning("no dashboard: cannot listen on port %s: %s", args.dashboard_port, exc)
            dashboard = None
    relay = None
    if args.head and args.client_port is not None:
        try:
            relay = await client_relay.start_relay(worker, args.host, args.client_port)
            print(f"remote drivers: runtime.init('runtime://{relay.address}')", flush=True)
        except OSError as exc:  # a taken port must not stop the cluster
            log.warning("no client port: cannot listen on %s: %s", args.client_port, exc)
    if args.head:
        await _members_joined(worker, args.expect_nodes)
        if not args.no_head_file:
            assert state_dir is not None
            launcher.write_head_file(
                worker.address, state_dir, dashboard.address if dashboard else None
            )
        if args.listen_fd is None:
            print(f"runtime head listening on {worker.address} (state in {state_dir})", flush=True)
            print(f"join with: python -m runtime.node --address {worker.address}", flush=True)
            print("connect with: runtime.init(address='auto')", flush=True)
        if dashboard is not None:
            print(f"dashboard: {dashboard.url()}", flush=True)
    life.joined(worker)
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(left.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        life.joined(None)
        for w in waits:
            w.cancel()
        if args.head and not args.no_head_file:
            launcher.remove_head_file()
        if dashboard is not None:
            await dashboard.close()
        if relay is not None:
            await relay.aclose()
        if head_nodes is not None:  # stopped before the head, so none sees it vanish
            head_nodes.close()
            await asyncio.to_thread(_wait_children, head_nodes)
        await worker.aclose()
    return worker.evicted and not stop.is_set() and not args.head


async def _members_joined(worker: Worker, n: int, timeout: float = 30.0) -> None:
    """Wait (bounded) until ``n`` node processes besides the head have joined: the head of a
    host says it is ready once the host's processes are in (as ``ray start`` returns)."""
    head = worker.head
    deadline = time.monotonic() + timeout
    while head is not None and n > 0 and time.monotonic() < deadline:
        joined = sum(1 for info in head.nodes.values() if not info.is_driver) - 1
        if joined >= n:
            return
        await asyncio.sleep(0.02)


async def _start_head_nodes(worker: Worker, args: argparse.Namespace) -> ChildProcesses:
    """The node process that offers what ``--head`` was given (``--num-cpus``, ``--num-gpus``,
    ``--resources``; maybe nothing, it still hosts 0-CPU work and the job manager on the head's
    host): the head process itself hosts no user code."""
    children = ChildProcesses(worker)
    await children.start(
        "",
        "head",
        args=(
            "--num-cpus", str(_resources(args).get("CPU", 0.0)), "--num-gpus", str(args.num_gpus),
            "--resources", args.resources, "--role", "head-node:",
        ),
    )  # fmt: skip
    return children


def _wait_children(children: ChildProcesses, timeout: float = 10.0) -> None:
    for child in list(children.children.values()):
        try:
            child.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()
