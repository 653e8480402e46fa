"""Data benchmark, side by side: runtime.data and Ray Data, same workloads, same run.

Workloads (the issue's): ``range(10M) -> map_batches(numpy add) -> sum`` in rows/s; read
~1 GB of Parquet ``-> map_batches -> iter_batches`` in MB/s; a group-by mean over 10M rows
in rows/s; and the peak memory of each (the largest sum of RSS over the driver and every
process it started, sampled every 20 ms while the workload runs). Each backend runs in its
own child process with a 2-CPU local cluster; the Ray child runs inside a network namespace
where only loopback is up (``unshare -n``). Ratios are oriented so that > 1 means
runtime.data did better. Cluster start-up is not timed.

Usage (from the repository root)::

    .venv/bin/python benchmarks/data.py            # ~1 GB of Parquet, 10M rows
    .venv/bin/python benchmarks/data.py --quick    # 256 MB of Parquet, 2M rows
    .venv/bin/python benchmarks/data.py --only runtime
    .venv/bin/python benchmarks/data.py --quick --ray-python /work/rayenv/bin/python

The tensor pipeline (``from_numpy`` of 224x224x3 uint8 images -> ``map_batches`` normalise
to float32 -> ``iter_torch_batches``) and the join (``range(n)`` joined with ``range(n/10)``,
8 partitions, then ``count``) are scaled down from the issue's 1 GB and 10M x 1M: 1,600
images (240 MB) and 4M x 400k rows (``--quick``: 400 images, 1M x 100k). The issue's sizes::

    benchmarks/data.py --workloads tensor,join --images 7133 --join-rows 10000000
    benchmarks/data.py --workloads capped --parquet-mb 5120 --store-cap-mb 1024

Peak memory is reported as the peak of the summed RSS and of the largest single process;
``--json`` also gets every process's peak RSS (``per_process_mb``, keyed by pid and the
command at the peak). CPU seconds are the user + system time of the same processes during
the workload (``per_process_cpu_s`` in ``--json``): unlike wall time, they say how much work
a workload took whatever else runs on the machine.
``--parquet-cache DIR`` generates the Parquet files there once and reuses them (delete the
directory afterwards; the default is a temporary directory removed after the run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from _bytecode import compile_runtime

CHILD_ENV = "RUNTIME_BENCH_DATA_CHILD"
#: The workloads, by the key ``--workloads`` takes.
WORKLOADS = frozenset({"range", "parquet", "groupby", "tensor", "join", "capped"})


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ memory sampling


def _tree_rss(
    root: int,
    each: dict[int, tuple[int, str]] | None = None,
    cpu: dict[int, float] | None = None,
) -> tuple[int, int]:
    """RSS bytes of ``root`` and all its descendants (from /proc): the sum, the largest;
    ``each`` (pid -> bytes, command at the peak) keeps the peak of every process (Ray's
    workers rename themselves as they run tasks: one pid, several names); ``cpu`` (pid ->
    seconds) gets each one's CPU time so far (user + system)."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            ticks[int(name)] = (int(fields[11]) + int(fields[12])) / _HZ
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    total, largest, stack = 0, 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
        total, largest = total + rss, max(largest, rss)
        if cpu is not None and pid in ticks:
            cpu[pid] = ticks[pid]
        if each is not None and rss > each.get(pid, (-1, ""))[0]:
            each[pid] = (rss, _command(pid))
    return total, largest


_HZ = os.sysconf("SC_CLK_TCK")


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in args if a]
    return " ".join(os.path.basename(w) if i == 0 else w for i, w in enumerate(words))[:60]


class PeakMemory:
    """Samples the process tree's RSS in a thread while a workload runs: the peak of the sum
    (``peak``), the peak of any one process (``largest``) and of each (``each``); and the CPU
    seconds the tree spent meanwhile (``cpu_s``: user + system time of every process, less
    what each had spent before; a process that exits between two samples loses its last
    20 ms). CPU seconds say how much work a workload took whatever else runs on the machine,
    where its wall time also counts the time it waited for a core."""

    def __init__(self) -> None:
        self.peak = self.largest = 0
        self.each: dict[int, tuple[int, str]] = {}
        self.cpu_before: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.02)

    def _sample(self) -> None:
        total, largest = _tree_rss(os.getpid(), self.each, self.cpu)
        self.peak, self.largest = max(self.peak, total), max(self.largest, largest)

    @property
    def cpu_s(self) -> float:
        return sum(t - self.cpu_before.get(pid, 0.0) for pid, t in self.cpu.items())

    def __enter__(self) -> PeakMemory:
        _tree_rss(os.getpid(), None, self.cpu_before)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# ------------------------------------------------------------------------------ the workloads


def add_one(batch: dict[str, Any]) -> dict[str, Any]:
    return {"id": batch["id"] + 1}


