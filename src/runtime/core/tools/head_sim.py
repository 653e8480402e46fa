"""Many simulated members against one real head, to measure what a member costs the head.

A few processes each speak for many members: every member has its own TCP connection made
through the real transport (:class:`~runtime.core.wire.transport.Connection`: the mutual
handshake, the framing), registers with ``RegisterNode``, beats (``Heartbeat``) at the
configured interval, reports resources now and then, and reads the views the head pushes.
Churn closes members and joins new ones at a steady rate. A member the head evicts while it
is still beating is a false death; members made to stop beating (``stop``) must be declared
dead within the dead window. ``benchmarks/head_sim.py`` runs it and prints the head's
CPU and memory per member.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psutil

from ..control.views import REFRESH, MemberView, merge
from ..process import launcher
from ..wire import protocol as p
from ..wire.heartbeat import DetectorConfig
from ..wire.transport import Connection


class _Entries(msgspec.Struct, array_like=True, tag=21):
    """A ``ClusterView`` read as the simulator reads it: its entries left encoded (a real
    member decodes them, on its own machine; decoding 2,000 members' views took the
    simulating processes most of their CPU and starved the head of this shared one)."""

    nodes: msgspec.Raw
    departed: list[str]
    version: int
    base: int
    loads: msgspec.Raw


_light: msgspec.msgpack.Decoder[_Entries | p.Reply | p.Shutdown] = msgspec.msgpack.Decoder(
    _Entries | p.Reply | p.Shutdown
)


def _count(raw: msgspec.Raw) -> int:
    """The length of an encoded msgpack array."""
    data = memoryview(raw)
    first = data[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F
    if first == 0xDC:
        return int(struct.unpack_from(">H", data, 1)[0])
    if first == 0xDD:
        return int(struct.unpack_from(">I", data, 1)[0])
    raise ValueError(f"not a msgpack array: {first:#x}")


def _decode_light(header: memoryview) -> p.Message | _Entries:
    """A member's decoder that leaves the view entries encoded (see ``_Entries``)."""
    try:
        return _light.decode(header)
    except msgspec.ValidationError:  # not one of these: decoded as the runtime does
        return p.decode(header)


@dataclass
class Tally:
    """What one simulating process saw."""

    joined: int = 0
    left: int = 0
    join_errors: int = 0
    false_deaths: int = 0
    #: Evicted after its own simulating process had not sent its beats for nearly the dead
    #: window (the simulator starved, not the head wrong): not a false death.
    silent_evictions: int = 0
    #: Connections of joined members that closed with no eviction and no leave (by why).
    lost: dict[str, int] = field(default_factory=dict)
    views: int = 0
    view_entries: int = 0
    whole_views: int = 0
    view_gaps: int = 0
    join_s: list[float] = field(default_factory=list)
    #: Members made to stop beating (their connection kept open), and those of them the
    #: head declared dead, with the seconds from their last beat to the news.
    stopped: int = 0
    stopped_dead: int = 0
    detect_s: list[float] = field(default_factory=list)
    #: Failed joins by where they stopped and why (e.g. ``reply: TimeoutError``).
    join_failures: dict[str, int] = field(default_factory=dict)


