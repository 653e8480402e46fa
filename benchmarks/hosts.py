"""Objects between hosts, measured on simulated hosts (network namespaces on a bridge).

Run (root, iproute2): `.venv/bin/python benchmarks/hosts.py [--size-mb 1024] [--runs 3]
[--broadcast 8]`

Three hosts on a private bridge (see tests/hosts/harness.py): the head on h0 (with the
driver), a node on h1 and a node on h2, each host with its own /dev/shm. Rows (medians):

* raw socket: a Python sender on h1 streams SIZE bytes to a receiver on h2 that reads into a
  reused, pre-touched buffer: the ceiling of the bridge for one TCP stream (measured before
  and after the runtime's rows, so both see the same machine: the median of all of them);
  and once more into fresh memory of SIZE bytes, as a reader that keeps its copy must;
* a task on h2 reads an object made on h1 (`runtime.get` timed inside the task, so only the
  transfer counts), first read and a second read of the same object;
* for scale, a task on h1 reads the same object on its own host (shared memory, no copy).

With ``--broadcast N``: N + 2 hosts, the head and driver on h0, an object made on h1, then
read by a task on each of h2..h(N+1) at once (timed from the driver: from the reads'
submission until every reader has it). Two rows: with copies serving readers as they appear
(the default, one reader per source at a time: a tree), and with ``RUNTIME_BROADCAST_FANOUT``
high, where the owner sends every reader at once to the least busy source, which is h1
alone while no copy exists: every stream out of h1, as before copies. Ray's published figure
(1 GiB to 50 nodes in 16.9 s, on real machines) stands beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bytecode import compile_runtime

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHUNK = 64 << 20
PORT = 9000

SENDER = f"""
import socket, sys
size = int(sys.argv[1])
buf = bytearray(b"x" * {CHUNK})
srv = socket.create_server(("0.0.0.0", {PORT}))
print("listening", flush=True)
for _ in range(int(sys.argv[2])):
    conn, _ = srv.accept()
    left = size
    while left:
        n = min(left, len(buf))
        conn.sendall(memoryview(buf)[:n])
        left -= n
    conn.close()
"""

RECEIVER = f"""
import mmap, socket, sys, time
size, host, fresh = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "fresh"
if fresh:  # fresh memory of the whole size, as a copy that is kept needs
    view = memoryview(mmap.mmap(-1, size))
else:  # one reused, pre-touched buffer: the ceiling
    view = memoryview(bytearray(b"y" * {CHUNK}))
conn = socket.create_connection((host, {PORT}))
start = time.perf_counter()
got = 0
while got < size:
    n = conn.recv_into(view[got:] if fresh else view)
    if not n:
        raise SystemExit("short read")
    got += n
