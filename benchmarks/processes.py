"""What processes of their own cost: runtime_env pools and dedicated actor processes.

Run: `.venv/bin/python benchmarks/processes.py`. On a local mesh of one 1-CPU node it times
(medians of 3) the first task of a new environment (the pool process starting), a task of an
environment whose pool is up (one more hop than a plain task), a plain task, and the first
answer of an actor with ``dedicated_process=True`` against one that shares its node's process.
Only this runtime is measured (Ray starts a worker process per actor and per environment).
"""

from __future__ import annotations

import os
import statistics
import time

from _bytecode import compile_runtime

import runtime


@runtime.remote
def pid() -> int:
    return os.getpid()


@runtime.remote(num_cpus=0)
class Actor:
    def pid(self) -> int:
        return os.getpid()


def _ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:.2f} ms"


def main() -> None:
    compile_runtime()  # as an installed package has its bytecode (see _bytecode)
    runtime.init(num_cpus=1)
    try:
        runtime.get(pid.remote())
        first, warm, plain, dedicated, shared = [], [], [], [], []
        for i in range(3):
            task = pid.options(runtime_env={"env_vars": {"RT_BENCH": str(i)}})
            t = time.perf_counter()
            runtime.get(task.remote())
            first.append(time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(50):
                runtime.get(task.remote())
            warm.append((time.perf_counter() - t) / 50)
            t = time.perf_counter()
            for _ in range(50):
                runtime.get(pid.remote())
            plain.append((time.perf_counter() - t) / 50)
            for options, out in (({"dedicated_process": True}, dedicated), ({}, shared)):
                t = time.perf_counter()
                actor = Actor.options(**options).remote()
                runtime.get(actor.pid.remote())
                out.append(time.perf_counter() - t)
                runtime.kill(actor)
        print(f"first task of a new runtime_env (its pool starts): {_ms(first)}")
        print(f"a task of an environment whose pool is up:         {_ms(warm)}")
        print(f"a plain task:                                       {_ms(plain)}")
        print(f"an actor with dedicated_process=True, first answer: {_ms(dedicated)}")
        print(f"an actor in its node's process, first answer:       {_ms(shared)}")
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    main()