class _Member:
    def __init__(self, node_id: str, tally: Tally) -> None:
        self.node_id = node_id
        self.tally = tally
        self.conn: Connection | None = None
        self.reply: asyncio.Future[p.Reply] = asyncio.get_running_loop().create_future()
        self.leaving = False
        self.evicted = False
        #: Made to stop beating: its eviction is the detector's job done, not an error.
        self.stopped = False
        #: The view's version this member holds; with ``keep_view``, the view itself.
        self.view = MemberView()
        self.keep_view = False
        self.nodes: dict[str, p.NodeInfo] = {}
        #: Drop the next delta (as if lost): the member must ask for the whole view.
        self.drop_next_delta = False
        #: Set (and replaced) on every view received.
        self.view_seen = asyncio.Event()
        #: Set once the connection is closed.
        self.gone = asyncio.Event()
        #: When this member last sent a heartbeat (monotonic).
        self.last_beat = time.monotonic()

    def on_message(self, conn: Connection, msg: p.Message | _Entries, raw: memoryview) -> None:
        if isinstance(msg, p.Reply) and not self.reply.done():
            self.reply.set_result(msg)
        elif isinstance(msg, _Entries):  # entries counted, not decoded
            self.tally.views += 1
            self.tally.view_entries += _count(msg.nodes) + _count(msg.loads)
            if msg.base != REFRESH:
                gaps = self.view.gaps
                self.view.receive(conn, msg, self._apply, {})  # type: ignore[arg-type]
                self.tally.view_gaps += self.view.gaps - gaps
            self.view_seen.set()
            self.view_seen = asyncio.Event()
        elif isinstance(msg, p.ClusterView):
            self.tally.views += 1
            self.tally.view_entries += len(msg.nodes)
            if msg.base >= 0 and self.drop_next_delta:
                self.drop_next_delta = False
            else:
                gaps = self.view.gaps
                self.tally.view_entries += len(msg.loads)
                self.view.receive(conn, msg, self._apply, self.nodes)
                self.tally.view_gaps += self.view.gaps - gaps
            self.view_seen.set()
            self.view_seen = asyncio.Event()
        elif isinstance(msg, p.Shutdown) and msg.evicted and not self.leaving:
            self.evicted = True
            config = DetectorConfig.from_env()
            if self.stopped:
                self.tally.stopped_dead += 1
                self.tally.detect_s.append(time.monotonic() - self.last_beat)
            elif time.monotonic() - self.last_beat < config.dead_after - 2 * config.interval:
                self.tally.false_deaths += 1  # it beat within the window: the head erred
            else:
                self.tally.silent_evictions += 1

    def _apply(self, nodes: list[p.NodeInfo], departed: Sequence[str], whole: bool) -> None:
        self.tally.whole_views += whole
        if self.keep_view:  # (else ``nodes`` is the entries encoded)
            self.nodes = merge(self.nodes, nodes, departed, whole)

    def on_close(self, conn: Connection, exc: BaseException | None) -> None:
        self.gone.set()
        if self.reply.done() and not self.leaving and not self.evicted:
            why = type(exc).__name__ if exc is not None else "closed"
            self.tally.lost[why] = self.tally.lost.get(why, 0) + 1
        if not self.reply.done():
            self.reply.set_exception(ConnectionError(f"closed before the reply: {exc}"))
            self.reply.exception()  # retrieved: the join may have stopped waiting already


async def _join(
    address: str,
    token: bytes,
    node_id: str,
    tally: Tally,
    timeout: float,
    *,
    keep_view: bool = False,
) -> _Member | None:
    loop = asyncio.get_running_loop()
    member = _Member(node_id, tally)
    member.keep_view = keep_view
    host, _, port = address.rpartition(":")
    t0 = time.perf_counter()
    stage = "connect"
    try:
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(
                lambda: Connection(
                    local_id=node_id,
                    token=token,
                    on_message=member.on_message,
                    on_close=member.on_close,
                    dialer=True,
                    decode=p.decode if keep_view else _decode_light,
                ),
                host,
                int(port),
            )
            member.conn = conn
            stage = "handshake"
            await conn.authenticated
            stage = "reply"
            res = {"CPU": 1.0, "memory": 1e9}
            where = f"127.0.0.1:{10000 + hash(node_id) % 50000}"  # never dialled
            info = p.NodeInfo(
                node_id, where, False, res, dict(res), os.getpid(), host_id=node_id, slot=1.0
            )
            conn.send(p.RegisterNode(1, info))
            p.unwrap_reply(await member.reply)
    except Exception as exc:  # refused, timed out, closed: counted, the simulation goes on
        tally.join_errors += 1
        why = f"{stage}: {type(exc).__name__}"
        tally.join_failures[why] = tally.join_failures.get(why, 0) + 1
        if member.conn is not None:
            member.conn.abort()
        return None
    tally.joined += 1
    tally.join_s.append(time.perf_counter() - t0)
    return member


@dataclass(frozen=True)
class Plan:
    """What one simulating process does: its members, for how long, its churn."""

    address: str
    token: bytes
    tag: str
    count: int
    seconds: float
    churn: float
    report_every: float
    #: Members that stop beating once all joined (kept connected): each must be declared
    #: dead within the dead window (plus the head's own stalls).
    stop: int = 0


