"""Scale and per-call speed, side by side with Ray where Ray can run the workload here.

Workloads (each in a fresh child process, so that memory figures start from a clean process):

- ``floor``: a bare uvloop + msgspec echo over loopback TCP between two processes (one
  ``asyncio.Protocol`` each side, length-prefixed frames, a small array-like struct decoded and
  encoded per message): round trips/s with one in flight and with 1,000 in flight. The ceiling
  any runtime's per-call path can reach on this machine, measured in the same run.
- ``percall``: sync actor round trips (``get(a.m.remote())`` in a loop), async actor calls
  from one driver (batches of 5,000, then one ``get``), the same on an ``async def`` method,
  n:n (2 client actors each calling both of 2 server actors), and trivial tasks in batches.
- ``actors-1k``, ``actors-10k``: N actors (``num_cpus=0``) created and each called once,
  from one driver: the rate, and the mesh's memory per actor (PSS delta / N).
- ``tasks-100k``, ``tasks-1m``: N trivial tasks submitted from one driver and all gotten:
  the throughput, the driver's RSS at the end of submission per submitted task (its ref, its
  pending record, its result entry), the driver's peak RSS and the largest process's peak.
- ``nodes-100``: ``init(num_cpus=100)`` (a head and 100 one-CPU node processes): the time
  until all are alive, the CPU all processes spent starting, the mesh's idle CPU (% of one
  core, over 30 s) and its PSS. The head against 2,000 simulated members is
  ``benchmarks/head_sim.py`` (its members need processes of their own).

Ray: a Ray actor is a process (and a task's worker too), so 1k and 10k actors, and 100 nodes
on one machine, are out of its reach here; the table says so instead of a figure. The Ray half
runs under ``/work/rayenv/bin/python`` (``--ray-python``) inside a loopback-only network
namespace (``unshare -n``), with ``RAY_USAGE_STATS_ENABLED=0`` and
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``.

Usage (from the repository root)::

    .venv/bin/python benchmarks/scale.py                       # everything, ~5-8 minutes
    .venv/bin/python benchmarks/scale.py --only runtime        # this runtime only
    .venv/bin/python benchmarks/scale.py --workloads floor,percall --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from _bytecode import compile_runtime

try:
    import psutil
except ImportError:  # Ray's own venv vendors psutil: importing ray puts it on the path
    importlib.import_module("ray")
    psutil = importlib.import_module("psutil")

NUM_CPUS = 2
WORKLOADS = (
    "floor",
    "account",
    "percall",
    "actors-1k",
    "actors-10k",
    "tasks-100k",
    "tasks-1m",
    "nodes-100",
)
#: Workloads Ray cannot run on one 2-core machine, and why (shown in the table).
RAY_OUT_OF_REACH = {
    "floor": "same floor for both (measured once)",
    "account": "this runtime's accounting only",
    "actors-1k": "a Ray actor is a process: 1,000 processes are out of reach here",
    "actors-10k": "a Ray actor is a process: 10,000 processes are out of reach here",
    "tasks-1m": "~1k tasks/s here: a million would take ~15-30 minutes",
    "nodes-100": "one raylet per host: 100 nodes on one machine are out of reach here",
}
RAY_PYTHON = "/work/rayenv/bin/python"
CHILD_TIMEOUT = {"floor": 60, "account": 120, "percall": 180, "actors-1k": 120, "actors-10k": 240}
CHILD_TIMEOUT |= {"tasks-100k": 300, "tasks-1m": 600, "nodes-100": 300}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def median_rate(work: Callable[[], int], seconds: float, repeats: int = 3) -> float:
    """Median over ``repeats`` of units/s, each repeat about ``seconds``; one warm-up round."""
    work()
    rates = []
    for _ in range(repeats):
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            done += work()
        rates.append(done / elapsed)
    return statistics.median(rates)


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree() -> list[psutil.Process]:
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def tree_pss_mb() -> float:
    return sum(pss_kib(p.pid) for p in tree()) / 1024


def tree_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) of every process in this tree, by pid."""
    out = {}
    for p in tree():
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


