"""Ray's compiled-graph API (``experimental_compile``): checked like Ray's, run as
ordinary actor calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import runtime
from runtime import exceptions as exc
from runtime.dag import InputNode, MultiOutputNode
from runtime.dag.compiled_dag_node import CompiledDAG

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def mesh() -> Iterator[None]:
    runtime.init(num_cpus=2)
    try:
        yield
    finally:
        runtime.shutdown()


@runtime.remote
class Adder:
    def __init__(self, k: int) -> None:
        self.k = k
        self.seen: list[int] = []

    def add(self, x: int) -> int:
        self.seen.append(x)
        return x + self.k

    def history(self) -> list[int]:
        return self.seen


@runtime.remote
def double(x: int) -> int:
    return 2 * x


def test_a_compiled_chain_runs_each_execute_through_both_actors_in_order(mesh: None) -> None:
    a, b = Adder.remote(1), Adder.remote(10)
    with InputNode() as inp:
        dag = b.add.bind(a.add.bind(inp))
    compiled = dag.experimental_compile()
    assert isinstance(compiled, CompiledDAG)
    refs = [compiled.execute(i) for i in range(5)]
    assert runtime.get(refs) == [11, 12, 13, 14, 15]
    assert runtime.get(a.history.remote()) == [0, 1, 2, 3, 4]
    compiled.teardown()
    with pytest.raises(RuntimeError, match="torn down"):
        compiled.execute(1)
    assert runtime.get(a.add.remote(100)) == 101  # the actors outlive the graph


def test_a_compiled_multi_output_graph_gives_one_result_per_output(mesh: None) -> None:
    a, b = Adder.remote(1), Adder.remote(2)
    with InputNode() as inp:
        dag = MultiOutputNode([a.add.bind(inp), b.add.bind(inp)])
    compiled = dag.experimental_compile()
    assert runtime.get(compiled.execute(5)) == [6, 7]


def test_an_async_compiled_graph_is_awaited_twice_as_in_ray(mesh: None) -> None:
    a, b = Adder.remote(1), Adder.remote(2)
    with InputNode() as inp:
        dag = MultiOutputNode([a.add.bind(inp), b.add.bind(inp)])
    compiled = dag.experimental_compile(enable_asyncio=True)

    async def run() -> list[int]:
        fut = await compiled.execute_async(3)
        result: list[int] = await fut
        return result

    assert asyncio.run(run()) == [4, 5]
    with pytest.raises(ValueError, match="execute_async"):
        compiled.execute(3)


def test_a_dead_actor_in_a_compiled_graph_fails_the_execution_with_actor_died(
    mesh: None,
) -> None:
    actors = [Adder.remote(i) for i in range(2)]
    with InputNode() as inp:
        compiled = MultiOutputNode([x.add.bind(inp) for x in actors]).experimental_compile()
    runtime.kill(actors[0])
    with pytest.raises(exc.ActorDiedError):
        runtime.get(compiled.execute(1), timeout=30)
    assert runtime.get(actors[1].add.remote(1)) == 2


def test_compiling_what_ray_cannot_compile_is_refused() -> None:
    with InputNode() as inp:
        with_function = double.bind(inp)
        with_new_actor = Adder.bind(1).add.bind(inp)
    with pytest.raises(ValueError, match="actor-method calls only"):
        with_function.experimental_compile()
    with pytest.raises(ValueError, match="live actors only"):
        with_new_actor.experimental_compile()
    with pytest.raises(TypeError, match="unexpected keyword argument 'buffer'"):
        InputNode().experimental_compile(buffer=1)


def test_a_tuning_option_is_accepted_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="_buffer_size_bytes"):
        InputNode().experimental_compile(_buffer_size_bytes=1 << 20)
