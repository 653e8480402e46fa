"""Serve benchmark, side by side: this runtime's Serve and Ray Serve 2.60, same workloads.

Workloads (the same deployments on both, 2 CPUs each):

- time to deploy an app (``serve.run`` of a trivial deployment, Serve already started);
- HTTP requests/s and p50/p99 latency of a trivial JSON deployment (2 replicas,
  ``max_ongoing_requests=100``) at client concurrency 1, 16, 64, 256, 512 and 1,024;
- HTTP requests/s of a batched numpy model (``@serve.batch(max_batch_size=16)``) at 64;
- HTTP requests/s of a multiplexed deployment (``@serve.multiplexed``, 2 replicas holding
  at most 2 models each) at 64, the connections spread over 4 model ids by the
  ``serve_multiplexed_model_id`` header (each connection keeps its id);
- gRPC unary requests/s and p50/p99 at 64 concurrent calls (one channel, the no-op
  deployment's ``Ping`` method answering a ``Ping`` RPC of a service generated with
  grpcio-tools; both Serves' gRPC proxies, routed by the ``application`` metadata);
- handle calls/s from the driver (``await asyncio.gather`` of 1,000 ``handle.remote()``).

The HTTP load comes from a separate client process: ``wrk`` (Debian's ``wrk`` package, C,
two threads) where it is installed, else an aiohttp client on uvloop (``--client`` picks);
either keeps a fixed number of connections, each sending its next request when the last one
is answered (closed loop), after a warm-up that opens them. Both Serves are measured with
the same client, on the same 2 cores as the cluster, as on a single machine. The client's
own cost matters on 2 cores: wrk spends ~20 us of CPU per request, the aiohttp client
110-310 us (more at 1,024 connections), which this runtime's side would otherwise share
its cores with. Ray runs in a child process inside a network namespace where only loopback
is up (``unshare -n``), like benchmarks/core.py does.

Both Serves start with ``proxy_location="EveryNode"`` (Ray Serve's default; this runtime's
default is one proxy for the cluster, ``HeadOnly``): Ray's single node gets one proxy, this
runtime's two node processes get one each, sharing the port (``SO_REUSEPORT``), each
preferring the replica in its own process.

Ray may live in another virtual environment than this runtime (it is never a dependency):
``--ray-python`` (or ``RAY_PYTHON``) names its interpreter, which runs the Ray half; the
load generator of both halves runs on this script's own interpreter, so both are measured
with the same client.

Usage (from the repository root)::

    .venv/bin/python benchmarks/serve.py            # both, about 3 minutes
    RAY_PYTHON=/path/to/rayenv/bin/python .venv/bin/python benchmarks/serve.py
    .venv/bin/python benchmarks/serve.py --quick    # shorter measurements
    .venv/bin/python benchmarks/serve.py --only runtime   # or --only ray
    .venv/bin/python benchmarks/serve.py --only runtime --http-only --concurrency 64,1024
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib.util
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

from _bytecode import compile_runtime

CONCURRENCY = (1, 16, 64, 256, 512, 1024)
MODEL_IDS = ("m0", "m1", "m2", "m3")
NUM_CPUS = 2
CHILD_ENV = "RUNTIME_BENCH_RAY_CHILD"
#: The interpreter that runs the load generator (the parent's, passed to the Ray child).
LOADGEN_ENV = "RUNTIME_BENCH_LOADGEN_PYTHON"
#: Where the parent generated the gRPC service's modules (passed to the Ray child).
GRPC_DIR_ENV = "RUNTIME_BENCH_GRPC_DIR"
#: The HTTP load generator both halves use: "wrk" or "aiohttp" (passed to the Ray child).
CLIENT_ENV = "RUNTIME_BENCH_CLIENT"
#: The concurrencies of the HTTP no-op rows (passed to the Ray child).
CONCURRENCY_ENV = "RUNTIME_BENCH_CONCURRENCY"
#: Only the HTTP no-op rows (passed to the Ray child).
HTTP_ONLY_ENV = "RUNTIME_BENCH_HTTP_ONLY"
PROTO = """
syntax = "proto3";
package bench;
service Bench { rpc Ping (Msg) returns (Msg); }
message Msg { string msg = 1; }
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------- the load generator


