"""Quickstart: tasks, an actor, objects, `await` and `runtime.get` on a local mesh.

Run it with `python examples/quickstart.py`. `runtime.init()` starts a head and one node
process per core on this machine; they all stop when the script ends.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

import runtime


@runtime.remote
def square(x: int) -> int:
    """A task: runs on whichever node has a free CPU."""
    return x * x


@runtime.remote
async def slow_add(a: int, b: int) -> int:
    """An async task: runs on a node's event loop."""
    await asyncio.sleep(0.01)
    return a + b


@runtime.remote
def array_sum(values: np.ndarray) -> float:
    """Gets the array as a read-only view of the bytes it arrived in: no copy."""
    return float(values.sum())


@runtime.remote
class Counter:
    """An actor: state that lives in one node process; its calls run in order."""

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def incr(self, n: int = 1) -> int:
        self.value += n
        return self.value

    async def get(self) -> int:
        return self.value


def main() -> None:
    t0 = time.perf_counter()
    info = runtime.init()
    nodes = [n for n in runtime.nodes() if not n["IsDriver"]]
    print(
        f"local mesh up in {time.perf_counter() - t0:.2f}s: {len(nodes)} node processes "
        f"(head + workers), resources {runtime.cluster_resources()} at {info['address']}"
    )

    squares = runtime.get([square.remote(i) for i in range(10)])
    print(f"tasks: squares of 0..9 = {squares}")

    total = runtime.get(slow_add.remote(square.remote(3), 4))
    print(f"a ref passed as an argument is resolved first: 3*3 + 4 = {total}")

    counter = Counter.remote(100)
    for _ in range(5):
        counter.incr.remote()
    print(f"actor: counter after 5 increments = {runtime.get(counter.get.remote())}")

    array = np.arange(1_000_000, dtype=np.float64)
    ref = runtime.put(array)
    print(
        f"objects: a {array.nbytes / 1e6:.0f} MB array put once; its sum from a task = "
        f"{runtime.get(array_sum.remote(ref)):.0f}"
    )

    try:
        runtime.get(square.remote("not a number"))
    except TypeError as err:  # the remote error re-raises as its own type
        print(f"errors: the remote TypeError re-raised here: {str(err).splitlines()[-1]}")

    runtime.shutdown()

    async def async_main() -> None:
        async with runtime.connect(num_cpus=2):
            counter = Counter.remote(0)
            values = await asyncio.gather(*[counter.incr.remote() for _ in range(1000)])
            print(f"async: 1000 awaited actor calls from an asyncio driver, last = {values[-1]}")

    asyncio.run(async_main())


if __name__ == "__main__":
    main()
