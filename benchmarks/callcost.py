"""What one call costs in CPU, summed over the driver and every process of its mesh, A/B.

On a shared machine call *rates* swing with the load; the CPU seconds a call costs (user +
system time of the driver and of every process it started, per call) swing far less, so they
show what a change to the call path costs. This runs the workloads of ``core.py`` (tasks,
1:1 sync and async actor calls, async-actor calls, n:n) and cold start, each in a fresh
child process per source tree, alternating the trees run after run so both see the same
load::

    python benchmarks/callcost.py --tree base=/work/wt/base/src --tree new=src --rounds 3
    python benchmarks/callcost.py --tree new=src --only "actor calls sync"
    PYTHONPATH=src python benchmarks/callcost.py --parts   # each piece of the path, alone

Each row reports, per tree, the least over rounds of the CPU microseconds per call (and of
that, the driver's part: the run least disturbed by the rest of the machine) and the median
of the calls per second. ``taskset -c N`` in front keeps every process on one core, which
makes the CPU figures steadier still on a shared machine. ``--profile DIR`` also samples the
driver and the mesh with py-spy during each workload (one flame file per process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from _bytecode import compile_tree

WORKLOADS = (
    "cold start",
    "tasks sync",
    "tasks async",
    "1:1 actor calls sync",
    "1:1 actor calls async",
    "1:1 async-actor calls sync",
    "1:1 async-actor calls async",
    "n:n actor calls async",
)


# ------------------------------------------------------------------------------ the child


def _child(names: list[str], seconds: float, profile: str) -> None:
    import psutil

    import runtime

    @runtime.remote(num_cpus=0)
    class Small:
        def small_value(self) -> bytes:
            return b"ok"

    @runtime.remote(num_cpus=0)
    class AsyncSmall:
        async def small_value(self) -> bytes:
            return b"ok"

    @runtime.remote(num_cpus=0)
    class Client:
        def __init__(self, servers: list[Any]) -> None:
            self.servers = servers

        def small_value_batch(self, n: int) -> int:
            refs = [s.small_value.remote() for s in self.servers for _ in range(n)]
            runtime.get(refs)
            return len(refs)

    @runtime.remote
    def small_value() -> bytes:
        return b"ok"

    me = psutil.Process()

    def procs() -> list[psutil.Process]:
        return [me, *me.children(recursive=True)]

    def cpu(ps: list[psutil.Process]) -> tuple[float, float]:
        total = mine = 0.0
        for proc in ps:
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
            if proc.pid == me.pid:
                mine = t.user + t.system
        return total, mine

    out: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    c0 = me.cpu_times()
    runtime.init(num_cpus=2)
    warm = Small.remote()
    runtime.get(warm.small_value.remote(), timeout=60)
    if "cold start" in names:
        c1 = me.cpu_times()
        ps = procs()
        out["cold start"] = {
            "wall_s": time.perf_counter() - t0,
            "driver_cpu_s": c1.user + c1.system - c0.user - c0.system,
            "mesh_cpu_s": sum(sum(p.cpu_times()[:2]) for p in ps[1:]),
        }
    try:
        for name in names:
            if name == "cold start":
                continue
            calls_per, work = _workload(name, runtime, (Small, AsyncSmall, Client), small_value)
            work()  # warm up (and start the actors)
            ps = procs()
            spies = _spy(ps, profile, name) if profile else []
            calls = 0
            total0, mine0 = cpu(ps)
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                work()
                calls += calls_per
            wall = time.perf_counter() - start
            total1, mine1 = cpu(ps)
            for spy in spies:
                spy.wait(timeout=30)
            out[name] = {
                "rate": calls / wall,
                "cpu_us": (total1 - total0) / calls * 1e6,
                "driver_us": (mine1 - mine0) / calls * 1e6,
            }
    finally:
        runtime.shutdown()
    print(json.dumps(out))


def _workload(
    name: str, runtime: Any, classes: tuple[Any, Any, Any], task: Any
) -> tuple[int, Callable[[], None]]:
    small, async_small, client = classes
    if name == "tasks async":
        return 1000, lambda: runtime.get([task.remote() for _ in range(1000)]) and None
    if name == "tasks sync":

        def tasks_sync() -> None:
            for _ in range(200):
                runtime.get(task.remote())

        return 200, tasks_sync
    if name in ("1:1 actor calls sync", "1:1 async-actor calls sync"):
        a = (small if name == "1:1 actor calls sync" else async_small).remote()

        def sync() -> None:
            for _ in range(200):
                runtime.get(a.small_value.remote())

        return 200, sync
    if name in ("1:1 actor calls async", "1:1 async-actor calls async"):
        b = (small if name[4:] == "actor calls async" else async_small).remote()
        return 1000, lambda: runtime.get([b.small_value.remote() for _ in range(1000)]) and None
    if name == "n:n actor calls async":
        servers = [small.remote() for _ in range(2)]
        clients = [client.remote(servers) for _ in range(2)]
        return (
            2 * 2 * 250,
            lambda: runtime.get([c.small_value_batch.remote(250) for c in clients]) and None,
        )
    raise SystemExit(f"unknown workload {name!r}")


def _spy(ps: Any, directory: str, name: str) -> list[subprocess.Popen[bytes]]:
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    os.makedirs(directory, exist_ok=True)
    tag = name.replace(" ", "_").replace(":", "")
    spies = []
    for proc in ps:
        try:
            label = "driver" if proc.pid == os.getpid() else proc.name()
        except Exception:
            continue
        path = os.path.join(directory, f"{tag}.{label}.{proc.pid}.txt")
        cmd = [spy, "record", "--pid", str(proc.pid), "-d", "4", "-r", "250", "-f", "raw"]
        spies.append(
            subprocess.Popen(
                [*cmd, "--nonblocking", "-o", path],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return spies


# ------------------------------------------------------------------------------ the parts


def _per_op(fn: Callable[[], object], n: int) -> float:
    """CPU microseconds per call of ``fn`` (the least of three runs of ``n``)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def parts() -> None:
    """What each piece on the per-call path costs on its own, in this process (CPU us)."""
    import asyncio
    import struct
    import tempfile

    from runtime.core.common.metrics import CALLS_DONE, observe_call
    from runtime.core.execution.events import now_ns, record
    from runtime.core.scheduling.host import HostLedger
    from runtime.core.wire import protocol as p
    from runtime.core.wire.integrity import Seals
    from runtime.core.wire.transport import Connection

    class Sink:
        def write(self, data: bytes) -> None: ...
        def writelines(self, data: list[bytes]) -> None: ...
        def is_closing(self) -> bool:
            return False

    rows: list[tuple[str, float]] = []

    def add(name: str, fn: Callable[[], object], n: int) -> None:
        rows.append((name, _per_op(fn, n)))

    async def wire() -> None:
        msg = p.Reply(1, value=b"x" * 64)
        header = p.encode(msg)
        head = struct.pack(">II", 4 + len(header), len(header)) + header
        for sealed in (False, True):
            label = "sealed" if sealed else "unsealed"

            def conn(sealed: bool = sealed) -> Connection:
                c = Connection(
                    local_id="a",
                    token=b"t" * 32,
                    on_message=lambda *a: None,
                    on_close=lambda *a: None,
                    dialer=False,
                    integrity=sealed,
                )
                c.peer_id = "b"
                c.authenticated.set_result(c)
                return c

            out = conn()
            out._transport = Sink()  # type: ignore[assignment]
            if sealed:
                out._tx = Seals(b"k" * 32)

            def send(out: Connection = out) -> None:
                out.send(msg)
                out._flush()

            add(f"send one frame, {label} (encode, frame, write)", send, 50_000)
            into = conn()
            n = 50_000
            if sealed:
                into._rx, tx = Seals(b"k" * 32), Seals(b"k" * 32)
                writes = [tx.sealed(head) for _ in range(3 * n)]
            else:
                writes = [head] * (3 * n)
            it = iter(writes)

            def receive(into: Connection = into, it: Any = it) -> None:
                data = next(it)
                into.get_buffer(len(data))[: len(data)] = data
                into.buffer_updated(len(data))

            add(f"receive one frame, {label} (parse, check, dispatch)", receive, n)

    asyncio.run(wire())
    seals = Seals(b"k" * 32)
    head = b"x" * 120
    add("seal of a 120-byte write", lambda: seals.sealed(head), 100_000)
    event = (1, 2, 3, 4, "label", 5, False, False, b"task")
    add("timeline: record one call (3 clock reads, one append)",
        lambda: (now_ns(), now_ns(), now_ns(), record(event)), 100_000)  # fmt: skip

    def count() -> None:
        CALLS_DONE[0] += 1
        observe_call(0.0004)

    add("metrics: count one call and its latency", count, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/host.ledger"
        HostLedger(path, {"CPU": 2.0}).close()
        shared, private, cpu = HostLedger(path), HostLedger(None, {"CPU": 2.0}), {"CPU": 1.0}
        add("host ledger: take + give, shared file (flock)",
            lambda: (shared.take(cpu), shared.give(cpu)), 20_000)  # fmt: skip
        add("host ledger: take + give, one process (no file)",
            lambda: (private.take(cpu), private.give(cpu)), 20_000)  # fmt: skip
        add("host ledger: sweep for dead processes", shared.sweep, 2_000)
        shared.close()
    _caller_parts(add)
    for name, us in rows:
        print(f"{name:<58} {us:7.2f} us")


def _caller_parts(add: Callable[[str, Callable[[], object], int], None]) -> None:
    """The caller's bookkeeping of one actor call and of one task, submitted and answered,
    on a stand-in worker whose connections write nothing (the same code in every tree)."""
    import itertools
    from types import SimpleNamespace

    from runtime.core.objects import serialization as ser
    from runtime.core.objects.refs import ReferenceTable
    from runtime.core.submission.actor_calls import ActorCaller
    from runtime.core.submission.tasks import TaskSubmitter
    from runtime.core.wire import protocol as p

    class Link:
        closed = False

        def __init__(self) -> None:
            self.known_functions: set[bytes] = set()

        def send(self, msg: object, buffers: object = ()) -> None: ...

    node = p.NodeInfo("n", "127.0.0.1:1", False, {"CPU": 4.0}, {"CPU": 4.0}, 1)
    host = SimpleNamespace(
        loop=None, refs=ReferenceTable("me", lambda: None), tasks={}, streams={}, load={},
        conns={"n": Link()}, group_nodes={}, view={"n": node}, view_changed=None, spawn=None,
        head_request=None, connect_peer=None, resolve=lambda oid, value, bufs: None,
    )  # fmt: skip
    host.caller = caller = ActorCaller(host)  # type: ignore[arg-type]
    submitter = TaskSubmitter(host)  # type: ignore[arg-type]
    args, _ = ser.serialize(())
    small, raw, ids = p.Value(0, b"\x01"), memoryview(b""), itertools.count()
    for restarts, label in ((0, "max_restarts=0"), (-1, "kept for a resend")):
        state = caller.actor_state(b"actor")
        state.conn = Link()  # type: ignore[assignment]
        state.location = p.ActorLocation(
            b"actor", "n", "127.0.0.1:1", "ALIVE", "C", None, "", 1, False, max_restarts=restarts
        )

        def call() -> None:
            tid = next(ids).to_bytes(16, "big")
            caller.call_actor(p.CallActor(tid, b"actor", "m", args, 1, "me", "x"), [], [tid])
            submitter.on_task_done(None, p.TaskDone(tid, [small]), raw)

        add(f"caller: actor call sent + answered ({label})", call, 50_000)

    def task() -> None:
        tid = next(ids).to_bytes(16, "big")
        msg = p.SubmitTask(tid, b"f", "f", None, args, 1, {"CPU": 1.0}, "me", "x")
        submitter.submit_task(msg, [], bytes, [tid])
        submitter.on_task_done(None, p.TaskDone(tid, [small]), raw)

    add("caller: task placed, sent + answered", task, 50_000)


# ------------------------------------------------------------------------------ the parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="LABEL=SRC_DIR")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per workload and round")
    parser.add_argument("--only", action="append", default=[], help="workloads containing")
    parser.add_argument("--profile", default="", help="py-spy raw samples into this folder")
    parser.add_argument("--parts", action="store_true", help="cost of each piece, alone")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parts:
        parts()
        return
    names = [w for w in WORKLOADS if not args.only or any(o in w for o in args.only)]
    if args.child:
        _child(json.loads(args.child), args.seconds, args.profile)
        return
    trees = [t.split("=", 1) for t in args.tree] or [["here", "src"]]
    for _, src in trees:  # every tree with its bytecode, as an installed package has
        compile_tree(src)
    results: dict[str, dict[str, list[dict[str, float]]]] = {label: {} for label, _ in trees}
    for rnd in range(args.rounds):
        order = trees if rnd % 2 == 0 else trees[::-1]
        for label, src in order:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
            cmd = [sys.executable, __file__, "--child", json.dumps(names)]
            cmd += ["--seconds", str(args.seconds)]
            if args.profile:
                cmd += ["--profile", os.path.join(args.profile, f"{label}.{rnd}")]
            done = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=600, check=False
            )
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            load = os.getloadavg()[0]
            print(f"round {rnd} {label}: load {load:.1f}", file=sys.stderr)
            for name, figures in row.items():
                results[label].setdefault(name, []).append(figures)
    print(f"{'workload':<30}" + "".join(f"{label:>34}" for label, _ in trees))
    for name in names:
        cells = []
        for label, _ in trees:
            runs = results[label].get(name, [])
            if not runs:
                cells.append(f"{'-':>34}")
            elif name == "cold start":
                wall = statistics.median(r["wall_s"] for r in runs)
                drv = statistics.median(r["driver_cpu_s"] for r in runs)
                mesh = statistics.median(r["mesh_cpu_s"] for r in runs)
                cells.append(f"{wall:7.2f} s {drv:5.2f}+{mesh:5.2f} CPU s".rjust(34))
            else:
                cpu = min(r["cpu_us"] for r in runs)
                drv = min(r["driver_us"] for r in runs)
                rate = statistics.median(r["rate"] for r in runs)
                cells.append(f"{cpu:6.1f} us ({drv:5.1f} drv) {rate:8,.0f}/s".rjust(34))
        print(f"{name:<30}" + "".join(cells))


if __name__ == "__main__":
    main()
