"""CPU time per actor call, summed over the driver and every process of its local mesh.

On a shared, busy machine call *rates* swing by a factor of several from run to run; the CPU
a call costs (user + system time of all the processes involved, per call) swings far less,
so it shows what a change to the call path costs. Run it once per version, alternating,
e.g. before and after a change::

    PYTHONPATH=old/src python benchmarks/call_cpu.py
    PYTHONPATH=src python benchmarks/call_cpu.py

Workloads (as in ``core.py``): "sync" calls one at a time (``get`` after each ``remote``),
"async" in batches of 1,000; each reports the median of ``--repeats`` measurements of
CPU microseconds per call and the wall-clock rate.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import psutil

import runtime


@runtime.remote(num_cpus=0)
class Small:
    def value(self) -> bytes:
        return b"ok"


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def _measure(
    procs: list[psutil.Process], calls: int, work: Callable[[], None]
) -> tuple[float, float]:
    cpu0, t0 = _cpu(procs), time.perf_counter()
    work()
    cpu1, t1 = _cpu(procs), time.perf_counter()
    return (cpu1 - cpu0) / calls * 1e6, calls / (t1 - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sync-calls", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    runtime.init(num_cpus=2)
    try:
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)]
        actor = Small.remote()
        runtime.get(actor.value.remote(), timeout=60)

        def sync() -> None:
            for _ in range(args.sync_calls):
                runtime.get(actor.value.remote())

        def batches() -> None:
            for _ in range(args.batches):
                runtime.get([actor.value.remote() for _ in range(1000)])

        for name, work, calls in (
            ("1:1 actor calls sync", sync, args.sync_calls),
            ("1:1 actor calls async", batches, args.batches * 1000),
        ):
            work()  # warm up
            runs = [_measure(procs, calls, work) for _ in range(args.repeats)]
            cpu = statistics.median(r[0] for r in runs)
            rate = statistics.median(r[1] for r in runs)
            print(f"{name:<24} {cpu:8.1f} CPU us/call   {rate:10,.0f} calls/s")
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    main()
