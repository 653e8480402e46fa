"""Tasks on a real local mesh: values, errors, refs as arguments, resources, get/wait."""

from __future__ import annotations

import asyncio
import threading

import pytest

import runtime
from runtime.exceptions import (
    GetTimeoutError,
    InfeasibleError,
    RuntimeBaseError,
    SerializationError,
    TaskError,
)

pytestmark = pytest.mark.timeout(60)


@runtime.remote
def add(a, b):
    return a + b


@runtime.remote
async def async_add(a, b):
    await asyncio.sleep(0)
    return a + b


@runtime.remote
def fail(message):
    raise ValueError(message)


@runtime.remote
class Signal:
    """A barrier for tests: tasks await wait(), the test calls set()."""

    def __init__(self):
        self.event = asyncio.Event()
        self.count = 0

    async def arrive(self):
        self.count += 1
        return self.count

    async def arrived(self):
        return self.count

    async def wait(self):
        await self.event.wait()

    async def set(self):
        self.event.set()


def test_sync_and_async_functions_return_their_values(cluster):
    assert runtime.get(add.remote(1, 2)) == 3
    assert runtime.get(async_add.remote("a", "b")) == "ab"
    assert runtime.get([add.remote(i, i) for i in range(20)]) == [2 * i for i in range(20)]


def test_get_of_an_empty_list_is_an_empty_list(cluster):
    assert runtime.get([]) == []
    assert runtime.wait([], num_returns=0) == ([], [])


def test_a_remote_function_cannot_be_called_directly(cluster):
    with pytest.raises(TypeError, match=r"add.remote\(\)"):
        add(1, 2)


def test_num_returns_gives_one_ref_per_value(cluster):
    a, b = add.options(num_returns=2).remote((1,), (2,))
    assert runtime.get(a) == 1
    assert runtime.get(b) == 2


def test_top_level_refs_are_resolved_and_nested_refs_stay_refs(cluster):
    x = runtime.put(10)

    @runtime.remote
    def inspect(value, nested):
        return value, type(nested[0]).__name__, runtime.get(nested[0])

    assert runtime.get(inspect.remote(x, [x])) == (10, "ObjectRef", 10)
    assert runtime.get(add.remote(add.remote(1, 2), b=x)) == 13


def test_tasks_submit_and_wait_on_nested_tasks(cluster):
    @runtime.remote
    def fan_out(n):
        return sum(runtime.get([add.remote(i, 1) for i in range(n)]))

    # Four parents on two CPUs: each lends its CPU while it blocks in get().
    assert runtime.get([fan_out.remote(5) for _ in range(4)]) == [15] * 4


def test_a_remote_error_is_a_task_error_and_the_original_type(cluster):
    with pytest.raises(ValueError, match="boom") as info:
        runtime.get(fail.remote("boom"))
    err = info.value
    assert isinstance(err, TaskError)
    assert isinstance(err, RuntimeBaseError)
    assert "Traceback" in str(err) and "in fail" in str(err)
    assert isinstance(err.cause, ValueError)


def test_an_unpicklable_exception_arrives_as_its_text(cluster):
    @runtime.remote
    def raise_unpicklable():
        class Local(Exception):
            def __init__(self):
                super().__init__("local trouble")
                self.lock = threading.Lock()

        raise Local()

    with pytest.raises(TaskError, match="local trouble") as info:
        runtime.get(raise_unpicklable.remote())
    assert "could not be pickled" in str(info.value)


def test_an_unpicklable_argument_raises_serialization_error_naming_the_type(cluster):
    with pytest.raises(SerializationError, match="lock"):
        add.remote(threading.Lock(), 1)


def test_an_unpicklable_return_value_fails_the_task_and_the_node_lives_on(cluster):
    @runtime.remote
    def make_lock():
        return threading.Lock()

    with pytest.raises(SerializationError, match="lock"):
        runtime.get(make_lock.remote())
    assert runtime.get([add.remote(1, 1) for _ in range(4)]) == [2] * 4