async def _load(
    url: str, concurrency: int, duration: float, body: bytes | None, multiplexed: bool = False
) -> dict:
    import aiohttp

    _raise_open_files()
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(i: int) -> None:
            nonlocal errors
            headers = {"serve_multiplexed_model_id": MODEL_IDS[i % len(MODEL_IDS)]}
            if not multiplexed:
                headers = {}
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    if body is None:
                        async with session.get(url, headers=headers) as resp:
                            await resp.read()
                            ok = resp.status == 200
                    else:
                        async with session.post(url, data=body) as resp:
                            await resp.read()
                            ok = resp.status == 200
                except Exception:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        # Warm the connections up first (not measured).
        warm_until = time.perf_counter() + min(0.5, duration / 4)
        while time.perf_counter() < warm_until:
            warm = {"serve_multiplexed_model_id": MODEL_IDS[0]} if multiplexed else {}
            async with session.get(url, headers=warm) as resp:
                await resp.read()
        stop_at = time.perf_counter() + duration
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return _summary(latencies, elapsed, errors)


async def _grpc_load(target: str, concurrency: int, duration: float) -> dict:
    import bench_pb2
    import bench_pb2_grpc
    import grpc
    import grpc.aio

    latencies: list[float] = []
    errors = 0
    metadata = (("application", "noop"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = bench_pb2_grpc.BenchStub(channel)
        request = bench_pb2.Msg(msg="x")
        for _ in range(20):  # warm up (not measured)
            await stub.Ping(request, metadata=metadata, timeout=60)
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    await stub.Ping(request, metadata=metadata, timeout=60)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return _summary(latencies, elapsed, errors)


def _summary(latencies: list[float], elapsed: float, errors: int) -> dict:
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50) * 1000,
        "p99_ms": pct(0.99) * 1000,
        "errors": errors,
        "n": len(latencies),
    }


def grpc_modules() -> str | None:
    """The folder with the generated ``bench_pb2`` modules (made here if need be), on
    ``sys.path`` and ``PYTHONPATH`` (for the node processes); None without grpcio-tools."""
    folder = os.environ.get(GRPC_DIR_ENV)
    if not folder:
        try:
            from grpc_tools import protoc
        except ImportError:
            return None
        folder = tempfile.mkdtemp(prefix="bench-serve-grpc-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        with open(os.path.join(folder, "bench.proto"), "w") as f:
            f.write(PROTO)
        args = ["protoc", f"-I{folder}", f"--python_out={folder}", f"--grpc_python_out={folder}"]
        if protoc.main([*args, "bench.proto"]) != 0:
            return None
        os.environ[GRPC_DIR_ENV] = folder
    if folder not in sys.path:
        sys.path.insert(0, folder)
    paths = os.environ.get("PYTHONPATH", "")
    if folder not in paths.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (folder, paths) if p)
    return folder


