"""Core microbenchmark, side by side: this runtime and Ray, same workloads, same run.

The workloads and their names follow Ray's own microbenchmark (`ray microbenchmark`, in
`ray/_private/ray_perf.py`): tasks, 1:1 and n:n actor calls, small and large put/get, wait,
plus cold start, shutdown and the memory of an idle local cluster. Each runtime runs its half
in its own process: this process runs this runtime's half first, then starts the Ray half as a
child inside a network namespace where only loopback is up (`unshare -n`), so Ray cannot reach
anything outside the machine. The table reports both rates and their ratio, oriented so that
a ratio above 1 always means this runtime did better.

Usage (from the repository root)::

    .venv/bin/python benchmarks/core.py                 # both halves, about 2-3 minutes
    .venv/bin/python benchmarks/core.py --quick         # shorter measurements
    .venv/bin/python benchmarks/core.py --only runtime  # or --only ray
    .venv/bin/python benchmarks/core.py --json out.json

Every measurement runs under a deadline: a metric that raises or hangs shows as
``error: ...`` in the table (with its traceback on stderr) and the run goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import importlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any

import numpy as np
import psutil
from _bytecode import compile_runtime

NUM_CPUS = 2
BATCH = 1000  # calls per batch in the "async" metrics, as in Ray's microbenchmark
NN_CLIENTS = 2  # n in "n:n": client actors, each calling every one of n server actors
NN_BATCH = 250  # calls per (client, server) pair per round
LARGE_BYTES = 100 * 1024 * 1024  # the "gigabytes" metrics move a 100 MiB numpy array
WAIT_REFS = 1000
SPILL_STORE = 256 * 1024 * 1024  # the object store of the spilling metric
SPILL_OBJECTS = 10  # of LARGE_BYTES each: a 1 GB working set
CHILD_ENV = "RUNTIME_BENCH_RAY_CHILD"  # set in the namespaced child that runs the Ray half
BACKENDS = ("runtime", "ray")


# ------------------------------------------------------------------------------ the metrics


@dataclass(frozen=True)
class Metric:
    """One row of the table."""

    name: str
    unit: str
    higher_is_better: bool = True
    ray_column: bool = True


METRICS = [
    Metric("single client tasks sync", "calls/s"),
    Metric("single client tasks async", "calls/s"),
    Metric("1:1 actor calls sync", "calls/s"),
    Metric("1:1 actor calls async", "calls/s"),
    Metric("1:1 async-actor calls sync", "calls/s"),
    Metric("1:1 async-actor calls async", "calls/s"),
    Metric("n:n actor calls async", "calls/s"),
    Metric("single client put calls", "calls/s"),
    Metric("single client get calls", "calls/s"),
    Metric("single client put gigabytes", "GB/s"),
    Metric("single client get gigabytes", "GB/s"),
    Metric("single client wait 1k refs", "waits/s"),
    Metric("cold start: init() to first actor result", "s", higher_is_better=False),
    Metric("shutdown()", "s", higher_is_better=False),
    Metric("idle mesh memory (PSS MB)", "MB", higher_is_better=False),
    Metric("1:1 async-actor calls, asyncio driver", "calls/s", ray_column=False),
    Metric("100 MB array to a task in another process", "ms", higher_is_better=False),
    Metric("1 GB put+get through a 256 MB store (spilling)", "s", higher_is_better=False),
    Metric("placement group create+remove", "groups/s"),
    Metric("streaming generator items", "items/s"),
]
METRIC_BY_NAME = {m.name: m for m in METRICS}


# ------------------------------------------------------- remote code, identical for both APIs


STREAM_ITEMS = 1000


def count_up(n: int) -> Any:
    """A generator task: the streaming workload."""
    for i in range(n):  # noqa: UP028 - Ray's streaming calls send(), which range's iterator lacks
        yield i


def small_value() -> bytes:
    """The task every task metric runs."""
    return b"ok"


def last_byte(arr: Any) -> int:
    """The task of the large-argument metric: it reads the array without copying it."""
    return int(arr[-1])


class SmallActor:
    """An actor with a plain method: it runs off the event loop in both runtimes."""

    def small_value(self) -> bytes:
        return b"ok"


class AsyncSmallActor:
    """An actor with an `async def` method: it runs on the actor's event loop."""

    async def small_value(self) -> bytes:
        return b"ok"


