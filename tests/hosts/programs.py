"""Driver programs the multi-host tests run inside a simulated host.

``python -m tests.hosts.programs NAME HEAD_ADDRESS KWARGS_JSON`` joins the cluster (at
``RUNTIME_ADDRESS`` when HEAD_ADDRESS is ``-``; the token comes from
``RUNTIME_AUTH_TOKEN_FILE``, which the harness sets), waits (bounded) until
``nodes`` worker nodes are up, runs ``NAME(**kwargs)`` and prints ``RESULT <json>`` last.
A program that needs the test to act in the middle (kill a host, restart the head) calls
:func:`checkpoint`, which prints ``CHECKPOINT <json>`` and waits for the test's go.

Run as ``__main__``, this module's remote functions and classes travel by value, so the
nodes need not import it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import runtime
from runtime.util import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
    placement_group,
)

PROGRAMS: dict[str, Callable[..., Any]] = {}
#: Elements of the arrays that must travel as objects (8 MB: far above the inline size).
BIG = 1 << 20


def program(fn: Callable[..., Any]) -> Callable[..., Any]:
    PROGRAMS[fn.__name__] = fn
    return fn


def checkpoint(value: Any = None) -> Any:
    """Tell the test where the program is, and wait for its go (what it sends back)."""
    print("CHECKPOINT " + json.dumps(value), flush=True)
    line = sys.stdin.readline()
    return json.loads(line) if line else None


def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll a cluster-state predicate (membership has no event a driver can await)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except runtime.exceptions.RuntimeBaseError:
            value = None  # the head is restarting: ask again
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not in {timeout} s: {what}")
        time.sleep(0.05)


def workers() -> dict[str, dict[str, Any]]:
    """Live worker nodes by id (no drivers, no CPU-less head)."""
    return {
        n["NodeID"]: n
        for n in runtime.nodes()
        if n["Alive"] and not n["IsDriver"] and n["Resources"].get("CPU", 0) > 0
    }


# --- remote code ------------------------------------------------------------------------------


@runtime.remote
def hostname() -> str:
    return socket.gethostname()


@runtime.remote
def make_array(n: int, seed: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * seed


@runtime.remote
def checksum(arr: np.ndarray) -> tuple[int, str]:
    return int(arr.sum()), socket.gethostname()


@runtime.remote
def shm_entries() -> tuple[str, list[str]]:
    """The runtime's shared-memory folders on this host (one per node process)."""
    root = f"/dev/shm/runtime-{os.getuid()}"
    return socket.gethostname(), sorted(os.listdir(root)) if os.path.isdir(root) else []


@runtime.remote
def call_actor(actor: Any, n: int) -> tuple[str, int]:
    return socket.gethostname(), runtime.get(actor.add.remote(n))


@runtime.remote(max_retries=3)
def slow_square(i: int) -> int:
    time.sleep(0.3)
    return i * i


@runtime.remote
class Keeper:
    """Holds a number and says where it runs."""

    def __init__(self, start: int = 0) -> None:
        self.total = start

    def add(self, n: int) -> int:
        self.total += n
        return self.total

    def where(self) -> str:
        return socket.gethostname()

    def node(self) -> str:
        return runtime.get_runtime_context().get_node_id()


def on(node_id: str, soft: bool = False) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id, soft=soft)


def host_of_nodes() -> dict[str, str]:
    """Node id -> the hostname a task on that node reports."""
    ids = list(workers())
    names = runtime.get([hostname.options(scheduling_strategy=on(i)).remote() for i in ids])
    return dict(zip(ids, names, strict=True))


# --- programs ---------------------------------------------------------------------------------


@program
def tasks_actors_objects() -> dict[str, Any]:
    """Tasks, actors and objects between hosts; what each host saw."""
    hosts = host_of_nodes()
    by_host = {h: n for n, h in hosts.items()}
    addresses = {hosts[n]: info["NodeManagerAddress"] for n, info in workers().items()}
    a, b = by_host["h1"], by_host["h2"]
    expected = int((np.arange(BIG, dtype=np.int64) * 3).sum())
    # An object made on h1, read by a task on h2 and by this driver on h0.
    made_on_a = make_array.options(scheduling_strategy=on(a)).remote(BIG, 3)
    read_on_b = runtime.get(checksum.options(scheduling_strategy=on(b)).remote(made_on_a))
    read_here = int(runtime.get(made_on_a).sum())
    # An object this driver put, read on both other hosts.
    put = runtime.put(np.arange(BIG, dtype=np.int64) * 3)
    read_put = runtime.get(
        [checksum.options(scheduling_strategy=on(n)).remote(put) for n in (a, b)]
    )
    # An actor on h2, called by this driver and, through its handle, by a task on h1.
    keeper = Keeper.options(scheduling_strategy=on(b)).remote(10)
    first = runtime.get(keeper.add.remote(1))
    via_a = runtime.get(call_actor.options(scheduling_strategy=on(a)).remote(keeper, 5))
    shm = dict(
        runtime.get([shm_entries.options(scheduling_strategy=on(n)).remote() for n in (a, b)])
    )
    return {
        "driver_host": socket.gethostname(),
        "hosts": sorted(hosts.values()),
        "addresses": addresses,
        "expected": expected,
        "read_on_b": read_on_b,
        "read_here": read_here,
        "read_put": read_put,
        "actor_host": runtime.get(keeper.where.remote()),
        "actor_calls": [first, via_a],
        "shm": shm,
        "node_of_host": by_host,
    }