print(time.perf_counter() - start)
"""


def driver(address: str, size: int, runs: int) -> dict[str, list[float]]:
    """Runs inside h0: the runtime rows."""
    import numpy as np

    import runtime

    @runtime.remote(resources={"h1": 0.01})
    def produce(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.uint8)

    def reader(resource: str):
        @runtime.remote(resources={resource: 0.01})
        def read(refs: list) -> float:
            start = time.perf_counter()
            value = runtime.get(refs[0])
            elapsed = time.perf_counter() - start
            assert value.nbytes == refs[1] and int(value[:: 1 << 20].sum()) == len(
                value[:: 1 << 20]
            )
            return elapsed

        return read

    runtime.init(address=address, log_to_driver=False)
    try:
        deadline = time.monotonic() + 60
        while len([n for n in runtime.nodes() if n["Alive"] and n["Resources"].get("CPU")]) < 2:
            assert time.monotonic() < deadline, "nodes did not join"
            time.sleep(0.1)
        out: dict[str, list[float]] = {"first": [], "second": [], "same_host": []}
        remote_read, local_read = reader("h2"), reader("h1")
        for _ in range(runs):
            ref = produce.remote(size)
            runtime.wait([ref], timeout=120)
            out["first"].append(runtime.get(remote_read.remote([ref, size]), timeout=300))
            out["second"].append(runtime.get(remote_read.remote([ref, size]), timeout=300))
            out["same_host"].append(runtime.get(local_read.remote([ref, size]), timeout=300))
            del ref
        return out
    finally:
        runtime.shutdown()


def broadcast_driver(address: str, size: int, runs: int, readers: int, fanout: int) -> list[float]:
    """Runs inside h0: one object made on h1, read on h2..h(readers+1) at once; seconds."""
    os.environ["RUNTIME_BROADCAST_FANOUT"] = str(fanout)  # read when the runtime is imported
    import numpy as np

    import runtime

    @runtime.remote(resources={"h1": 0.01})
    def produce(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.uint8)

    @runtime.remote
    def read(refs: list) -> tuple[int, float]:
        start = time.perf_counter()
        value = runtime.get(refs[0])
        return int(value[:: 1 << 20].sum()), time.perf_counter() - start

    runtime.init(address=address, log_to_driver=False)
    try:
        deadline = time.monotonic() + 120
        while len([n for n in runtime.nodes() if n["Alive"] and n["Resources"].get("CPU")]) < (
            readers + 1
        ):
            assert time.monotonic() < deadline, "nodes did not join"
            time.sleep(0.1)
        hosts = [f"h{i}" for i in range(2, readers + 2)]
        times = []
        for _ in range(runs):
            ref = produce.remote(size)
            runtime.wait([ref], timeout=120)
            start = time.perf_counter()
            got = runtime.get(
                [read.options(resources={h: 0.01}).remote([ref]) for h in hosts], timeout=900
            )
            times.append(time.perf_counter() - start)
            assert [g[0] for g in got] == [len(range(0, size, 1 << 20))] * readers
            print("reads took", sorted(round(g[1], 2) for g in got), flush=True)
            del ref
        return times
    finally:
        runtime.shutdown()


def broadcast(args: argparse.Namespace) -> None:
    from tests.hosts.harness import Unavailable, make_network

    size, n = args.size_mb << 20, args.broadcast
    logs = Path(tempfile.mkdtemp(prefix="bench-broadcast-"))
    try:
        net = make_network(n + 2, logs)
    except Unavailable as exc:
        print(f"skipped: {exc}")
        return
    try:
        cluster = start_cluster(net, net.hosts[1:], 2 * size + (256 << 20))
        rows = []
        for label, fanout in (("copies serve as they appear (a tree)", 1),
                              ("every reader from h1 (no copies served)", 1 << 20)):  # fmt: skip
            out = net.hosts[0].run(
                sys.executable, str(Path(__file__).resolve()), "--driver", cluster.address,
                "--size-mb", str(args.size_mb), "--runs", str(args.runs),
                "--broadcast", str(n), "--fanout", str(fanout), timeout=1800,
            )  # fmt: skip
            print(label, *(x for x in out.splitlines() if x.startswith("reads took")))
            rows.append((label, json.loads(next(
                x for x in out.splitlines() if x.startswith("RESULT "))[7:])))  # fmt: skip
    finally:
        net.close()
    print(f"| {args.size_mb} MiB to {n} hosts (median of {args.runs}) | seconds | GB/s delivered |")
    print("|---|---|---|")
    for label, values in rows:
        median = statistics.median(values)
        print(f"| {label} | {median:.2f} | {n * size / median / 1e9:.2f} |")
    print(f"| Ray, published: 1 GiB to 50 nodes | 16.9 | {50 * (1 << 30) / 16.9 / 1e9:.2f} |")


def raw_copies(h1: Any, h2: Any, size: int, runs: int, fresh: bool = False) -> list[float]:
    """Seconds of ``runs`` raw socket copies of ``size`` bytes from h1 to h2 (``fresh``:
    into fresh memory of the whole size rather than a reused buffer)."""
    sender = h1.spawn("sender", sys.executable, "-c", SENDER, str(size), str(runs))
    deadline = time.monotonic() + 30
    raw = []
    for _ in range(runs):
        while time.monotonic() < deadline:
            try:
                out = h2.run(sys.executable, "-c", RECEIVER, str(size), h1.ip,
                             "fresh" if fresh else "reused")  # fmt: skip
                raw.append(float(out))
                break
            except RuntimeError:
                time.sleep(0.2)  # the sender is not listening yet
    sender.wait(30)
    return raw


def start_cluster(net: Any, nodes: list[Any], store_bytes: int) -> Any:
    """The head on the first host (every host given the token) and a one-CPU node on each of
    ``nodes``, named by a resource of its host's name, with a store of ``store_bytes``."""
    from tests.hosts.harness import TOKEN_PATH, Cluster

    token = os.urandom(32)
    for host in net.hosts:
        host.run("sh", "-c", f"umask 077 && cat > {TOKEN_PATH}", input=token.hex().encode())
    cluster = Cluster(net, token)
    cluster.start_head()
    for host in nodes:
        host.spawn(
            "node",
            *cluster.node_command(host, "--address", cluster.address, "--num-cpus", "1",
                                  "--resources", json.dumps({host.name: 1}),
                                  "--object-store-memory", str(store_bytes)),
        )  # fmt: skip
    return cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--broadcast", type=int, default=0, help="read on this many hosts at once")
    ap.add_argument("--driver", help=argparse.SUPPRESS)  # the head's address, inside h0
    ap.add_argument("--fanout", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    compile_runtime()  # as an installed package has its bytecode (see _bytecode)
    size = args.size_mb << 20
    if args.driver and args.broadcast:
        times = broadcast_driver(args.driver, size, args.runs, args.broadcast, args.fanout)
        print("RESULT " + json.dumps(times), flush=True)
        return
    if args.broadcast:
        broadcast(args)
        return
    if args.driver:
        print("RESULT " + json.dumps(driver(args.driver, size, args.runs)), flush=True)
        return

    from tests.hosts.harness import Unavailable, make_network

    logs = Path(tempfile.mkdtemp(prefix="bench-hosts-"))
    try:
        net = make_network(3, logs)
    except Unavailable as exc:
        print(f"skipped: {exc}")
        return
    load = [os.getloadavg()[0]]
    try:
        h0, h1, h2 = net.hosts
        raw = raw_copies(h1, h2, size, args.runs)  # raw TCP over the bridge, h1 -> h2
        fresh = raw_copies(h1, h2, size, args.runs, fresh=True)
        # The runtime: head on h0, a node on h1 and one on h2, the driver on h0.
        cluster = start_cluster(net, [h1, h2], 3 * size + (256 << 20))
        out = h0.run(
            sys.executable, str(Path(__file__).resolve()), "--driver", cluster.address,
            "--size-mb", str(args.size_mb), "--runs", str(args.runs),
            timeout=900,
        )  # fmt: skip
        times = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
        raw += raw_copies(h1, h2, size, args.runs)  # and again, after
        load.append(os.getloadavg()[0])
    finally:
        net.close()
    gib = size / (1 << 30)
    rows = [
        ("raw TCP socket h1 -> h2 (ceiling)", raw),
        ("raw TCP socket h1 -> h2 into fresh memory", fresh),
        ("object made on h1, first read on h2", times["first"]),
        ("same object, second read on h2", times["second"]),
        ("same object, read on h1 (shared memory)", times["same_host"]),
    ]
    print(f"| path ({args.size_mb} MiB, median of {args.runs}) | seconds | GB/s |")
    print("|---|---|---|")
    for name, values in rows:
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {gib * (1 << 30) / median / 1e9:.2f} |")
    ratio = statistics.median(times["first"]) / statistics.median(raw)
    print(f"first read / raw socket: {ratio:.2f}; raw {sorted(round(x, 3) for x in raw)}, "
          f"first reads {sorted(round(x, 3) for x in times['first'])}; "
          f"load average {load[0]:.1f} at the start, {load[1]:.1f} at the end")  # fmt: skip


if __name__ == "__main__":
    main()
