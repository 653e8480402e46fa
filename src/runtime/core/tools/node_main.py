"""``python -m runtime.node``: run one node process, or a supervisor of several."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import uvloop

from ..common.exceptions import RuntimeBaseError
from ..common.private import private_dir
from ..execution.logs import capture as capture_output
from ..execution.processes import ChildProcesses
from ..objects.store import parse_size
from ..process import launcher
from ..process.worker import Worker
from ..scheduling.scheduler import FOR_LABEL, ROLE_LABEL
from ..wire.tls import TlsConfig
from .dashboard import Dashboard

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
    ap.add_argument("--num-cpus", type=float, default=None, help="CPUs of this node (default 1)")
    ap.add_argument("--num-gpus", type=float, default=0.0, help="GPUs of this node")
    ap.add_argument("--resources", default="{}", help="custom resources as JSON, e.g. '{\"x\": 1}'")
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
    ap.add_argument("--tls-cert", help="this node's certificate (PEM), for TLS on the mesh")
    ap.add_argument("--tls-key", help="the certificate's private key (PEM)")
    ap.add_argument("--tls-ca", help="the cluster CA that signs every member's certificate")
    ap.add_argument(
        "--procs", type=int, default=1, help="start N node processes under a supervisor"
    )
    ap.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--parent-fd", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-head-file", action="store_true", help=argparse.SUPPRESS)
    # A process a node started for one actor or one runtime_env (execution.processes): its
    # role ("actor:ID", "env:HASH"), and where it says it joined ("node_id address").
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    return ap


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resources(args: argparse.Namespace) -> dict[str, float]:
    try:
        custom = json.loads(args.resources)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--resources is not valid JSON: {exc}") from None
    if not isinstance(custom, dict) or not all(isinstance(v, int | float) for v in custom.values()):
        raise SystemExit("--resources must be a JSON object of numbers, e.g. '{\"x\": 1}'")
    res = {"CPU": float(1 if args.num_cpus is None else args.num_cpus)}
    if args.num_gpus:
        res["GPU"] = float(args.num_gpus)
    res.update({str(k): float(v) for k, v in custom.items()})
    return {k: v for k, v in res.items() if v > 0}


def _token(args: argparse.Namespace, state_dir: str | None) -> tuple[bytes | None, bool]:
    """(token, given explicitly)."""
    if args.token_file:
        return launcher.read_token_file(args.token_file), True
    tok = launcher.resolve_token(None)
    if tok is not None:
        return tok, True
    if args.address:
        try:
            head = launcher.find_local_head()
        except ConnectionError:
            return None, False
        if args.address in ("auto", head["address"]):
            return launcher.resolve_token(None, state_dir=head["state_dir"]), False
    return None, False


#: The soft open-file limit a node raises itself to (within the hard limit): at the common
#: default of 1,024, a flood of idle connections could take every descriptor.
WANTED_OPEN_FILES = 65536


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE towards :data:`WANTED_OPEN_FILES`; the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    return soft


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_open_file_limit()
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
    if args.object_store_memory is not None:
        try:
            size = parse_size(args.object_store_memory, "--object-store-memory")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        os.environ["RUNTIME_OBJECT_STORE_MEMORY"] = str(size)  # read by the node's store
    if args.procs > 1:
        return supervise(args, argv if argv is not None else sys.argv[1:])
    if args.address == "auto":
        try:
            args.address = launcher.find_local_head()["address"]
        except (ConnectionError, PermissionError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    state_dir = args.state_dir
    try:
        token, explicit = _token(args, state_dir)
    except (OSError, ValueError) as exc:  # a short token, a planted head.json
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host) and not explicit:
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
    resources = _resources(args)
    # Where this node keeps its state and finds its token, for code that runs inside it (the
    # job manager starts drivers that must join this cluster).
    if state_dir is not None:
        os.environ["RUNTIME_NODE_STATE_DIR"] = os.path.abspath(state_dir)
    if args.token_file:
        os.environ["RUNTIME_NODE_TOKEN_FILE"] = os.path.abspath(args.token_file)
    try:
        uvloop.run(_serve(args, token, resources, state_dir))
    except (OSError, RuntimeBaseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(
    args: argparse.Namespace, token: bytes, resources: dict[str, float], state_dir: str | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.parent_fd is not None:
        fd = args.parent_fd
        _die_with_parent()

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
    labels: dict[str, str] = {}
    if args.role:
        kind, _, for_id = args.role.partition(":")
        labels = {ROLE_LABEL: kind, FOR_LABEL: for_id}
    if args.head:  # the head hosts no user code: no task, actor or bundle lands on it
        labels = {ROLE_LABEL: "head"}
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
            labels=labels,
        )
        left = asyncio.Event()  # the head told us to stop, or went away
        worker.on_head_lost = left.set
        try:
            evicted = await _run_worker(worker, args, state_dir, stop, left)
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
) -> bool:
    """Run one incarnation of this node; True when it was evicted and should rejoin."""
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
    if args.head and not args.no_head_file:  # not a local mesh's head: its driver starts nodes
        head_nodes = await _start_head_nodes(worker, args)
    dashboard = None
    if args.head and args.dashboard_port is not None:
        dashboard = Dashboard(worker, worker.token)
        try:
            await dashboard.start(args.host, args.dashboard_port)
        except OSError as exc:  # a taken port must not stop the cluster
            log.warning("no dashboard: cannot listen on port %s: %s", args.dashboard_port, exc)
            dashboard = None
    if args.head:
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
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(left.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        if args.head and not args.no_head_file:
            launcher.remove_head_file()
        if dashboard is not None:
            await dashboard.close()
        if head_nodes is not None:  # stopped before the head, so none sees it vanish
            head_nodes.close()
            await asyncio.to_thread(_wait_children, head_nodes)
        await worker.aclose()
    return worker.evicted and not stop.is_set() and not args.head


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


def _die_with_parent() -> None:
    """Besides the parent pipe (read on the loop), ask the kernel for SIGKILL when the
    parent goes, so even a node whose loop is stuck does not outlive it (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent was already gone before prctl took effect
        os._exit(1)


def supervise(args: argparse.Namespace, argv: list[str]) -> int:
    """Run ``--procs`` node processes and restart the ones that crash."""
    child_args = _strip(argv, "--procs")
    head_sock: socket.socket | None = None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    r, w = launcher.parent_pipe()
    specs: list[tuple[list[str], tuple[int, ...]]] = []
    if args.head:
        head_sock = socket.create_server(
            (args.host, args.port if args.port is not None else 6380), backlog=1024
        )
        address = "{}:{}".format(*head_sock.getsockname()[:2])
        specs.append(([*child_args, "--listen-fd", str(head_sock.fileno())], (head_sock.fileno(),)))
        node_args = _strip(_strip(child_args, "--port"), "--head")
        specs.extend(([*node_args, "--address", address], ()) for _ in range(args.procs - 1))
    else:
        specs.extend((child_args, ()) for _ in range(args.procs))
    procs: list[subprocess.Popen[bytes] | None] = [None] * len(specs)
    restarts: list[list[float]] = [[] for _ in specs]

    def start(i: int) -> None:
        extra, fds = specs[i]
        procs[i] = subprocess.Popen(
            launcher.node_command(*extra, "--parent-fd", str(r)), pass_fds=(r, *fds)
        )

    for i in range(len(specs)):
        start(i)
        if i == 0 and args.head:
            time.sleep(0)  # the socket is already listening: nodes can start at once
    code = 0
    try:
        while not stop.wait(0.5):
            for i, proc in enumerate(procs):
                if proc is None or proc.poll() is None:
                    continue
                if proc.returncode == 0 or (i == 0 and args.head):
                    stop.set()
                    code = proc.returncode
                    break
                now = time.monotonic()
                restarts[i] = [t for t in restarts[i] if now - t < 60] + [now]
                if len(restarts[i]) > 5:
                    print(
                        f"node process {i} crashed 5 times in a minute; giving up", file=sys.stderr
                    )
                    stop.set()
                    code = 1
                    break
                print(
                    f"node process {i} exited with {proc.returncode}; restarting", file=sys.stderr
                )
                start(i)
    finally:
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in procs:
            if proc is not None:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        os.close(w)
        if head_sock is not None:
            head_sock.close()
    return code


def _strip(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value (``--flag V`` or ``--flag=V``; bare for --head)."""
    out: list[str] = []
    skip = False
    takes_value = flag not in ("--head",)
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = takes_value
            continue
        if a.startswith(flag + "="):
            continue
        out.append(a)
    return out