@runtime.remote
def sum_nested(refs: list[Any]) -> tuple[int, str]:
    return int(runtime.get(refs[0]).sum()), socket.gethostname()


@runtime.remote(resources={"h1": 0.01})
def pass_on(refs: list[Any]) -> tuple[int, str]:
    return runtime.get(sum_nested.options(resources={"h2": 0.01}).remote(refs))


@program
def driver_object_borrowed_by_a_host_it_never_called() -> dict[str, Any]:
    """h2 reads an object this driver owns, having got the ref from h1 (nested, so the driver
    never sent anything to h2): h2 must dial the driver itself."""
    put = runtime.put(np.arange(BIG, dtype=np.int64))
    out = runtime.get(pass_on.remote([put]), timeout=30)
    return {"read": out, "expected": int(np.arange(BIG, dtype=np.int64).sum())}


@program
def members() -> dict[str, Any]:
    """Where the worker nodes are, and the head's address as the cluster lists it."""
    heads = [
        n["NodeManagerAddress"]
        for n in runtime.nodes()
        if n["Alive"] and n["Labels"].get("runtime.io/role") == "head"
    ]
    return {"hosts": sorted(host_of_nodes().values()), "head": heads}


@program
def node_addresses() -> dict[str, Any]:
    """Each worker node's advertised address and port, with the host a task on it (and an
    actor call from one node to another) ran on: the address works."""
    hosts = host_of_nodes()
    rows = sorted(
        [hosts[i], n["NodeManagerAddress"], n["NodeManagerPort"]] for i, n in workers().items()
    )
    ids = sorted(hosts, key=hosts.__getitem__)
    keeper = Keeper.options(scheduling_strategy=on(ids[-1])).remote(1)
    via = runtime.get(call_actor.options(scheduling_strategy=on(ids[0])).remote(keeper, 2))
    return {"nodes": rows, "actor_call": via}


@program
def autoscale_slurm(address: str, token_file: str, slurm_conf: str, repo: str) -> dict[str, Any]:
    """The autoscaler with the Slurm provider: a placement group nobody can hold starts a
    job, a task runs in it, the idle node's job is cancelled."""
    from runtime.autoscaler import NODE_LABEL, Autoscaler, NodeType, SlurmProvider
    from runtime.util import remove_placement_group

    def provider_nodes() -> list[str]:
        return [n["NodeID"] for n in workers().values() if NODE_LABEL in n["Labels"]]

    provider = SlurmProvider(address, token_file=token_file, env={"SLURM_CONF": slurm_conf},
                             sbatch_args=[f"--chdir={repo}"])  # fmt: skip
    scaler = Autoscaler(provider, [NodeType("slurm2", {"CPU": 2.0}, max_workers=2)],
                        idle_timeout_s=2.0, period_s=0.5)  # fmt: skip
    scaler.start()
    try:
        pg = placement_group([{"CPU": 2.0}])
        runtime.get(pg.ready(), timeout=120)
        jobs = len(provider.jobs())
        strategy = PlacementGroupSchedulingStrategy(pg)
        ran_on = runtime.get(hostname.options(scheduling_strategy=strategy).remote(), timeout=60)
        remove_placement_group(pg)
        until(lambda: not provider.jobs() and not provider_nodes(), 90, "the idle job ended")
    finally:
        scaler.stop()
        provider.close()
    return {"jobs": jobs, "ran_on": ran_on, "errors": scaler.errors}


@runtime.remote(num_cpus=2)
def two_cpus() -> str:
    return socket.gethostname()


@program
def task_of_two_cpus() -> dict[str, Any]:
    """A task that needs 2 CPUs, on a cluster whose one host offers 2 (in 2 processes)."""
    try:
        return {"ran_on": runtime.get(two_cpus.remote(), timeout=20), "error": None}
    except runtime.exceptions.RuntimeBaseError as exc:
        return {"ran_on": None, "error": f"{type(exc).__name__}: {exc}"}


