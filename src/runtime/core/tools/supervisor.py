"""The supervisor of a host's node processes (``python -m runtime.node`` with more than one
process, or ``--head`` with resources): it starts them sharing one ledger of the host's
resources, restarts the ones that crash, answers the host's health probes, and stops them."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from ..common.private import private_dir
from ..process import launcher
from . import lifecycle
from .health import HostHealth


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def node_token(args: argparse.Namespace, state_dir: str | None) -> tuple[bytes | None, bool]:
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


#: A node process refused (exit 2: bad arguments, a wrong token) this soon after the host
#: started ends the host: a configuration error, not a crash to restart.
_FIRST_START_S = 15.0


def supervise(args: argparse.Namespace, argv: list[str], plan: launcher.HostPlan) -> int:
    """Run the host's node processes (and the head, with ``--head``), sharing one ledger of
    the host's resources; restart the ones that crash."""
    child_args = argv
    for flag in ("--procs", "--num-cpus", "--num-gpus", "--memory", "--resources", "--labels"):
        child_args = strip_flag(child_args, flag)
    child_args = [*strip_flag(child_args, "--drain-timeout"), *lifecycle.drain_flag(args)]
    head_sock: socket.socket | None = None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    r, w = launcher.parent_pipe()
    specs: list[tuple[list[str], tuple[int, ...]]] = []
    ledger_dir = private_dir(os.path.join(launcher.base_dir(), "hosts"))
    host = launcher.host_args(plan, ledger_dir)
    if args.head:
        try:
            child_args = shared_token(args, child_args)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        head_sock = socket.create_server(
            (args.host, args.port if args.port is not None else 6380), backlog=1024
        )
        address = "{}:{}".format(*head_sock.getsockname()[:2])
        specs.append(
            ([*child_args, "--num-cpus", "0", "--expect-nodes", str(plan.procs),
              "--listen-fd", str(head_sock.fileno())], (head_sock.fileno(),))
        )  # fmt: skip
        node_args = strip_flag(
            strip_flag(strip_flag(child_args, "--port"), "--head"), "--dashboard-port"
        )
        node_args = strip_flag(node_args, "--client-port")  # the head's alone
        # The first of the host's node processes is the head's own (the job manager runs there).
        for i in range(plan.procs):
            role = ("--role", "head-node:") if i == 0 else ()
            specs.append(([*node_args, "--address", address, *host, *role], ()))
    else:  # with --port P, process i listens on P + i
        port, rest = args.port or 0, strip_flag(child_args, "--port")
        specs.extend(
            ([*rest, "--port", str(port and port + i), *host], ()) for i in range(plan.procs)
        )
    procs: list[subprocess.Popen[bytes] | None] = [None] * len(specs)
    restarts: list[list[float]] = [[] for _ in specs]
    health = None  # each process answers on a loopback port of its own, the host on this one
    if args.health_port is not None:
        alive = lambda i: (q := procs[i]) is not None and q.poll() is None  # noqa: E731
        health = HostHealth(args.host, args.health_port, len(specs), alive, stop.is_set)
        specs = health.wire(specs)

    def start(i: int) -> None:
        extra, fds = specs[i]
        procs[i] = subprocess.Popen(
            launcher.node_command(*extra, "--parent-fd", str(r)), pass_fds=(r, *fds)
        )

    for i in range(len(specs)):
        start(i)
        if i == 0 and args.head:
            time.sleep(0)  # the socket is already listening: nodes can start at once
    started = time.monotonic()
    code = 0
    try:
        while not stop.wait(0.1 if time.monotonic() - started < _FIRST_START_S else 0.5):
            for i, proc in enumerate(procs):
                if proc is None or proc.poll() is None:
                    continue
                first = not restarts[i] and time.monotonic() - started < _FIRST_START_S
                if (
                    proc.returncode == 0
                    or (i == 0 and args.head)
                    or (first and proc.returncode == 2)
                ):
                    # Done, the head gone, or a first start refused (bad arguments, a wrong
                    # token): starting it again would fail the same way.
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
        bound = time.monotonic() + args.drain_timeout + 10  # the nodes drain first
        for proc in procs:
            if proc is not None:
                try:
                    proc.wait(max(0.1, bound - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
        if health is not None:
            health.close()
        os.close(w)
        if head_sock is not None:
            head_sock.close()
        with contextlib.suppress(OSError):
            os.unlink(launcher.ledger_path(ledger_dir, plan.host_id))
    return code


def shared_token(args: argparse.Namespace, argv: list[str]) -> list[str]:
    """``argv`` for the head and the node processes of its host: with the state directory
    and the cluster token fixed here, so that the nodes need not wait for the head to make
    them. A head on a non-loopback address still needs a token given (ValueError)."""
    token, explicit = node_token(args, args.state_dir)
    if explicit:
        return argv
    if not is_loopback(args.host):
        raise ValueError(
            f"refusing to listen on {args.host} without a cluster token: pass --token-file "
            "or set RUNTIME_AUTH_TOKEN (a non-loopback node must never run unauthenticated)"
        )
    state_dir = args.state_dir or launcher.new_state_dir()
    private_dir(state_dir)
    token = launcher.resolve_token(None, state_dir=state_dir)
    path = os.path.join(state_dir, "token")
    if token is None:
        launcher.write_token(state_dir, launcher.new_token())
    return [*strip_flag(argv, "--state-dir"), "--state-dir", state_dir, "--token-file", path]


def strip_flag(argv: list[str], flag: str) -> list[str]:
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


__all__ = ["is_loopback", "node_token", "shared_token", "strip_flag", "supervise"]
