"""Chaos scenarios, measured: detection time, recovery time, and lost / duplicated / hung
counts for real failures of real node processes.

Run: `.venv/bin/python benchmarks/chaos.py` (fast detection settings: beat 0.1 s, suspect
0.6 s, dead 1.5 s). Each scenario prints one row; the README's reliability table is this.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

os.environ.update(
    RUNTIME_HEARTBEAT_INTERVAL_S="0.1", RUNTIME_SUSPECT_AFTER_S="0.6", RUNTIME_DEAD_AFTER_S="1.5"
)

import runtime  # after the settings above, which its nodes inherit

ROWS: list[tuple[str, str, str, int, int, int]] = []


def workers() -> dict[str, int]:
    return {n["NodeID"]: n["Pid"] for n in runtime.nodes() if not n["IsDriver"] and n["Resources"]}


def wait_for(predicate, timeout: float = 30.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError("the cluster did not get there in time")
        time.sleep(0.01)
    return time.monotonic() - start


@runtime.remote
class Ledger:
    """Counts how often each task body ran (a side effect that survives the kill)."""

    def __init__(self) -> None:
        self.runs: Counter[int] = Counter()

    def ran(self, i: int) -> None:
        self.runs[i] += 1

    def counts(self) -> dict[int, int]:
        return dict(self.runs)

    def pid(self) -> int:
        return os.getpid()


@runtime.remote
class Numbers:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def take(self, i: int) -> int:
        self.seen.append(i)
        return i

    def pid(self) -> int:
        return os.getpid()


def kill_node_under_tasks() -> None:
    ledger = Ledger.options(resources={"ledger": 1}).remote()

    @runtime.remote
    def work(ledger, i):
        time.sleep(0.02)
        runtime.get(ledger.ran.remote(i))
        return i

    keep = runtime.get(ledger.pid.remote())
    victim = next(p for p in workers().values() if p != keep)
    refs = [work.remote(ledger, i) for i in range(200)]
    runtime.wait(refs, num_returns=20, timeout=60)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    results, hung = [], 0
    for r in refs:
        try:
            results.append(runtime.get(r, timeout=60))
        except runtime.exceptions.GetTimeoutError:
            hung += 1
    recovered = time.monotonic() - killed
    runs = runtime.get(ledger.counts.remote())
    lost = 200 - len(set(results))
    duplicated = sum(1 for n in runs.values() if n > 1)
    ROWS.append(("1. kill -9 a node under 200 retriable tasks", "at once (connection)",
                 f"{recovered:.2f} s to finish all", lost, duplicated, hung))  # fmt: skip


def kill_actor_node(retries: bool) -> None:
    options = {"max_restarts": 1, "max_task_retries": -1 if retries else 0}
    a = Numbers.options(**options).remote()
    pid = runtime.get(a.pid.remote())
    refs = [a.take.remote(i) for i in range(300)]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    refs += [a.take.remote(i) for i in range(300, 400)]
    got, failed, hung = [], 0, 0
    for r in refs:
        try:
            got.append(runtime.get(r, timeout=60))
        except runtime.exceptions.ActorDiedError:
            failed += 1
        except runtime.exceptions.GetTimeoutError:
            hung += 1
    recovered = time.monotonic() - killed
    in_order = got == sorted(got)
    after = runtime.get(a.take.remote(-1), timeout=60) == -1  # reaches the restarted actor
    name = "2. kill -9 an actor's node, with retries" if retries else "3. the same, no retries"
    lost = 400 - len(got) - failed
    note = (
        f"{recovered:.2f} s; in order: {in_order}; failed fast (may have run): {failed};"
        f" a later call served: {after}"
    )
    ROWS.append((name, "at once (connection)", note, lost, len(got) - len(set(got)), hung))


def pause_node() -> None:
    node_id, pid = next(iter(workers().items()))
    os.kill(pid, signal.SIGSTOP)
    paused = time.monotonic()
    detect = wait_for(lambda: node_id not in workers())
    os.kill(pid, signal.SIGCONT)
    rejoin = wait_for(lambda: pid in workers().values())
    ROWS.append(("6. SIGSTOP a node past the window", f"{detect:.2f} s",
                 f"rejoined {rejoin:.2f} s after SIGCONT", 0, 0, 0))  # fmt: skip
    del paused


@runtime.remote
def hold_gil(n: int) -> float:
    start = time.perf_counter()
    sum(range(n))  # one C call: holds the GIL throughout, heartbeat thread included
    return time.perf_counter() - start


def gil_holds() -> None:
    """The limit of thread heartbeats: one C call that holds the GIL past the dead window."""
    wait_for(lambda: len(workers()) == 2)
    for n in (40_000_000, 150_000_000):  # about 1 s and about 3 s in one C call
        before = set(workers())
        try:
            held = f"{runtime.get(hold_gil.options(max_retries=0).remote(n)):.2f} s"
        except runtime.exceptions.NodeDiedError:
            held = "past the dead window"
        time.sleep(2.0)  # longer than the dead window: a death would show by now
        kept = set(workers()) == before
        ROWS.append((f"GIL held {held} in one C call", "-", f"node kept its place: {kept}",
                     0, 0, 0))  # fmt: skip
        wait_for(lambda: len(workers()) == 2)


def main() -> None:
    runtime.init(num_cpus=3, resources={"ledger": 1})
    try:
        kill_node_under_tasks()
    finally:
        runtime.shutdown()
    for retries in (True, False):
        runtime.init(num_cpus=3)
        try:
            kill_actor_node(retries)
        finally:
            runtime.shutdown()
    runtime.init(num_cpus=2)
    try:
        pause_node()
        gil_holds()
    finally:
        runtime.shutdown()
    print("| scenario | detection | recovery | lost | duplicated | hung |")
    print("|---|---|---|---|---|---|")
    for row in ROWS:
        print("| " + " | ".join(str(c) for c in row) + " |")


if __name__ == "__main__":
    main()