def test_get_with_a_timeout_raises_get_timeout_error(cluster):
    signal = Signal.remote()
    ref = signal.wait.remote()
    with pytest.raises(GetTimeoutError) as info:
        runtime.get(ref, timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    runtime.get(signal.set.remote())
    assert runtime.get(ref, timeout=10) is None


def test_wait_returns_ready_and_not_ready_in_order(cluster):
    signal = Signal.remote()
    blocked = signal.wait.remote()
    done = [add.remote(i, 0) for i in range(3)]
    ready, not_ready = runtime.wait([blocked, *done], num_returns=3, timeout=10)
    assert ready == done
    assert not_ready == [blocked]
    ready, not_ready = runtime.wait([blocked], num_returns=1, timeout=0.1)
    assert (ready, not_ready) == ([], [blocked])
    runtime.get(signal.set.remote())
    with pytest.raises(ValueError):
        runtime.wait(done, num_returns=4)


def test_tasks_queue_when_no_node_has_room_and_run_when_one_frees(cluster):
    signal = Signal.remote()

    @runtime.remote(num_cpus=1)
    async def hold(signal):
        await signal.arrive.remote()
        await signal.wait.remote()
        return "done"

    refs = [hold.remote(signal) for _ in range(4)]
    # Two CPUs in the mesh: two tasks run, two wait for a CPU.
    while runtime.get(signal.arrived.remote()) < 2:
        runtime.wait(refs, num_returns=1, timeout=0.05)
    ready, _ = runtime.wait(refs, num_returns=1, timeout=0.3)
    assert ready == []
    assert runtime.get(signal.arrived.remote()) == 2
    runtime.get(signal.set.remote())
    assert runtime.get(refs, timeout=30) == ["done"] * 4
    assert runtime.get(signal.arrived.remote()) == 4


def test_custom_and_fractional_resources_are_granted(cluster):
    @runtime.remote(num_cpus=0.5, resources={"custom": 1})
    def small():
        return runtime.get_runtime_context().get_node_id()

    nodes = set(runtime.get([small.remote() for _ in range(6)]))
    host_of = {n["NodeID"]: n["HostID"] for n in runtime.nodes()}
    assert len({host_of[n] for n in nodes}) == 1  # the custom resource is the host's


def test_infeasible_requests_fail_with_a_clear_error(cluster, monkeypatch):
    monkeypatch.setenv("RUNTIME_INFEASIBLE_S", "0.5")  # the grace for nodes still joining
    with pytest.raises(InfeasibleError, match="GPU"):
        runtime.get(add.options(num_gpus=1).remote(1, 2), timeout=10)
    with pytest.raises(InfeasibleError, match="nope"):
        runtime.get(add.options(resources={"nope": 1}).remote(1, 2), timeout=10)
    with pytest.raises(ValueError, match="num_cpus"):
        add.options(resources={"CPU": 1})


def test_runtime_context_names_the_node_and_task(cluster):
    @runtime.remote
    def where():
        ctx = runtime.get_runtime_context()
        return ctx.get_node_id(), ctx.get_task_id()

    node_id, task_id = runtime.get(where.remote())
    driver = runtime.get_runtime_context()
    assert node_id != driver.get_node_id()
    assert task_id is not None
    assert driver.get_task_id() is None


def test_blocking_get_on_the_event_loop_says_to_await(cluster):
    @runtime.remote
    async def blocks():
        return runtime.get(add.remote(1, 1))

    with pytest.raises(RuntimeError, match="await"):
        runtime.get(blocks.remote())


def test_refs_work_as_futures(cluster):
    assert add.remote(2, 3).future().result(timeout=10) == 5


def test_cluster_resources_and_nodes(cluster):
    assert runtime.cluster_resources()["CPU"] == 2.0
    assert runtime.cluster_resources()["custom"] == 2.0
    nodes = [n for n in runtime.nodes() if not n["IsDriver"]]
    assert len(nodes) == 3  # head + two nodes
    assert all(n["Alive"] for n in nodes)


def test_tasks_go_around_a_node_whose_cpu_an_actor_holds(cluster):
    @runtime.remote
    class Holder:
        def ping(self):
            return "held"

    @runtime.remote
    def work(i):
        return i

    for _ in range(3):  # at once after the actor starts: nodes' reports may lag behind
        holder = Holder.options(num_cpus=1).remote()
        assert runtime.get(holder.ping.remote()) == "held"
        assert runtime.get([work.remote(i) for i in range(6)], timeout=20) == list(range(6))
        runtime.kill(holder)