def scale(batch: dict[str, Any]) -> dict[str, Any]:
    batch = dict(batch)
    batch["a"] = batch["a"] * 2.0
    return batch


def with_key(batch: dict[str, Any]) -> dict[str, Any]:
    return {"k": batch["id"] % 100, "v": batch["id"] * 0.5}


def normalise(batch: dict[str, Any]) -> dict[str, Any]:
    return {"data": batch["data"].astype("float32") / 255.0}


def left_side(batch: dict[str, Any]) -> dict[str, Any]:
    return {"id": batch["id"], "a": batch["id"] * 2}


def right_side(batch: dict[str, Any]) -> dict[str, Any]:
    return {"id": batch["id"] * 10, "b": batch["id"] * 0.5}


def run_half(  # noqa: PLR0917 - the sizes of each workload
    backend: str,
    rows: int,
    parquet_dir: str,
    parquet_bytes: int,
    images: int,
    join_rows: int,
    workloads: frozenset[str] = WORKLOADS,
    store_cap: int = 0,
) -> dict[str, Any]:
    if backend == "ray":
        import ray
        from ray import data

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ctx = data.DataContext.get_current()
        ctx.enable_progress_bars = False
    else:
        import runtime
        from runtime import data  # type: ignore[no-redef]

        runtime.init(num_cpus=2)
    results: dict[str, Any] = {}

    def measure(
        key: str, name: str, fn: Callable[[], float], unit_amount: float, unit: str
    ) -> None:
        if key not in workloads:
            return
        try:
            with PeakMemory() as mem:
                t0 = time.perf_counter()
                check = fn()
                elapsed = time.perf_counter() - t0
            results[name] = {
                "rate": unit_amount / elapsed, "unit": unit, "seconds": elapsed,
                "peak_mb": mem.peak / 1e6, "largest_mb": mem.largest / 1e6, "check": check,
                "cpu_s": mem.cpu_s,
                "load": os.getloadavg()[0],
                "per_process_mb": {
                    f"{pid} {cmd}": rss / 1e6 for pid, (rss, cmd) in sorted(mem.each.items())
                },
                "per_process_cpu_s": {
                    f"{pid} {mem.each.get(pid, (0, '?'))[1]}": t - mem.cpu_before.get(pid, 0.0)
                    for pid, t in sorted(mem.cpu.items())
                    if t - mem.cpu_before.get(pid, 0.0) >= 0.05
                },
            }  # fmt: skip
            log(
                f"[{backend}] {name}: {elapsed:.2f} s, {mem.cpu_s:.1f} CPU s, "
                f"peak {mem.peak / 1e6:.0f} MB "
                f"(largest process {mem.largest / 1e6:.0f} MB), load average "
                f"{os.getloadavg()[0]:.1f} at the end"
            )
        except Exception as e:  # a failed workload is reported, the run goes on
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            log(f"[{backend}] {name} failed: {e!r}")

    def range_sum() -> float:
        return float(data.range(rows).map_batches(add_one, batch_format="numpy").sum("id"))

    def parquet() -> float:
        ds = data.read_parquet(parquet_dir).map_batches(scale, batch_format="numpy")
        n = 0
        for batch in ds.iter_batches(batch_size=65536, batch_format="numpy"):
            n += len(batch["a"])
        return float(n)

    def groupby() -> float:
        ds = data.range(rows).map_batches(with_key, batch_format="numpy")
        out = ds.groupby("k").mean("v").take_all()
        return float(len(out))

    import numpy as np

    pixels = np.zeros((0, 224, 224, 3), dtype=np.uint8)

    def tensors() -> float:
        ds = data.from_numpy(pixels).map_batches(normalise, batch_format="numpy")
        n = 0
        for batch in ds.iter_torch_batches(batch_size=64):
            assert tuple(batch["data"].shape[1:]) == (224, 224, 3)
            n += int(batch["data"].shape[0])
        return float(n)

    def join() -> float:
        left = data.range(join_rows).map_batches(left_side, batch_format="numpy")
        right = data.range(join_rows // 10).map_batches(right_side, batch_format="numpy")
        return float(left.join(right, join_type="inner", num_partitions=8, on=("id",)).count())

    # Warm-up (not timed): workers start and import their libraries on both sides.
    data.range(100_000).map_batches(add_one, batch_format="numpy").sum("id")
    measure("range", "range -> map_batches -> sum", range_sum, rows, "rows/s")
    measure(
        "parquet",
        "read_parquet -> map_batches -> iter_batches",
        parquet,
        parquet_bytes / 1e6,
        "MB/s",
    )
    measure("groupby", "groupby(k).mean(v)", groupby, rows, "rows/s")
    if "tensor" in workloads:
        pixels = np.random.default_rng(0).integers(0, 256, (images, 224, 224, 3), dtype=np.uint8)
    measure(
        "tensor",
        f"from_numpy({images} x 224x224x3 uint8) -> map_batches -> iter_torch_batches",
        tensors,
        images,
        "images/s",
    )
    measure(
        "join", f"join({join_rows:,} x {join_rows // 10:,} rows)", join, join_rows, "left rows/s"
    )
    pixels = pixels[:0].copy()  # the images are freed before the capped run
    if "capped" not in workloads:
        if backend == "ray":
            ray.shutdown()
        else:
            runtime.shutdown()
        return {"backend": backend, "results": results}
    # Bigger than the object store: the Parquet pipeline again on a cluster whose stores
    # hold a quarter of the data (scaled down from the 5 GB through a 1 GB store).
    cap = store_cap or max(80 * 1024 * 1024, parquet_bytes // 4)
    if backend == "ray":
        ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=cap)
        data.DataContext.get_current().enable_progress_bars = False
    else:
        runtime.shutdown()
        runtime.init(num_cpus=2, object_store_memory=cap)
    data.range(100_000).map_batches(add_one, batch_format="numpy").sum("id")
    measure(
        "capped",
        f"same Parquet pipeline, object store capped at {cap // 2**20} MB",
        parquet,
        parquet_bytes / 1e6,
        "MB/s",
    )
    if backend == "ray":
        ray.shutdown()
    else:
        runtime.shutdown()
    return {"backend": backend, "results": results}


# ------------------------------------------------------------------------------ orchestration


def generate_parquet(directory: str, target_bytes: int) -> int:
    """Parquet files of float64 columns, ~``target_bytes`` in memory; returns the bytes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    rows_per_file = 2_000_000  # 4 float64 columns: 64 MB per file in memory
    files = max(1, target_bytes // (rows_per_file * 32))
    total = 0
    for i in range(files):
        table = pa.table({c: rng.random(rows_per_file) for c in "abcd"})
        pq.write_table(
            table, os.path.join(directory, f"part_{i:03d}.parquet"), row_group_size=250_000
        )
        total += table.nbytes
    return total


def cached_parquet(directory: str, target_bytes: int) -> int:
    """The bytes in memory of the files ``generate_parquet`` made in ``directory`` for the
    same size, or 0 (then they are generated)."""
    import pyarrow.parquet as pq

    rows_per_file = 2_000_000
    files = max(1, target_bytes // (rows_per_file * 32))
    names = [os.path.join(directory, f"part_{i:03d}.parquet") for i in range(files)]
    os.makedirs(directory, exist_ok=True)
    present = sorted(f for f in os.listdir(directory) if f.endswith(".parquet"))
    if present != sorted(os.path.basename(n) for n in names):
        for f in present:
            os.remove(os.path.join(directory, f))
        return 0
    return sum(pq.ParquetFile(n).metadata.num_rows * 32 for n in names)


def run_child(
    backend: str, argv: list[str], isolate: bool, python: str | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-data-{backend}-") as tmp:
        out = os.path.join(tmp, "out.json")
        cmd = [python or sys.executable, os.path.abspath(__file__), "--child", backend]
        cmd += ["--json", out, *argv]
        env = dict(os.environ, **{CHILD_ENV: "1"})
        if isolate:
            unshare, ip = shutil.which("unshare"), shutil.which("ip")
            if unshare is None or ip is None:
                return {"backend": backend, "skipped": "`unshare` or `ip` not found"}
            prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-r", "-n"]
            cmd = [*prefix, "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh", *cmd]
            env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"})
        try:
            proc = subprocess.run(cmd, env=env, timeout=1800, check=False)
        except subprocess.TimeoutExpired:
            return {"backend": backend, "skipped": "ran past 30 minutes"}
        if os.path.exists(out):
            with open(out) as f:
                report: dict[str, Any] = json.load(f)
            return report
        return {"backend": backend, "skipped": f"the child exited with status {proc.returncode}"}


def table(ours: dict[str, Any], ray: dict[str, Any] | None) -> str:
    lines = [
        "| workload | runtime.data | Ray Data 2.60 | ratio | peak memory (ours / Ray) "
        "| CPU s (ours / Ray) | load (ours / Ray) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, mine in ours.get("results", {}).items():
        theirs = (ray or {}).get("results", {}).get(name) if ray else None
        if "error" in mine:
            lines.append(
                f"| {name} | error: {mine['error'].splitlines()[-1][:120]} | - | - | - | - | - |"
            )
            continue
        a = f"{mine['rate']:,.0f} {mine['unit']} ({mine['seconds']:.2f} s)"
        if theirs and "error" not in theirs:
            b = f"{theirs['rate']:,.0f} {theirs['unit']} ({theirs['seconds']:.2f} s)"
            ratio = f"{mine['rate'] / theirs['rate']:.2f}x"
            mem = f"{mine['peak_mb']:,.0f} / {theirs['peak_mb']:,.0f} MB"
            if "largest_mb" in mine and "largest_mb" in theirs:
                mem += f" (one process: {mine['largest_mb']:,.0f} / {theirs['largest_mb']:,.0f})"
        else:
            b = theirs["error"].splitlines()[-1][:120] if theirs else "-"
            ratio, mem = "-", f"{mine['peak_mb']:,.0f} MB / -"
        loads = [r.get("load") for r in (mine, theirs or {})]
        load = " / ".join("-" if x is None else f"{x:.1f}" for x in loads)
        cpus = [r.get("cpu_s") for r in (mine, theirs or {})]
        cpu = " / ".join("-" if x is None else f"{x:.1f}" for x in cpus)
        lines.append(f"| {name} | {a} | {b} | {ratio} | {mem} | {cpu} | {load} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 MB of Parquet, 2M rows")
    parser.add_argument("--only", choices=["runtime", "ray"])
    parser.add_argument("--json", help="write the report here")
    parser.add_argument(
        "--ray-python", help="the interpreter of a venv with ray[data]==2.60.0 (default: this one)"
    )
    parser.add_argument(
        "--workloads",
        default=",".join(sorted(WORKLOADS)),
        help=f"comma-separated, of {', '.join(sorted(WORKLOADS))} (default: all)",
    )
    parser.add_argument("--images", type=int, help="images of the tensor pipeline")
    parser.add_argument("--join-rows", type=int, help="left rows of the join (right: a tenth)")
    parser.add_argument("--parquet-mb", type=int, help="MB (in memory) of Parquet to read")
    parser.add_argument(
        "--store-cap-mb", type=int, help="the capped run's object store (default: a quarter)"
    )
    parser.add_argument(
        "--parquet-cache",
        help="a directory to generate the Parquet files in once and reuse (delete it after)",
    )
    parser.add_argument("--child", choices=["runtime", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--parquet-dir", help=argparse.SUPPRESS)
    parser.add_argument("--parquet-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if getattr(args, "only", None) != "ray":
        compile_runtime()  # as Ray's wheel is (see _bytecode)
    rows = 2_000_000 if args.quick else 10_000_000
    # Scaled down from the 1 GB of images and 10M x 1M join rows so that one run
    # takes minutes on a shared 2-core machine (normalised float32 images are 4x the input).
    images = args.images or (400 if args.quick else 1600)  # 60 MB / 240 MB of uint8 pixels
    join_rows = args.join_rows or (1_000_000 if args.quick else 4_000_000)
    workloads = frozenset(w.strip() for w in args.workloads.split(",") if w.strip())
    if not workloads <= WORKLOADS:
        parser.error(f"unknown workloads: {sorted(workloads - WORKLOADS)}")
    if args.child:
        report = run_half(
            args.child,
            rows,
            args.parquet_dir,
            args.parquet_bytes,
            images,
            join_rows,
            workloads,
            (args.store_cap_mb or 0) * 1024 * 1024,
        )
        with open(args.json, "w") as f:
            json.dump(report, f)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-data-parquet-") as tmp:
        pdir = args.parquet_cache or tmp
        nbytes = 0
        if workloads & {"parquet", "capped"}:
            mb = args.parquet_mb or (256 if args.quick else 1024)
            nbytes = cached_parquet(pdir, mb * 1024 * 1024) if args.parquet_cache else 0
            if not nbytes:
                nbytes = generate_parquet(pdir, mb * 1024 * 1024)
                log(f"generated {nbytes / 1e6:.0f} MB (in memory) of Parquet in {pdir}")
        passthrough = ["--parquet-dir", pdir, "--parquet-bytes", str(nbytes)]
        passthrough += ["--quick"] if args.quick else []
        passthrough += ["--workloads", ",".join(sorted(workloads))]
        passthrough += ["--images", str(images), "--join-rows", str(join_rows)]
        passthrough += ["--store-cap-mb", str(args.store_cap_mb)] if args.store_cap_mb else []
        ours = run_child("runtime", passthrough, isolate=False) if args.only != "ray" else {}
        ray = None
        if args.only != "runtime":
            if args.ray_python is None and importlib.util.find_spec("ray") is None:
                ray = {"backend": "ray", "skipped": "ray is not installed"}
            else:
                ray = run_child("ray", passthrough, isolate=True, python=args.ray_python)
    if args.only == "ray":
        print(json.dumps(ray, indent=1))
        return 0
    if ray and "skipped" in ray:
        log(f"Ray half skipped: {ray['skipped']}")
    print(table(ours, ray))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runtime": ours, "ray": ray}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