async def _simulate(plan: Plan) -> Tally:
    address, token, tag, count = plan.address, plan.token, plan.tag, plan.count
    churn, report_every = plan.churn, plan.report_every
    tally = Tally()
    interval = DetectorConfig.from_env().interval
    members: list[_Member] = []
    stopped: list[_Member] = []
    serial = 0

    def new_id() -> str:
        nonlocal serial
        serial += 1
        return f"sim-{tag}-{serial:06d}"

    ramp = max(1.0, count / 500)  # join at up to ~500 a second per process
    sem = asyncio.Semaphore(64)

    async def join_one(delay: float) -> None:
        await asyncio.sleep(delay)
        async with sem:
            m = await _join(address, token, new_id(), tally, 30.0)
        if m is not None:
            members.append(m)

    # Members beat from the moment they joined, while the others still join.
    joining: asyncio.Future[list[None]] | None = asyncio.ensure_future(
        asyncio.gather(*(join_one(ramp * i / count) for i in range(count)))
    )
    end = float("inf")
    seq = 0
    next_report = time.monotonic()
    churn_debt = 0.0
    joins: set[asyncio.Task[None]] = set()
    while time.monotonic() < end:
        tick = time.monotonic()
        if joining is not None and joining.done():
            joining = None
            end = tick + plan.seconds
            for m in random.sample(members, min(plan.stop, len(members))):
                members.remove(m)  # no beat, no report, no churn from now
                m.stopped = True
                stopped.append(m)
            tally.stopped = len(stopped)
            print("joined", flush=True)  # this process's members are in: steady from now
        seq += 1
        for m in members:  # every member beats once an interval, on its own connection
            if m.conn is not None:
                m.conn.send(p.Heartbeat(m.node_id, seq))
                m.last_beat = tick
        if tick >= next_report:  # a share of the members report each tick
            next_report = tick + interval
            share = max(1, int(len(members) * interval / report_every))
            for m in random.sample(members, min(share, len(members))):
                if m.conn is not None:
                    free = {"CPU": float(random.random() < 0.5), "memory": 1e9}
                    m.conn.send(p.ReportResources(m.node_id, free))
        churn_debt += churn * interval if joining is None else 0.0
        while churn_debt >= 1 and members:  # one leaves, one joins
            churn_debt -= 1
            gone = members.pop(random.randrange(len(members)))
            gone.leaving = True
            if gone.conn is not None:
                gone.conn.close()
            tally.left += 1
            task = asyncio.ensure_future(join_one(0.0))
            joins.add(task)
            task.add_done_callback(joins.discard)
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - tick)))
    await asyncio.gather(*joins)  # the churn's last joins finish (each within its timeout)
    for m in members + stopped:
        m.leaving = True
        if m.conn is not None:
            m.conn.close()
    await asyncio.sleep(0.2)
    return tally


def _simulator_main(argv: list[str]) -> None:
    """``python -m runtime.core.tools.head_sim PLAN``: simulate, print ``joined`` once the
    members are in, and the tally (JSON) at the end."""
    import resource

    import uvloop

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spec = json.loads(argv[0])
    plan = Plan(**{**spec, "token": bytes.fromhex(spec["token"])})
    tally = uvloop.run(_simulate(plan))
    print(json.dumps(tally.__dict__), flush=True)


def _start_simulator(plan: Plan) -> subprocess.Popen[str]:
    spec = json.dumps({**plan.__dict__, "token": plan.token.hex()})
    cmd = [sys.executable, "-m", "runtime.core.tools.head_sim", spec]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