class Sampler:
    """Samples the RSS of this process and the largest RSS of any process in its tree."""

    def __init__(self, period: float = 0.1) -> None:
        self.period = period
        self.driver_peak = 0
        self.any_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self.period):
            with contextlib.suppress(psutil.Error):
                self.driver_peak = max(self.driver_peak, me.memory_info().rss)
                for p in me.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        self.any_peak = max(self.any_peak, p.memory_info().rss)
        self.any_peak = max(self.any_peak, self.driver_peak)


# --------------------------------------------------------------------------- the floor


FRAME = struct.Struct("<I")


def floor_server(port_w: int) -> None:
    """The echo server process: decodes each frame's struct and encodes it back."""
    import msgspec
    import uvloop

    class Call(msgspec.Struct, array_like=True):
        task_id: bytes
        method: str
        args: bytes

    enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Call)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t, self.buf = transport, bytearray()

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            out, pos = [], 0
            while len(buf) - pos >= 4:
                (n,) = FRAME.unpack_from(buf, pos)
                if len(buf) - pos - 4 < n:
                    break
                msg = dec.decode(memoryview(buf)[pos + 4 : pos + 4 + n])
                body = enc.encode(msg)
                out.append(FRAME.pack(len(body)))
                out.append(body)
                pos += 4 + n
            del buf[:pos]
            if out:
                self.t.write(b"".join(out))

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
        os.write(port_w, str(server.sockets[0].getsockname()[1]).encode() + b"\n")
        await asyncio.Future()

    uvloop.run(main())


def run_floor(seconds: float) -> dict[str, Any]:
    import msgspec
    import uvloop

    class Call(msgspec.Struct, array_like=True):
        task_id: bytes
        method: str
        args: bytes

    r, w = os.pipe()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import scale;"
        " scale.floor_server(int(sys.argv[2]))"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    server = subprocess.Popen([sys.executable, "-c", code, here, str(w)], pass_fds=(w,))
    os.close(w)
    port = int(os.fdopen(r).readline())
    enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Call)
    frame = enc.encode(Call(b"x" * 20, "small_value", b"\x90"))
    frame = FRAME.pack(len(frame)) + frame

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.buf = bytearray()
            self.waiting = 0
            self.done: asyncio.Future[None] | None = None

        def connection_made(self, transport: Any) -> None:
            self.t = transport

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            pos = 0
            while len(buf) - pos >= 4:
                (n,) = FRAME.unpack_from(buf, pos)
                if len(buf) - pos - 4 < n:
                    break
                dec.decode(memoryview(buf)[pos + 4 : pos + 4 + n])
                pos += 4 + n
                self.waiting -= 1
            del buf[:pos]
            if self.waiting == 0 and self.done is not None:
                self.done.set_result(None)

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        _, c = await loop.create_connection(Client, "127.0.0.1", port)

        async def batch(n: int) -> int:
            c.done = loop.create_future()
            c.waiting = n
            c.t.write(frame * n)
            await c.done
            return n

        async def rate(n: int) -> float:
            await batch(n)
            rates = []
            for _ in range(3):
                done, start = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - start) < seconds:
                    done += await batch(n)
                rates.append(done / elapsed)
            return statistics.median(rates)

        return {
            "floor sequential round trips": await rate(1),
            "floor pipelined (1000 in flight)": await rate(1000),
        }

    try:
        return uvloop.run(main())
    finally:
        server.kill()
        server.wait()


# --------------------------------------------------------------------------- accounting