def run_grpc_load(target: str, concurrency: int, duration: float) -> dict:
    """The gRPC load generator in its own process (this script's interpreter)."""
    python = os.environ.get(LOADGEN_ENV) or sys.executable
    cmd = [python, os.path.abspath(__file__), "--grpc-loadgen", target, str(concurrency),
           str(duration)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


#: wrk's script: the request (method, body, the multiplexed model id) and, at the end, the
#: figures as one JSON line.
WRK_SCRIPT = """
local ids = {%(ids)s}
local n = 0
wrk.method = "%(method)s"
%(body)s
%(request)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"duration_us": %%d, "requests": %%d, "connect": %%d, "read": %%d, "write": %%d, ' ..
    '"status": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
#: One model id per wrk thread (one thread per id): each connection keeps asking for the
#: same model, as each connection of the aiohttp client does.
MULTIPLEXED_REQUEST = """
setup = function(thread)
  n = n + 1
  thread:set("model", ids[(n - 1) % #ids + 1])
end
init = function(args)
  wrk.headers["serve_multiplexed_model_id"] = model
end
"""


def _raise_open_files() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 1,024 connections need more
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_wrk(
    url: str, concurrency: int, duration: float, body: bytes | None, multiplexed: bool
) -> dict:
    """``wrk`` at ``concurrency`` connections for ``duration`` s, after a 1 s warm-up run."""
    _raise_open_files()
    script = WRK_SCRIPT % {
        "ids": ", ".join(f'"{m}"' for m in MODEL_IDS),
        "method": "POST" if body else "GET",
        "body": (
            f"wrk.body = {json.dumps(body.decode())}\n"
            'wrk.headers["Content-Type"] = "application/json"'
            if body
            else ""
        ),
        "request": MULTIPLEXED_REQUEST if multiplexed else "",
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        threads = len(MODEL_IDS) if multiplexed else min(2, concurrency)
        base = ["wrk", f"-t{threads}", f"-c{concurrency}", "--timeout", "60s",
                "-s", f.name]  # fmt: skip
        subprocess.run([*base, "-d1s", url], capture_output=True, timeout=120, check=True)
        out = subprocess.run(
            [*base, f"-d{max(1, round(duration))}s", url],
            capture_output=True,
            text=True,
            timeout=duration + 120,
            check=True,
        )
    finally:
        os.unlink(f.name)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    errors = sum(res[k] for k in ("connect", "read", "write", "status", "timeout"))
    ok = res["requests"] - res["status"]
    return {
        "rps": ok / (res["duration_us"] / 1e6),
        "p50_ms": res["p50_us"] / 1000,
        "p99_ms": res["p99_us"] / 1000,
        "errors": errors,
        "n": ok,
        "client": "wrk",
    }


def client() -> str:
    """The HTTP load generator: --client, else wrk where it is installed, else aiohttp."""
    chosen = os.environ.get(CLIENT_ENV)
    if chosen:
        return chosen
    return "wrk" if shutil.which("wrk") else "aiohttp"


def run_load(
    url: str,
    concurrency: int,
    duration: float,
    body: bytes | None = None,
    multiplexed: bool = False,
) -> dict:
    """Run the load generator in its own process; returns its measurements."""
    if client() == "wrk":
        return run_wrk(url, concurrency, duration, body, multiplexed)
    python = os.environ.get(LOADGEN_ENV) or sys.executable
    cmd = [python, os.path.abspath(__file__), "--loadgen", url, str(concurrency),
           str(duration)] + (["--body", body.decode()] if body else [])  # fmt: skip
    if multiplexed:
        cmd.append("--multiplexed")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- the workloads


def workloads(serve: Any, backend: str) -> tuple[Any, Any, Any]:
    """The deployments, defined against the given Serve module (ours or Ray's)."""
    import numpy as np

    # num_cpus=0: Ray gives each replica one CPU by default, and the cluster has only two.
    options = {"num_replicas": 2, "max_ongoing_requests": 100, "ray_actor_options": {"num_cpus": 0}}

    @serve.deployment(**options)
    class NoOp:
        async def __call__(self, request: Any) -> dict:
            return {"ok": True}

        async def call(self, x: int) -> int:
            return x

        async def Ping(self, request: Any) -> Any:  # the gRPC method of the same name
            import bench_pb2

            return bench_pb2.Msg(msg=request.msg)

    @serve.deployment(**options)
    class Model:
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.w = rng.standard_normal((64, 64)).astype(np.float32)

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
        async def predict(self, rows: list) -> list:
            x = np.stack(rows)
            return (x @ self.w).sum(axis=1).tolist()

        async def __call__(self, request: Any) -> dict:
            body = await request.json()
            return {"y": await self.predict(np.asarray(body["x"], dtype=np.float32))}

    @serve.deployment(**options)
    class Models:
        @serve.multiplexed(max_num_models_per_replica=2)
        async def get_model(self, model_id: str) -> Any:
            rng = np.random.default_rng(int(model_id[1:]))
            return rng.standard_normal(64).astype(np.float32)

        async def __call__(self, request: Any) -> dict:
            model = await self.get_model(serve.get_multiplexed_model_id())
            return {"y": float(model.sum())}

    return NoOp, Model, Models


def measure(backend: str, quick: bool) -> dict[str, Any]:
    duration = 2.0 if quick else 5.0
    results: dict[str, Any] = {"client": client()}
    concurrency = [int(c) for c in os.environ.get(CONCURRENCY_ENV, "").split(",") if c]
    http_only = bool(os.environ.get(HTTP_ONLY_ENV))
    port = free_port()
    grpc_port = free_port()
    grpc_dir = grpc_modules()  # before the cluster starts: its processes import the stubs
    grpc_options = (
        {
            "port": grpc_port,
            "grpc_servicer_functions": ["bench_pb2_grpc.add_BenchServicer_to_server"],
        }
        if grpc_dir
        else None
    )
    if backend == "runtime":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
        import runtime as rt
        from runtime import serve

        rt.init(num_cpus=NUM_CPUS)
    else:
        import ray
        from ray import serve

        ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False)
    serve.start(
        proxy_location="EveryNode",
        http_options={"host": "127.0.0.1", "port": port},
        grpc_options=grpc_options,
    )
    try:
        NoOp, Model, Models = workloads(serve, backend)
        t0 = time.perf_counter()
        serve.run(NoOp.bind(), name="noop", route_prefix="/noop")
        results["deploy an app"] = time.perf_counter() - t0
        url = f"http://127.0.0.1:{port}/noop"
        for c in concurrency or CONCURRENCY:
            log(f"[{backend}] HTTP no-op at concurrency {c}")
            results[f"http c={c}"] = run_load(url, c, duration)
        if http_only:
            return results
        if grpc_dir:
            log(f"[{backend}] gRPC unary at concurrency 64")
            try:
                results["grpc c=64"] = run_grpc_load(f"127.0.0.1:{grpc_port}", 64, duration)
            except Exception:  # the other rows still count
                traceback.print_exc()
                results["grpc error"] = traceback.format_exc(limit=3)
        serve.run(Model.bind(), name="model", route_prefix="/model")
        log(f"[{backend}] batched model at concurrency 64")
        body = json.dumps({"x": [0.5] * 64}).encode()
        results["model c=64"] = run_load(f"http://127.0.0.1:{port}/model", 64, duration, body)
        serve.run(Models.bind(), name="models", route_prefix="/models")
        log(f"[{backend}] multiplexed models at concurrency 64")
        results["multiplexed c=64"] = run_load(
            f"http://127.0.0.1:{port}/models", 64, duration, multiplexed=True
        )
        log(f"[{backend}] handle calls")
        handle = serve.get_app_handle("noop")

        async def calls() -> float:
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < duration:
                await asyncio.gather(*(handle.call.remote(i) for i in range(1000)))
                n += 1000
            return n / (time.perf_counter() - t0)

        results["handle calls"] = asyncio.run(calls())
    except Exception:
        traceback.print_exc()
        results["error"] = traceback.format_exc(limit=3)
    finally:
        serve.shutdown()
        if backend == "runtime":
            rt.shutdown()
        else:
            ray.shutdown()
    return results


def run_ray_isolated(quick: bool, python: str) -> dict[str, Any]:
    if python == sys.executable and importlib.util.find_spec("ray") is None:
        return {"skipped": "ray is not importable here (name its Python with --ray-python)"}
    check = subprocess.run([python, "-c", "import ray.serve"], capture_output=True, check=False)
    if check.returncode != 0:
        return {"skipped": f"{python} cannot import ray.serve"}
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return {"skipped": "`unshare` or `ip` not found: cannot isolate Ray"}
    prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-r", "-n"]
    with tempfile.TemporaryDirectory(prefix="bench-serve-ray-") as tmp:
        out = os.path.join(tmp, "ray.json")
        cmd = [*prefix, "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh", python,
               os.path.abspath(__file__), "--only", "ray", "--json", out] + (
            ["--quick"] if quick else [])  # fmt: skip
        env = dict(os.environ)
        env.update({CHILD_ENV: "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                    "RAY_USAGE_STATS_ENABLED": "0", LOADGEN_ENV: sys.executable,
                    CLIENT_ENV: client()})  # fmt: skip
        log(f"[ray] in a loopback-only network namespace: {shlex.join(cmd)}")
        try:
            subprocess.run(cmd, env=env, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            return {"skipped": "the Ray half ran past 900 s"}
        if not os.path.exists(out):
            return {"skipped": "the Ray child left no results (see its stderr above)"}
        with open(out) as f:
            result: dict[str, Any] = json.load(f)
            return result


# --------------------------------------------------------------------------------- the table


def table(ours: dict[str, Any], ray: dict[str, Any]) -> str:
    rows = ["| metric | runtime | Ray Serve 2.60 | ratio |", "|---|---|---|---|"]

    def ratio(a: float | None, b: float | None, higher: bool) -> str:
        if not a or not b:
            return "-"
        r = a / b if higher else b / a
        return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"

    def get(rep: dict[str, Any], key: str) -> Any:
        return None if "skipped" in rep else rep.get(key)

    d1, d2 = get(ours, "deploy an app"), get(ray, "deploy an app")
    rows.append(f"| time to deploy an app | {_s(d1)} | {_s(d2)} | {ratio(d1, d2, higher=False)} |")
    for key, label in [(f"http c={c}", f"HTTP no-op, concurrency {c}") for c in CONCURRENCY] + [
        ("model c=64", "HTTP batched numpy model, concurrency 64"),
        ("multiplexed c=64", "HTTP multiplexed models (4 ids), concurrency 64"),
        ("grpc c=64", "gRPC unary no-op, 64 calls in flight"),
    ]:
        a, b = get(ours, key), get(ray, key)
        rows.append(
            f"| {label}: requests/s | {_rps(a)} | {_rps(b)} | "
            f"{ratio(a and a['rps'], b and b['rps'], higher=True)} |"
        )
        rows.append(
            f"| {label}: p50 / p99 latency | {_lat(a)} | {_lat(b)} | "
            f"{ratio(a and a['p99_ms'], b and b['p99_ms'], higher=False)} (p99) |"
        )
    h1, h2 = get(ours, "handle calls"), get(ray, "handle calls")
    rows.append(
        f"| handle calls from the driver | {_num(h1, 'calls/s')} | {_num(h2, 'calls/s')} | "
        f"{ratio(h1, h2, higher=True)} |"
    )
    return "\n".join(rows)


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _num(v: float | None, unit: str) -> str:
    return "-" if v is None else f"{v:,.0f} {unit}"


def _rps(v: dict | None) -> str:
    if v is None:
        return "-"
    err = f" ({v['errors']} errors)" if v["errors"] else ""
    return f"{v['rps']:,.0f}{err}"


def _lat(v: dict | None) -> str:
    return "-" if v is None else f"{v['p50_ms']:.1f} / {v['p99_ms']:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("runtime", "ray"))
    parser.add_argument("--json", help="write this half's results here (internal)")
    parser.add_argument("--loadgen", nargs=3, metavar=("URL", "CONCURRENCY", "SECONDS"))
    parser.add_argument("--body")
    parser.add_argument("--grpc-loadgen", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--multiplexed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--client",
        choices=("wrk", "aiohttp"),
        help="the HTTP load generator (default: wrk if installed, else aiohttp)",
    )
    parser.add_argument("--concurrency", help="the HTTP no-op rows' concurrencies, e.g. 64,1024")
    parser.add_argument("--http-only", action="store_true", help="only the HTTP no-op rows")
    parser.add_argument(
        "--ray-python",
        default=os.environ.get("RAY_PYTHON") or sys.executable,
        help="the Python interpreter that has ray[serve] 2.60 (default: $RAY_PYTHON, or this one)",
    )
    args = parser.parse_args(argv)
    if args.client:
        os.environ[CLIENT_ENV] = args.client
    if args.concurrency:
        os.environ[CONCURRENCY_ENV] = args.concurrency
    if args.http_only:
        os.environ[HTTP_ONLY_ENV] = "1"
    if args.loadgen:
        import uvloop

        url, c, d = args.loadgen
        body = args.body.encode() if args.body else None
        print(json.dumps(uvloop.run(_load(url, int(c), float(d), body, args.multiplexed))))
        return 0
    if args.grpc_loadgen:
        import uvloop

        grpc_modules()
        target, c, d = args.grpc_loadgen
        print(json.dumps(uvloop.run(_grpc_load(target, int(c), float(d)))))
        return 0
    if args.only != "ray":
        compile_runtime()  # as Ray's wheel is (see _bytecode)
    if args.only:
        res = measure(args.only, args.quick)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f)
        else:
            print(json.dumps(res, indent=1))
        return 0
    ours = measure("runtime", args.quick)
    ray = run_ray_isolated(args.quick, args.ray_python)
    if "skipped" in ray:
        log(f"[ray] skipped: {ray['skipped']}")
    print(table(ours, ray))
    return 0


if __name__ == "__main__":
    sys.exit(main())