@dataclass
class HeadSim:
    """A real head process, started apart (no resources of its own)."""

    proc: subprocess.Popen[bytes]
    address: str
    token: bytes
    state_dir: str

    @classmethod
    def start(cls, head_path: str | None = None) -> HeadSim:
        state_dir = tempfile.mkdtemp(prefix="head-sim-")
        token = launcher.new_token()
        token_path = launcher.write_token(state_dir, token)
        sock = socket.create_server(("127.0.0.1", 0), backlog=4096)
        address = "{}:{}".format(*sock.getsockname()[:2])
        cmd = launcher.node_command("--head", "--listen-fd", str(sock.fileno()), "--num-cpus",
                                    "0", "--no-head-file", "--token-file", token_path,
                                    "--state-dir", state_dir)  # fmt: skip
        env = None  # head_path: another tree's sources for the head alone (an A/B)
        if head_path:
            env = {**os.environ, "PYTHONPATH": head_path}
        proc = subprocess.Popen(cmd, pass_fds=(sock.fileno(),), stdin=subprocess.DEVNULL, env=env)
        sock.close()
        return cls(proc, address, token, state_dir)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _run_queue_s(pid: int) -> float:
    """Seconds the process's threads waited for a CPU while runnable (``schedstat``): on a
    crowded machine, the head's CPU share is capped by the others, not by its need."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            pass
    return total


def _rss_mb(proc: psutil.Process) -> float:
    return float(proc.memory_info().rss) / 2**20


def run(members: int, procs: int = 4, seconds: float = 20.0, churn: float = 0.0,
        report_every: float = 5.0, *, stop: int = 0,
        head_path: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``members`` simulated members in ``procs`` processes against a fresh head for
    ``seconds`` after they joined, ``churn`` of them leaving and as many joining a second,
    ``stop`` of them falling silent once joined (the detector must declare them dead)."""
    head = HeadSim.start(head_path)
    workers: list[subprocess.Popen[str]] = []
    try:
        hp = psutil.Process(head.proc.pid)
        asyncio.run(_probe(head))  # the head is up (its imports done) once a member can join
        rss0 = _rss_mb(hp)
        cpu_start = _cpu(hp)
        per = [members // procs + (i < members % procs) for i in range(procs)]
        t0 = time.perf_counter()
        plans = [
            Plan(
                head.address,
                head.token,
                f"{i}",
                n,
                seconds,
                churn / procs,
                report_every,
                stop // procs + (i < stop % procs),
            )
            for i, n in enumerate(per)
        ]
        workers = [_start_simulator(plan) for plan in plans]
        # Steady state: every process's members joined, then the measured window.
        for w in workers:
            assert w.stdout is not None
            if w.stdout.readline().strip() != "joined":
                raise RuntimeError(f"a simulating process failed (exit {w.wait()})")
        joined_s = time.perf_counter() - t0
        rss1 = _rss_mb(hp)
        c0, w0, q0 = _cpu(hp), time.perf_counter(), _run_queue_s(hp.pid)
        join_cpu = (c0 - cpu_start) / joined_s * 100
        sims = [psutil.Process(w.pid) for w in workers]
        s0 = sum(_cpu(s) for s in sims)
        time.sleep(max(1.0, seconds * 0.8))
        wall = time.perf_counter() - w0
        head_cpu = (_cpu(hp) - c0) / wall * 100
        head_waited = (_run_queue_s(hp.pid) - q0) / wall * 100
        sims_cpu = (sum(_cpu(s) for s in sims) - s0) / wall * 100
        tallies = []
        for w in workers:
            text, _ = w.communicate(timeout=seconds + 120)
            lines = [line for line in text.splitlines() if line.startswith("{")]
            if not lines:
                raise RuntimeError(f"a simulating process printed no tally: {text[-500:]!r}")
            tallies.append(Tally(**json.loads(lines[-1])))
        total = Tally()
        for t in tallies:
            total.joined += t.joined
            total.left += t.left
            total.join_errors += t.join_errors
            total.false_deaths += t.false_deaths
            total.silent_evictions += t.silent_evictions
            total.views += t.views
            total.view_entries += t.view_entries
            total.whole_views += t.whole_views
            total.view_gaps += t.view_gaps
            total.stopped += t.stopped
            total.stopped_dead += t.stopped_dead
            total.detect_s += t.detect_s
            for why, n in t.lost.items():
                total.lost[why] = total.lost.get(why, 0) + n
            for why, n in t.join_failures.items():
                total.join_failures[why] = total.join_failures.get(why, 0) + n
        return {
            "members": members,
            "churn per s (joins and as many leaves)": churn,
            "all joined (s)": joined_s,
            "head CPU while joining (% of one core)": join_cpu,
            "head CPU, steady (% of one core)": head_cpu,
            "head waiting for a CPU, steady (% of the time)": head_waited,
            "simulating processes' CPU, steady (% of one core)": sims_cpu,
            "head CPU per member (% of one core)": head_cpu / members,
            "head RSS before (MB)": rss0,
            "head RSS with members (MB)": rss1,
            "head memory per member (KB)": (rss1 - rss0) * 1024 / members,
            "joins": total.joined,
            "leaves": total.left,
            "join errors": total.join_errors,
            "failed joins by stage": total.join_failures,
            "false deaths": total.false_deaths,
            "evicted after its simulator stalled": total.silent_evictions,
            "connections lost otherwise": total.lost,
            "stopped beating": total.stopped,
            "of them declared dead": total.stopped_dead,
            "their last beat to the news, longest (s)": max(total.detect_s, default=None),
            "their last beat to the news, median (s)": (
                statistics.median(total.detect_s) if total.detect_s else None
            ),
            "dead window (s)": DetectorConfig.from_env().dead_after,
            "views received": total.views,
            "view entries received": total.view_entries,
            "whole views received": total.whole_views,
            "view gaps": total.view_gaps,
        }
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        head.stop()


async def _probe(head: HeadSim) -> None:
    tally = Tally()
    for _ in range(60):
        member = await _join(head.address, head.token, f"probe-{os.getpid()}", tally, 5.0)
        if member is not None:
            member.leaving = True
            assert member.conn is not None
            member.conn.close()
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the head at {head.address} did not accept a member")


if __name__ == "__main__":
    _simulator_main(sys.argv[1:])