def ctx_switches(pids: list[int]) -> int:
    """Voluntary context switches (a thread blocked and was woken: one hand-off) of every
    thread of ``pids``."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches"):
                            total += int(line.split()[1])
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def account(work: Callable[[], int], seconds: float) -> dict[str, float]:
    """Per unit of ``work``: CPU microseconds and voluntary context switches of the driver and
    of the rest of its process tree, over about ``seconds``."""
    work()
    me = os.getpid()
    others = [p.pid for p in tree()[1:]]
    c0, o0, s0, t0 = (
        cpu_seconds([me]),
        cpu_seconds(others),
        ctx_switches([me]),
        ctx_switches(others),
    )
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += work()
    c1, o1, s1, t1 = (
        cpu_seconds([me]),
        cpu_seconds(others),
        ctx_switches([me]),
        ctx_switches(others),
    )
    return {
        "driver CPU us": (c1 - c0) / done * 1e6,
        "mesh CPU us": (o1 - o0) / done * 1e6,
        "driver wake-ups": (s1 - s0) / done,
        "mesh wake-ups": (t1 - t0) / done,
    }


def run_account(api: Any, seconds: float) -> dict[str, Any]:
    """What one call costs: CPU and wake-ups per call, sequential and pipelined."""
    api.init(num_cpus=NUM_CPUS)
    actor = api.remote(num_cpus=0)(Small)
    a = actor.remote()
    api.get(a.small_value.remote())
    out: dict[str, Any] = {}
    seq = account(lambda: len([api.get(a.small_value.remote())]), seconds)
    pipe = account(lambda: len(api.get([a.small_value.remote() for _ in range(5000)])), seconds)
    for k, v in seq.items():
        out[f"sync actor call: {k} per call"] = v
    for k, v in pipe.items():
        out[f"async actor calls: {k} per call"] = v
    api.shutdown()
    return out


# --------------------------------------------------------------------------- the cluster side


class Small:
    def small_value(self) -> bytes:
        return b"ok"


class AsyncSmall:
    async def small_value(self) -> bytes:
        return b"ok"


class NNClient:
    def __init__(self, servers: list[Any], backend: str) -> None:
        import importlib

        self.servers = servers
        self.api = importlib.import_module(backend)

    def small_value_batch(self, n: int) -> int:
        refs = [s.small_value.remote() for s in self.servers for _ in range(n)]
        self.api.get(refs)
        return len(refs)


def small_value() -> bytes:
    return b"ok"


def start(api: Any, backend: str, num_cpus: int = NUM_CPUS) -> None:
    if backend == "ray":
        api.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR")
    else:
        api.init(num_cpus=num_cpus)


def run_percall(api: Any, backend: str, seconds: float) -> dict[str, Any]:
    start(api, backend)
    actor = api.remote(num_cpus=0)(Small)
    async_actor = api.remote(num_cpus=0)(AsyncSmall)
    client = api.remote(num_cpus=0)(NNClient)
    f = api.remote(small_value)
    out: dict[str, Any] = {}
    a, b = actor.remote(), async_actor.remote()
    api.get([a.small_value.remote(), b.small_value.remote()])
    out["sync actor round trips"] = median_rate(
        lambda: len([api.get(a.small_value.remote())]), seconds
    )
    out["async actor calls (batches of 5000)"] = median_rate(
        lambda: len(api.get([a.small_value.remote() for _ in range(5000)])), seconds
    )
    out["async-actor calls (batches of 5000)"] = median_rate(
        lambda: len(api.get([b.small_value.remote() for _ in range(5000)])), seconds
    )
    servers = [actor.remote() for _ in range(2)]
    clients = [client.remote(servers, backend) for _ in range(2)]
    out["n:n actor calls (2x2)"] = median_rate(
        lambda: sum(api.get([c.small_value_batch.remote(1000) for c in clients])), seconds
    )
    out["tasks async (batches of 1000)"] = median_rate(
        lambda: len(api.get([f.remote() for _ in range(1000)])), seconds
    )
    api.shutdown()
    return out


def run_actors(api: Any, backend: str, n: int) -> dict[str, Any]:
    start(api, backend)
    cls = api.remote(num_cpus=0)(Small)
    warm = cls.remote()
    api.get(warm.small_value.remote())
    before = tree_pss_mb()
    cpu0 = tree_cpu_s()
    t0 = time.perf_counter()
    handles = [cls.remote() for _ in range(n)]
    t1 = time.perf_counter()
    api.get([h.small_value.remote() for h in handles])
    t2 = time.perf_counter()
    cpu1 = tree_cpu_s()
    # CPU per actor holds on a crowded machine, where the rate measures the others' load too.
    cpu = sum(cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1)
    roles: dict[str, float] = {"driver": 0.0, "head": 0.0, "nodes": 0.0}
    for p in tree():
        with contextlib.suppress(psutil.Error):
            role = "driver" if p.pid == os.getpid() else "nodes"
            role = "head" if "--head" in p.cmdline() else role
            roles[role] += cpu1.get(p.pid, 0.0) - cpu0.get(p.pid, 0.0)
    time.sleep(0.5)
    after = tree_pss_mb()
    out = {
        f"{n} actors created and called once (s)": t2 - t0,
        f"{n} actors: rate (actors/s)": n / (t2 - t0),
        f"{n} actors: .remote() of all (s)": t1 - t0,
        f"{n} actors: CPU of all processes per actor (us)": cpu / n * 1e6,
        **{f"{n} actors: CPU of the {r} per actor (us)": s / n * 1e6 for r, s in roles.items()},
        f"{n} actors: mesh memory per actor (KB, PSS)": (after - before) * 1024 / n,
    }
    del handles
    api.shutdown()
    return out


def run_tasks(api: Any, backend: str, n: int) -> dict[str, Any]:
    start(api, backend)
    f = api.remote(small_value)
    api.get([f.remote() for _ in range(100)])
    me = psutil.Process()
    rss0 = me.memory_info().rss
    with Sampler() as s:
        t0 = time.perf_counter()
        refs = [f.remote() for _ in range(n)]
        t1 = time.perf_counter()
        rss1 = me.memory_info().rss
        pending = -1
        if backend == "runtime":
            from runtime.core.objects import refs as _refs

            pending = len(_refs._worker.tasks)  # type: ignore[union-attr]
        api.get(refs)
        t2 = time.perf_counter()
    del refs
    out = {
        f"{n} tasks: submitted in (s)": t1 - t0,
        f"{n} tasks: done in (s)": t2 - t0,
        f"{n} tasks: throughput (tasks/s)": n / (t2 - t0),
        f"{n} tasks: driver bytes per submitted task (RSS at end of submission)": (rss1 - rss0) / n,
        f"{n} tasks: driver peak RSS (MB)": s.driver_peak / 2**20,
        f"{n} tasks: largest process peak RSS (MB)": s.any_peak / 2**20,
    }
    if pending >= 0:
        out[f"{n} tasks: still pending at end of submission"] = pending
    api.shutdown()
    return out


def run_nodes(api: Any, n: int, idle_s: float = 30.0) -> dict[str, Any]:
    t0 = time.perf_counter()
    api.init(num_cpus=n)
    while sum(1 for x in api.nodes() if x.get("Alive") and not x.get("IsDriver")) < n + 1:
        time.sleep(0.02)
    ready = time.perf_counter() - t0
    procs = tree()

    def cpu() -> float:  # user + system seconds of the mesh's processes, from /proc
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def wakeups() -> int:  # voluntary context switches of every thread: timers, beats
        total = 0
        for p in procs:
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{p.pid}/task"):
                    with open(f"/proc/{p.pid}/task/{tid}/status") as f:
                        text = f.read()
                    total += int(text.split("voluntary_ctxt_switches:")[1].split()[0])
        return total

    started = cpu() + sum(psutil.Process().cpu_times()[:2])
    time.sleep(2)
    c0, w0, k0 = cpu(), time.perf_counter(), wakeups()
    time.sleep(idle_s)
    wall = time.perf_counter() - w0
    idle = (cpu() - c0) / wall * 100
    woke = (wakeups() - k0) / wall / len(procs)
    out = {
        f"{n} node processes: ready (s)": ready,
        f"{n} node processes: CPU spent starting, all processes (s)": started,
        f"{n} node processes: idle CPU of the mesh (% of one core, {idle_s:g} s)": idle,
        f"{n} node processes: idle wake-ups per process a second": woke,
        f"{n} node processes: mesh PSS (MB)": tree_pss_mb(),
        f"{n} node processes: processes": len(procs),
    }
    api.shutdown()
    return out


def child(workload: str, backend: str, seconds: float) -> dict[str, Any]:
    if workload == "floor":
        return run_floor(seconds)
    import importlib

    api = importlib.import_module(backend)
    if workload == "percall":
        return run_percall(api, backend, seconds)
    if workload == "account":
        return run_account(api, seconds)
    if workload.startswith("actors-"):
        return run_actors(api, backend, {"1k": 1000, "10k": 10000}[workload[7:]])
    if workload.startswith("tasks-"):
        return run_tasks(api, backend, {"100k": 100_000, "1m": 1_000_000}[workload[6:]])
    if workload == "nodes-100":
        return run_nodes(api, 100)
    raise ValueError(workload)


# --------------------------------------------------------------------------- the parent


def run_child(workload: str, backend: str, seconds: float, ray_python: str) -> dict[str, Any]:
    argv = [os.path.abspath(__file__), "--child", workload, "--backend", backend]
    argv += ["--seconds", str(seconds)]
    env = dict(os.environ)
    if backend == "ray":
        unshare, ip = shutil.which("unshare"), shutil.which("ip")
        if unshare is None or ip is None or not os.path.exists(ray_python):
            return {"skipped": "Ray, unshare or ip not found"}
        prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-r", "-n"]
        cmd = [*prefix, "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh", ray_python, *argv]
        env |= {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    else:
        cmd = [sys.executable, *argv]
    log(f"[{backend}] {workload} ...")
    try:
        proc = subprocess.run(
            cmd,
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT[workload],
        )
    except subprocess.TimeoutExpired:
        return {"error": f"ran past {CHILD_TIMEOUT[workload]} s"}
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        log(proc.stderr[-3000:])
        return {"error": f"exit status {proc.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1])
    for k, v in result.items():
        log(f"[{backend}]   {k}: {v:.4g}" if isinstance(v, float) else f"[{backend}]   {k}: {v}")
    return result


def fmt(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return str(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def render(results: dict[str, dict[str, dict[str, Any]]], note: str) -> str:
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. {note}", ""]
    lines += ["| workload | metric | this runtime | Ray 2.60 |", "|---|---|---|---|"]
    for workload, by_backend in results.items():
        ours, ray = by_backend.get("runtime", {}), by_backend.get("ray", {})
        if "error" in ours:
            lines.append(f"| {workload} | - | error: {ours['error']} | |")
            continue
        for metric, value in ours.items():
            theirs = ray.get(metric, ray.get("skipped", ray.get("error", "")))
            lines.append(f"| {workload} | {metric} | {fmt(value)} | {fmt(theirs)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", choices=("runtime", "ray"))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds per rate repeat")
    ap.add_argument("--json")
    ap.add_argument("--ray-python", default=RAY_PYTHON)
    ap.add_argument("--note", default="", help="e.g. 'under load: 7 other jobs on the machine'")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="runtime", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.backend, args.seconds)), flush=True)
        return 0
    if args.only != "ray":
        compile_runtime()  # as Ray's wheel is (see _bytecode)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for workload in args.workloads.split(","):
        if workload not in WORKLOADS:
            ap.error(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
        row = results[workload] = {}
        for backend in ("runtime", "ray"):
            if args.only and backend != args.only:
                continue
            if backend == "ray" and workload in RAY_OUT_OF_REACH:
                row["ray"] = {"skipped": RAY_OUT_OF_REACH[workload]}
                continue
            row[backend] = run_child(workload, backend, args.seconds, args.ray_python)
    load = os.getloadavg()[0]
    note = f"Load average at the end: {load:.1f} on {os.cpu_count()} cores. {args.note}".strip()
    print(render(results, note))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"note": note, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
