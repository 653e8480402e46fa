"""A node process's lifecycle as its health endpoints and SIGTERM see it: live, ready
(joined the head), draining (leaving on SIGTERM), for ``python -m runtime.node``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections.abc import AsyncIterator

from ..process.worker import Worker
from ..wire import protocol as p
from .health import HealthServer

log = logging.getLogger("runtime.node")
#: How long a draining node waits for its running tasks by default (seconds): under
#: Kubernetes' default terminationGracePeriodSeconds of 30, with room to leave.
DEFAULT_DRAIN_S = 20.0
#: A drained node must have had no work for this long before it leaves: a submitter whose
#: view of the cluster lags may still send one task after the head took the node out.
_QUIET_S = 0.3


def check_args(args: argparse.Namespace) -> None:
    """Refuse a bad drain bound, or an address other members could not dial (SystemExit
    with the reason); resolve ``args.drain_timeout`` to seconds. The nodes of a driver's
    local mesh (started with a parent pipe, not by a host's supervisor, which passes the
    bound on) do not drain unless told: ``runtime.shutdown()`` stops them at once."""
    told = args.drain_timeout is not None or bool(os.environ.get("RUNTIME_DRAIN_S"))
    args.drain_timeout = drain_seconds(args.drain_timeout)
    if args.parent_fd is not None and not told:
        args.drain_timeout = 0.0
    adv = args.advertise_address
    if adv is not None:
        if not adv or adv.strip() != adv or "/" in adv or _is_any(adv):
            raise SystemExit(
                f"--advertise-address must be a reachable host name or IP, got {adv!r}"
            )
        if ":" in adv and not _is_ip(adv):
            raise SystemExit(
                f"--advertise-address takes a host, not HOST:PORT (got {adv!r}): a node "
                "advertises the port it listens on"
            )
    elif _is_any(args.host) and _token_given(args):  # without one, the token refusal comes first
        raise SystemExit(
            f"--host {args.host} listens on every interface, which other members cannot "
            "dial: give --advertise-address with the address they reach this node at"
        )


def drain_flag(args: argparse.Namespace) -> list[str]:
    """The flag a host's supervisor gives its node processes: its resolved drain bound."""
    return ["--drain-timeout", repr(float(args.drain_timeout))]


def _token_given(args: argparse.Namespace) -> bool:
    names = ("RUNTIME_AUTH_TOKEN", "RUNTIME_AUTH_TOKEN_FILE")
    return bool(args.token_file or any(os.environ.get(n) for n in names))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_any(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def drain_seconds(flag: float | None) -> float:
    """The drain bound: ``--drain-timeout``, else ``RUNTIME_DRAIN_S``, else the default."""
    if flag is not None:
        value = flag
    else:
        raw = os.environ.get("RUNTIME_DRAIN_S", "")
        try:
            value = float(raw) if raw else DEFAULT_DRAIN_S
        except ValueError:
            raise SystemExit(f"RUNTIME_DRAIN_S must be a number of seconds, got {raw!r}") from None
    if not value >= 0:
        raise SystemExit(f"the drain timeout must be a number of seconds >= 0, got {value}")
    return value


def add_node_arguments(ap: argparse.ArgumentParser) -> None:
    """The node's flags for running under an orchestrator: the address it advertises,
    health endpoints, drain."""
    ap.add_argument(
        "--advertise-address",
        default=None,
        help="the address other members reach this node at, when it is not the one it "
        "listens on (--host 0.0.0.0 in a container, a node behind NAT); default: --host",
    )
    ap.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="serve HTTP /healthz (live) and /readyz (ready) on this port of --host "
        "(0: any free port), for Kubernetes probes",
    )
    ap.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="on SIGTERM, seconds a node waits for its running tasks to finish before it "
        "leaves (default 20, or RUNTIME_DRAIN_S); a second SIGTERM stops it at once",
    )
    ap.add_argument("--health-fd", type=int, default=None, help=argparse.SUPPRESS)


@contextlib.asynccontextmanager
async def health_server(args: argparse.Namespace, life: NodeLifecycle) -> AsyncIterator[None]:
    """Serve ``/healthz`` and ``/readyz`` while in the block, when ``--health-port`` asks
    (or a supervisor does, with ``--health-fd``: the port it asks this process on)."""
    if args.health_fd is None and args.health_port is None:
        yield
        return
    health = HealthServer(life.live, life.ready)
    if args.health_fd is not None:
        await health.start(sock=socket.socket(fileno=args.health_fd))
    else:
        await health.start(args.host, args.health_port)
    try:
        yield
    finally:
        await health.close()


class NodeLifecycle:
    """What ``/healthz`` and ``/readyz`` answer for one node process, and its drain."""

    def __init__(self, head: bool, drain_s: float, stop: asyncio.Event) -> None:
        self.is_head = head
        self.drain_s = drain_s
        self.stop = stop
        self.worker: Worker | None = None
        self.draining = False
        self._task: asyncio.Task[None] | None = None

    def joined(self, worker: Worker | None) -> None:
        """``worker`` registered with the head (or is it); None: it is gone."""
        self.worker = worker

    def live(self) -> tuple[bool, str]:
        # Answered on the node's own event loop: an answer at all means the loop runs.
        if self.stop.is_set():
            return True, "ok: stopping"
        return True, "ok: the event loop answers"

    def ready(self) -> tuple[bool, str]:
        w = self.worker
        if self.draining:
            return False, "draining: this node is leaving"
        if w is None:
            return False, "not joined: starting, or rejoining the head"
        if w.closing or self.stop.is_set():
            return False, "stopping"
        if w.head is not None:
            return True, f"ok: head at {w.address}"
        conn = w.head_conn
        if conn is None or conn.closed:
            return False, f"not connected to the head at {w.head_address}"
        return True, f"ok: node {w.peer_id} joined the head at {w.head_address}"

    def on_signal(self) -> None:
        """SIGTERM: a node drains (a second signal, or a head, stops at once)."""
        w = self.worker
        no_drain = self.is_head or self.drain_s <= 0
        if self.draining or no_drain or w is None or w.executor is None:
            self.stop.set()
            return
        self.draining = True
        self._task = asyncio.ensure_future(self._drain(w))

    async def _drain(self, w: Worker) -> None:
        """Stop taking work, let running tasks finish (within the bound), then stop."""
        started = time.monotonic()
        deadline = started + self.drain_s
        log.info("draining: no new work here; waiting up to %.0f s for running tasks", self.drain_s)
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.head_request(p.DrainNode(0, w.peer_id)), 5.0)
            executor = w.executor
            assert executor is not None
            quiet_since = time.monotonic()
            while time.monotonic() < deadline and not self.stop.is_set():
                if executor.jobs:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= _QUIET_S:
                    break
                await asyncio.sleep(0.05)
            left = len(executor.jobs)
            if left:
                log.warning("drain timed out with %d tasks still running; stopping", left)
            else:
                log.info("drained in %.1f s; leaving", time.monotonic() - started)
        finally:
            self.stop.set()


__all__ = [
    "DEFAULT_DRAIN_S",
    "NodeLifecycle",
    "add_node_arguments",
    "check_args",
    "drain_flag",
    "drain_seconds",
    "health_server",
]