class Client:
    """A client actor for "n:n": each round calls every server `n` times, then gets them all."""

    def __init__(self, servers: list[Any], backend: str) -> None:
        self.servers = servers
        self.api = importlib.import_module(backend)

    def small_value_batch(self, n: int) -> int:
        refs = [s.small_value.remote() for s in self.servers for _ in range(n)]
        self.api.get(refs)
        return len(refs)


# ------------------------------------------------------------------------ measuring helpers


class MetricTimeout(BaseException):
    """Raised by the SIGALRM deadline; a BaseException so that no `except Exception` eats it."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Interrupt the main thread with MetricTimeout if the block runs past `seconds`."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise MetricTimeout(f"no result within {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def measure_rate(work: Callable[[], float], duration: float, repeats: int) -> float:
    """Median over `repeats` of (units of work done / seconds), each repeat about `duration` s.

    `work()` does one round and returns how many units (calls, GB, waits) it did. One round
    runs first as a warm-up and is not counted.
    """
    work()
    rates = []
    for _ in range(repeats):
        done = 0.0
        start = time.perf_counter()
        while True:
            done += work()
            elapsed = time.perf_counter() - start
            if elapsed >= duration:
                break
        rates.append(done / elapsed)
    return statistics.median(rates)


async def measure_rate_async(
    work: Callable[[], Awaitable[float]], duration: float, repeats: int
) -> float:
    """`measure_rate` for a coroutine function."""
    await work()
    rates = []
    for _ in range(repeats):
        done = 0.0
        start = time.perf_counter()
        while True:
            done += await work()
            elapsed = time.perf_counter() - start
            if elapsed >= duration:
                break
        rates.append(done / elapsed)
    return statistics.median(rates)


def pss_kib(pid: int) -> int:
    """Proportional set size of one process, from /proc/<pid>/smaps_rollup (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def session_pss_mb() -> float:
    """PSS of this process plus all its descendants (the local cluster it started), in MB."""
    me = psutil.Process()
    pids = [me.pid] + [p.pid for p in me.children(recursive=True)]
    return sum(pss_kib(pid) for pid in pids) * 1024 / 1e6


# ----------------------------------------------------------------------- one runtime's half


@dataclass
class Settings:
    duration: float  # seconds per repeat of a rate measurement
    repeats: int
    metric_timeout: float  # deadline of one metric
    init_timeout: float  # deadline of init/shutdown and of the cold start
    select: tuple[str, ...] = ()  # run only the metrics whose names contain one of these


class Half:
    """Runs every metric on one backend (`runtime` or `ray`) in this process."""

    def __init__(self, backend: str, settings: Settings) -> None:
        self.backend = backend
        self.s = settings
        self.api: ModuleType = importlib.import_module(backend)
        self.results: dict[str, dict[str, Any]] = {}
        self.broken: str | None = None  # why the session could not be recovered, if so
        api = self.api
        self.f = api.remote(small_value)
        self.actor_cls = api.remote(num_cpus=0)(SmallActor)
        self.async_actor_cls = api.remote(num_cpus=0)(AsyncSmallActor)
        self.client_cls = api.remote(num_cpus=0)(Client)
        self.last_byte = api.remote(last_byte)

    # -- session

    def init(self, **options: Any) -> None:
        if self.backend == "ray":
            self.api.init(num_cpus=NUM_CPUS, include_dashboard=False, **options)
        else:
            self.api.init(num_cpus=NUM_CPUS, **options)

    def shutdown_quietly(self) -> None:
        with contextlib.suppress(Exception, MetricTimeout), deadline(self.s.init_timeout):
            self.api.shutdown()

    def recover(self) -> None:
        """After a failed metric: start a fresh session so the next metrics still run."""
        self.shutdown_quietly()
        try:
            with deadline(self.s.init_timeout):
                self.init()
        except (Exception, MetricTimeout) as exc:
            self.broken = f"re-init after a failed metric failed: {exc!r}"
            log(f"[{self.backend}] {self.broken}")

    def kill(self, *handles: Any) -> None:
        for h in handles:
            with contextlib.suppress(Exception):
                self.api.kill(h)

    # -- recording

    def record(self, name: str, value: float) -> None:
        unit = METRIC_BY_NAME[name].unit
        self.results[name] = {"value": value, "unit": unit}
        log(f"[{self.backend}] {name}: {format_value(value, unit)}")

    def record_error(self, name: str, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        tb = "".join(traceback.format_exception(exc))
        self.results[name] = {"error": text, "traceback": tb}
        log(f"[{self.backend}] {name}: error: {text}\n{tb}")

    def run_metric(self, name: str, body: Callable[[], float], timeout: float = 0.0) -> None:
        """Run one metric under a deadline; on failure record it and recover the session."""
        if self.s.select and not any(part in name for part in self.s.select):
            return
        if self.broken:
            self.results[name] = {"error": f"not run: {self.broken}"}
            return
        try:
            with deadline(timeout or self.s.metric_timeout):
                value = body()
        except (Exception, MetricTimeout) as exc:
            self.record_error(name, exc)
            self.recover()
        else:
            self.record(name, value)

    # -- the metrics

    def rate(self, work: Callable[[], float]) -> float:
        return measure_rate(work, self.s.duration, self.s.repeats)

    def cold_start(self) -> float:
        start = time.perf_counter()
        self.init()
        actor = self.actor_cls.remote()
        self.api.get(actor.small_value.remote())
        elapsed = time.perf_counter() - start
        self.kill(actor)
        return elapsed

    def tasks_sync(self) -> float:
        api, f = self.api, self.f
        return self.rate(lambda: len([api.get(f.remote())]))

    def tasks_async(self) -> float:
        api, f = self.api, self.f
        return self.rate(lambda: len(api.get([f.remote() for _ in range(BATCH)])))

    def actor_sync(self, cls: Any) -> float:
        api, a = self.api, cls.remote()
        try:
            return self.rate(lambda: len([api.get(a.small_value.remote())]))
        finally:
            self.kill(a)

    def actor_async(self, cls: Any) -> float:
        api, a = self.api, cls.remote()
        try:
            return self.rate(lambda: len(api.get([a.small_value.remote() for _ in range(BATCH)])))
        finally:
            self.kill(a)

    def nn_actor_calls(self) -> float:
        api = self.api
        servers = [self.actor_cls.remote() for _ in range(NN_CLIENTS)]
        clients = [self.client_cls.remote(servers, self.backend) for _ in range(NN_CLIENTS)]
        try:
            return self.rate(
                lambda: float(sum(api.get([c.small_value_batch.remote(NN_BATCH) for c in clients])))
            )
        finally:
            self.kill(*clients, *servers)

    def put_calls(self) -> float:
        api = self.api
        return self.rate(lambda: len([api.put(0)]))

    def get_calls(self) -> float:
        api, ref = self.api, self.api.put(0)
        return self.rate(lambda: len([api.get(ref)]))

    def put_gigabytes(self) -> float:
        api, arr = self.api, np.ones(LARGE_BYTES // 8, dtype=np.int64)

        def work() -> float:
            api.put(arr)  # the ref is dropped at once, so the store may free the copy
            return arr.nbytes / 1e9

        return self.rate(work)

    def get_gigabytes(self) -> float:
        api = self.api
        arr = np.ones(LARGE_BYTES // 8, dtype=np.int64)
        ref = api.put(arr)
        del arr
        check = api.get(ref)  # once, untimed: the figure must be for the real array
        assert check.nbytes == LARGE_BYTES and check[-1] == 1, "get returned the wrong array"
        del check

        def work() -> float:
            value = api.get(ref)
            return float(value.nbytes) / 1e9

        return self.rate(work)

    def large_arg_ms(self) -> float:
        """A 100 MB array passed straight to a task (both runtimes put it in their object
        store once and the worker maps it); median milliseconds per call."""
        api, f = self.api, self.last_byte
        arr = np.ones(LARGE_BYTES, dtype=np.uint8)
        assert api.get(f.remote(arr)) == 1
        times = []
        for _ in range(max(5, 5 * self.s.repeats)):
            start = time.perf_counter()
            api.get(f.remote(arr))
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    def spill_working_set(self) -> float:
        """A fresh session with a 256 MB store: put ten 100 MB arrays, keeping every ref,
        then get each back and check it; seconds for the whole."""
        self.init(object_store_memory=SPILL_STORE)
        api = self.api
        try:
            arr = np.ones(LARGE_BYTES, dtype=np.uint8)
            start = time.perf_counter()
            refs = []
            for i in range(SPILL_OBJECTS):
                arr[0] = i
                refs.append(api.put(arr))
            for i, ref in enumerate(refs):
                value = api.get(ref)
                assert value[0] == i and value.nbytes == LARGE_BYTES, "wrong array back"
                del value
            elapsed = time.perf_counter() - start
            del refs
            return elapsed
        finally:
            api.shutdown()

    def wait_1k_refs(self) -> float:
        api, f = self.api, self.f

        def work() -> float:
            refs = [f.remote() for _ in range(WAIT_REFS)]
            ready, _ = api.wait(refs, num_returns=WAIT_REFS)
            assert len(ready) == WAIT_REFS
            return 1.0

        return self.rate(work)

    def placement_groups(self) -> float:
        """Create a one-bundle group, wait until it is placed, remove it."""
        util = importlib.import_module(f"{self.backend}.util")

        def work() -> float:
            pg = util.placement_group([{"CPU": 1}])
            self.api.get(pg.ready())
            util.remove_placement_group(pg)
            return 1.0

        return self.rate(work)

    def streaming_items(self) -> float:
        """Items per second out of a streaming generator task, consumed as they come."""
        api = self.api
        gen_fn = api.remote(num_returns="streaming")(count_up)

        def work() -> float:
            n = 0
            for ref in gen_fn.remote(STREAM_ITEMS):
                api.get(ref)
                n += 1
            assert n == STREAM_ITEMS
            return float(n)

        return self.rate(work)

    def idle_memory(self) -> float:
        """A fresh session, left idle for a second, then the PSS of every process in it."""
        self.init()
        try:
            time.sleep(1.0)
            return session_pss_mb()
        finally:
            self.api.shutdown()

    def timed_shutdown(self) -> float:
        start = time.perf_counter()
        self.api.shutdown()
        return time.perf_counter() - start

    def asyncio_driver(self) -> float:
        """Async-actor calls from an asyncio driver: `await asyncio.gather(*refs)`."""
        api, cls, s = self.api, self.async_actor_cls, self.s

        async def main() -> float:
            async with asyncio.timeout(s.metric_timeout), api.connect(num_cpus=NUM_CPUS):
                a = cls.remote()
                await a.small_value.remote()

                async def work() -> float:
                    return len(
                        await asyncio.gather(*[a.small_value.remote() for _ in range(BATCH)])
                    )

                return await measure_rate_async(work, s.duration, s.repeats)

        return asyncio.run(main())

    # -- the whole half

    def run(self) -> dict[str, dict[str, Any]]:
        self.run_metric(
            "cold start: init() to first actor result", self.cold_start, self.s.init_timeout
        )
        if "cold start: init() to first actor result" not in self.results:
            self.init()  # filtered out by --metrics: the session still has to start
        steps: list[tuple[str, Callable[[], float]]] = [
            ("single client tasks sync", self.tasks_sync),
            ("single client tasks async", self.tasks_async),
            ("1:1 actor calls sync", lambda: self.actor_sync(self.actor_cls)),
            ("1:1 actor calls async", lambda: self.actor_async(self.actor_cls)),
            ("1:1 async-actor calls sync", lambda: self.actor_sync(self.async_actor_cls)),
            ("1:1 async-actor calls async", lambda: self.actor_async(self.async_actor_cls)),
            ("n:n actor calls async", self.nn_actor_calls),
            ("single client put calls", self.put_calls),
            ("single client get calls", self.get_calls),
            ("single client put gigabytes", self.put_gigabytes),
            ("single client get gigabytes", self.get_gigabytes),
            ("single client wait 1k refs", self.wait_1k_refs),
            ("100 MB array to a task in another process", self.large_arg_ms),
            ("placement group create+remove", self.placement_groups),
            ("streaming generator items", self.streaming_items),
        ]
        for name, body in steps:
            self.run_metric(name, body)
        self.run_metric("shutdown()", self.timed_shutdown, timeout=self.s.init_timeout)
        if "error" in self.results.get("shutdown()", {"error": "filtered out"}):
            self.shutdown_quietly()
        self.broken = None  # the remaining metrics start sessions of their own
        self.run_metric("idle mesh memory (PSS MB)", self.idle_memory, timeout=self.s.init_timeout)
        self.run_metric(
            "1 GB put+get through a 256 MB store (spilling)",
            self.spill_working_set,
            timeout=self.s.init_timeout + 60,
        )
        if self.backend == "runtime":
            self.run_metric(
                "1:1 async-actor calls, asyncio driver",
                self.asyncio_driver,
                timeout=self.s.metric_timeout + 30,
            )
        return self.results


# -------------------------------------------------------------------- driving the two halves


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def backend_version(backend: str) -> str:
    try:
        module = importlib.import_module(backend)
    except Exception as exc:
        return f"unavailable ({exc})"
    return str(getattr(module, "__version__", "?"))


def run_half_here(backend: str, settings: Settings) -> dict[str, Any]:
    """Run one half in this process and return its JSON-able report."""
    # A last resort if a deadline cannot interrupt something: dump every thread and exit.
    faulthandler.dump_traceback_later(hard_limit(settings), exit=True)
    if backend == "runtime":
        compile_runtime()  # as Ray's wheel is (see _bytecode): no compile in the cold start
    try:
        half = Half(backend, settings)
        results = half.run()
    finally:
        faulthandler.cancel_dump_traceback_later()
    return {"backend": backend, "version": backend_version(backend), "results": results}


def hard_limit(settings: Settings) -> float:
    """The most one half may take even if its per-metric deadlines fail to interrupt it."""
    return 20 * settings.metric_timeout + 4 * settings.init_timeout


def run_ray_isolated(settings: Settings, settings_args: list[str]) -> dict[str, Any]:
    """Run the Ray half as a child in a loopback-only network namespace; return its report."""
    timeout = hard_limit(settings) + 60
    if importlib.util.find_spec("ray") is None:
        return {"backend": "ray", "skipped": "ray is not importable in this environment"}
    unshare = shutil.which("unshare")
    ip = shutil.which("ip")
    if unshare is None or ip is None:
        return {"backend": "ray", "skipped": "`unshare` or `ip` not found: cannot isolate Ray"}
    prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-r", "-n"]
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        out = os.path.join(tmp, "ray.json")
        cmd = [
            *prefix, "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh",
            sys.executable, os.path.abspath(__file__), "--only", "ray", "--json", out,
            *settings_args,
        ]  # fmt: skip
        env = dict(os.environ)
        env.update(
            {
                CHILD_ENV: "1",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_USAGE_STATS_ENABLED": "0",
            }
        )
        log(f"[ray] running in a loopback-only network namespace: {shlex.join(cmd)}")
        try:
            proc = subprocess.run(cmd, env=env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"backend": "ray", "skipped": f"the Ray half ran past {timeout:.0f} s"}
        if os.path.exists(out):
            with open(out) as f:
                report: dict[str, Any] = json.load(f)
            if proc.returncode != 0:
                report.setdefault("note", f"the Ray child exited with status {proc.returncode}")
            return report
        return {
            "backend": "ray",
            "skipped": f"the isolated Ray child exited with status {proc.returncode} "
            "and no results (see its stderr above)",
        }


# --------------------------------------------------------------------------------- the table


def format_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def cell(report: dict[str, Any] | None, metric: Metric) -> tuple[str, float | None]:
    if (
        report is None
        or "skipped" in report
        or (not metric.ray_column and report["backend"] == "ray")
    ):
        return "-", None
    entry = report["results"].get(metric.name)
    if entry is None:
        return "-", None
    if "error" in entry:
        return "error: " + entry["error"].splitlines()[0][:60], None
    return format_value(entry["value"], metric.unit), entry["value"]


def ratio(ours: float | None, theirs: float | None, metric: Metric) -> float | None:
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None
    return ours / theirs if metric.higher_is_better else theirs / ours


def render(ours: dict[str, Any] | None, ray: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The table as text, and the ratios by metric name."""
    our_head = f"runtime {ours['version']}" if ours else "runtime"
    ray_head = f"ray {ray.get('version', '')}".strip() if ray else "ray"
    rows = [("metric", our_head, ray_head, "ratio")]
    ratios: dict[str, Any] = {}
    for metric in METRICS:
        our_text, our_value = cell(ours, metric)
        ray_text, ray_value = cell(ray, metric)
        r = ratio(our_value, ray_value, metric)
        ratios[metric.name] = r
        rows.append((metric.name, our_text, ray_text, f"{r:.2f}x" if r is not None else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "ratio: ours/ray for rates, ray/ours for seconds and MB; above 1 means this runtime is "
        "better.",
        f"{NUM_CPUS} CPUs per cluster; rates are medians of repeats after a warm-up.",
        "",
    ]
    for i, row in enumerate(rows):
        lines.append(
            f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
            f"{row[3]:>{widths[3]}}"
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if ray and "skipped" in ray:
        lines += ["", f"Ray skipped: {ray['skipped']}"]
    elif ray and "note" in ray:
        lines += ["", f"Ray: {ray['note']}"]
    return "\n".join(lines), ratios


# ---------------------------------------------------------------------------------- the CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    parser.add_argument("--only", choices=BACKENDS, help="run one half only")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only the metrics whose names contain TEXT (repeatable)",
    )
    return parser.parse_args(argv)


def settings_for(args: argparse.Namespace) -> Settings:
    select = tuple(args.metrics)
    if args.quick:
        return Settings(0.3, 3, metric_timeout=20.0, init_timeout=60.0, select=select)
    return Settings(1.0, 3, metric_timeout=30.0, init_timeout=60.0, select=select)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_for(args)
    passthrough = ["--quick"] if args.quick else []
    for text in args.metrics:
        passthrough += ["--metrics", text]

    if args.only == "ray" and os.environ.get(CHILD_ENV) == "1":
        # The namespaced child: run the Ray half, write JSON for the parent, print nothing else.
        try:
            report = run_half_here("ray", settings)
        except Exception as exc:  # e.g. `import ray` failing
            report = {"backend": "ray", "skipped": f"{type(exc).__name__}: {exc}"}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        return 0

    ours = run_half_here("runtime", settings) if args.only != "ray" else None
    ray = run_ray_isolated(settings, passthrough) if args.only != "runtime" else None
    table, ratios = render(ours, ray)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runtime": ours, "ray": ray, "ratio": ratios}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