@program
def strict_spread(bundles: int, too_many: int) -> dict[str, Any]:
    """One bundle per host with STRICT_SPREAD; more bundles than hosts never place."""
    pg = placement_group([{"CPU": 1}] * bundles, strategy="STRICT_SPREAD")
    ready = pg.wait(30)
    placed = runtime.get(
        [
            hostname.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pg, placement_group_bundle_index=i
                )
            ).remote()
            for i in range(bundles)
        ],
        timeout=30,
    )
    runtime.util.remove_placement_group(pg)
    big = placement_group([{"CPU": 1}] * too_many, strategy="STRICT_SPREAD")
    big_ready = big.wait(2)
    runtime.util.remove_placement_group(big)
    return {"ready": ready, "placed": placed, "too_many_ready": big_ready}


@program
def node_death(victim: str) -> dict[str, Any]:
    """Kill a host's node under retriable tasks and a restartable actor on it."""
    hosts = host_of_nodes()
    by_host = {h: n for n, h in hosts.items()}
    keeper = Keeper.options(
        max_restarts=1, max_task_retries=-1, scheduling_strategy=on(by_host[victim], soft=True)
    ).remote()
    before = runtime.get(keeper.where.remote())
    refs = [slow_square.options(scheduling_strategy="SPREAD").remote(i) for i in range(16)]
    runtime.wait(refs, num_returns=2, timeout=30)
    checkpoint({"actor_host": before})  # the test kills the victim's node processes here
    squares = runtime.get(refs, timeout=60)
    after = runtime.get(keeper.where.remote(), timeout=60)
    gone = until(lambda: by_host[victim] not in workers(), 30, f"{victim} declared dead")
    survivors = sorted(host_of_nodes().values())
    return {
        "before": before,
        "after": after,
        "squares": squares,
        "victim_dead": bool(gone),
        "survivors": survivors,
    }


@program
def head_restart() -> dict[str, Any]:
    """A detached named actor and the nodes outlive a head killed and restarted."""
    hosts = host_of_nodes()
    by_host = {h: n for n, h in hosts.items()}
    keeper = Keeper.options(
        name="keeper", lifetime="detached", scheduling_strategy=on(by_host["h2"])
    ).remote(100)
    runtime.get(keeper.add.remote(1))
    checkpoint()  # the test kills the head here
    during = runtime.get(keeper.add.remote(1), timeout=30)  # node to node: no head needed
    checkpoint()  # the test restarts the head here
    found = until(lambda: runtime.get_actor("keeper"), 60, "the named actor after the restart")
    after = runtime.get(found.add.remote(1), timeout=30)
    back = until(lambda: len(workers()) >= 2 and workers(), 60, "both nodes back")
    squares = runtime.get(
        [slow_square.options(scheduling_strategy=on(n)).remote(3) for n in back], timeout=60
    )
    actor_host = runtime.get(found.where.remote(), timeout=30)
    runtime.kill(found)
    return {
        "during": during,
        "after": after,
        "actor_host": actor_host,
        "hosts_back": sorted(host_of_nodes().values()),
        "squares": squares,
    }


def _train_loop(config: dict[str, Any]) -> None:
    import torch
    import torch.distributed as dist

    from runtime import train

    rank = train.get_context().get_world_rank()
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    names: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(names, socket.gethostname())
    train.report({"sum": float(t.item()), "hosts": names})


@program
def train_two_hosts(timeout_s: float) -> dict[str, Any]:
    """TorchTrainer with 2 ranks on 2 hosts: gloo over the bridge (``timeout_s`` bounds the
    rendezvous and each collective)."""
    from runtime import train
    from runtime.train.torch import TorchConfig, TorchTrainer

    try:
        result = TorchTrainer(
            _train_loop,
            scaling_config=train.ScalingConfig(num_workers=2),
            torch_config=TorchConfig(timeout_s=timeout_s),
        ).fit()
    except train.TrainingFailedError as exc:
        return {"metrics": None, "error": str(exc)[:2000]}
    return {"metrics": result.metrics, "error": repr(result.error) if result.error else None}


@runtime.remote
def read_and_tell(refs: list[Any]) -> dict[str, Any]:
    """Read the object in ``refs`` here; whether this process kept a copy, and how many bytes
    of stored objects it has streamed to other hosts so far."""
    from runtime.core.objects.refs import current_worker

    worker = current_worker()
    arr = runtime.get(refs[0])
    return {
        "host": socket.gethostname(),
        "sum": int(arr.sum()),
        "kept": refs[0].id in worker.store,
        "served": worker.objects.transfer.served_bytes,
    }


