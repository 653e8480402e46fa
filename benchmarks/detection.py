"""Failure detection, measured: how long until a paused node is declared dead, how long until
it rejoins after it wakes, and how a GIL-holding task affects its heartbeats.

Run: `.venv/bin/python benchmarks/detection.py` (uses fast settings: beat 0.1 s, suspect
0.6 s, dead 1.5 s, so the figures are about the mechanism, not the defaults).
"""

from __future__ import annotations

import os
import signal
import time

os.environ.update(
    RUNTIME_HEARTBEAT_INTERVAL_S="0.1", RUNTIME_SUSPECT_AFTER_S="0.6", RUNTIME_DEAD_AFTER_S="1.5"
)

import runtime  # after the settings above, which its nodes inherit


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
def hold_gil(n: int) -> float:
    start = time.perf_counter()
    sum(range(n))  # one C call: holds the GIL throughout
    return time.perf_counter() - start


def main() -> None:
    runtime.init(num_cpus=2)
    try:
        node_id, pid = next(iter(workers().items()))
        os.kill(pid, signal.SIGSTOP)
        paused = time.monotonic()
        detect = wait_for(lambda: node_id not in workers())
        os.kill(pid, signal.SIGCONT)
        rejoin = wait_for(lambda: pid in workers().values())
        print(f"paused node declared dead after {detect:.2f} s (dead_after 1.5 s)")
        print(f"woken node rejoined under a new id {rejoin:.2f} s after SIGCONT")
        print(f"total outage of that node: {time.monotonic() - paused:.2f} s")
        wait_for(lambda: len(workers()) == 2)
        for n in (40_000_000, 150_000_000):  # about 1 s and about 3 s in one C call
            before = set(workers())
            try:
                held = f"{runtime.get(hold_gil.options(max_retries=0).remote(n)):.2f} s"
            except runtime.exceptions.NodeDiedError:
                held = "longer than the dead window"
            time.sleep(2.0)
            kept = set(workers()) == before
            print(f"a task holding the GIL {held} in one C call: the node kept its place: {kept}")
            wait_for(lambda: len(workers()) == 2)
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    main()