@runtime.remote
def served_bytes() -> tuple[str, int]:
    from runtime.core.objects.refs import current_worker

    return socket.gethostname(), current_worker().objects.transfer.served_bytes


@program
def copies_between_hosts(mb: int, readers: list[str]) -> dict[str, Any]:
    """An object made on h1: read twice on h2 (the second read is the copy h2 kept), then by
    ``readers`` all at once (a broadcast): who streamed how much."""
    n = mb * (1 << 20) // 8
    made = big_array.options(resources={"h1": 0.01}).remote(n, 1)
    runtime.wait([made], timeout=60)
    on = {h: read_and_tell.options(resources={h: 0.01}) for h in ["h1", "h2", *readers]}
    first = runtime.get(on["h2"].remote([made]), timeout=60)
    second = runtime.get(on["h2"].remote([made]), timeout=60)
    h1_after_two = runtime.get(served_bytes.options(resources={"h1": 0.01}).remote())[1]
    broadcast = runtime.get([on[h].remote([made]) for h in readers], timeout=120)
    served = dict(runtime.get(
        [served_bytes.options(resources={h: 0.01}).remote() for h in ["h1", "h2", *readers]]
    ))  # fmt: skip
    return {
        "expected": int(np.arange(n, dtype=np.int64).sum()),
        "nbytes": n * 8,
        "first": first,
        "second": second,
        "h1_after_two": h1_after_two,
        "broadcast": broadcast,
        "served": served,
    }


class RemoteFailure(ValueError):
    """A user error raised on a node, caught by its type in a remote driver."""


@runtime.remote
def fail(text: str) -> None:
    raise RemoteFailure(text)


@runtime.remote
def big_array(n: int, seed: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * seed


@program
def remote_driver(mb: int) -> dict[str, Any]:
    """Everything a driver does, from a host that reaches only the head (through its client
    port): tasks on every host, an actor, ``mb`` MB objects both ways, a nested ref read by a
    host the driver never called, a typed error. And the proof that the nodes are out of
    reach from here."""
    hosts = host_of_nodes()
    by_host = {h: n for n, h in hosts.items()}
    reachable = {}
    for node_id, node in workers().items():
        address = (node["NodeManagerAddress"], node["NodeManagerPort"])
        try:
            socket.create_connection(address, timeout=2).close()
            reachable[hosts[node_id]] = True
        except OSError:
            reachable[hosts[node_id]] = False
    n = mb * (1 << 20) // 8
    expected = int((np.arange(n, dtype=np.int64) * 3).sum())
    put = runtime.put(np.arange(n, dtype=np.int64) * 3)
    read_put = runtime.get(
        [checksum.options(scheduling_strategy=on(by_host[h])).remote(put) for h in ("h1", "h2")]
    )
    made = big_array.options(scheduling_strategy=on(by_host["h1"])).remote(n, 3)
    got = runtime.get(made, timeout=60)
    keeper = Keeper.options(scheduling_strategy=on(by_host["h2"])).remote(10)
    calls = [runtime.get(keeper.add.remote(1)), runtime.get(keeper.add.remote(2))]
    small = runtime.put(np.arange(BIG, dtype=np.int64))
    nested = runtime.get(pass_on.remote([small]), timeout=60)
    try:
        runtime.get(fail.remote("bad input"), timeout=30)
        error = None
    except RemoteFailure as exc:
        error = {"caught_as": "RemoteFailure", "is_value_error": isinstance(exc, ValueError),
                 "last_line": str(exc).splitlines()[-1]}  # fmt: skip
    return {
        "driver_host": socket.gethostname(),
        "reachable": reachable,
        "expected": expected,
        "read_put": read_put,
        "got": [int(got.sum()), got.nbytes],
        "actor": [runtime.get(keeper.where.remote()), calls],
        "nested": nested,
        "nested_expected": int(np.arange(BIG, dtype=np.int64).sum()),
        "error": error,
    }


def main(argv: list[str]) -> int:
    name, address, kwargs = argv[0], argv[1], json.loads(argv[2])
    nodes = kwargs.pop("nodes", 0)
    # "-": the address from the environment (RUNTIME_ADDRESS), as a job's driver has it.
    runtime.init(address=None if address == "-" else address, log_to_driver=False)
    try:
        until(lambda: len(workers()) >= nodes, 60, f"{nodes} worker nodes")
        result = PROGRAMS[name](**kwargs)
    finally:
        runtime.shutdown()
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
