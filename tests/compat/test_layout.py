"""Ray's module paths and names, mirrored outside core, mean what they mean in Ray."""

from __future__ import annotations

import importlib
import io
import threading
from collections.abc import Iterator

import pytest

import runtime
import runtime.exceptions as exc
from runtime import util


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("runtime.util.scheduling_strategies", ["PlacementGroupSchedulingStrategy"]),
        ("runtime.util.queue", ["Queue", "Empty", "Full"]),
        ("runtime.util.placement_group", ["placement_group", "remove_placement_group"]),
        ("runtime.util.actor_pool", ["ActorPool"]),
        ("runtime.runtime_context", ["RuntimeContext", "get_runtime_context"]),
        ("runtime.actor", ["ActorHandle", "ActorClass", "exit_actor"]),
        ("runtime.dag.input_node", ["InputNode"]),
        ("runtime.dag.output_node", ["MultiOutputNode"]),
        ("runtime._raylet", ["ObjectRefGenerator", "ObjectRef"]),
    ],
)
def test_each_ray_module_path_holds_the_same_objects_as_the_flat_names(
    module: str, names: list[str]
) -> None:
    mod = importlib.import_module(module)
    for name in names:
        flat = getattr(util, name, None) or getattr(runtime, name, None)
        if flat is not None:
            assert getattr(mod, name) is flat, f"{module}.{name}"
        else:
            assert callable(getattr(mod, name))


def test_runtime_cloudpickle_is_the_package_refs_pickle_with() -> None:
    import cloudpickle

    from runtime import cloudpickle as ray_cloudpickle

    assert ray_cloudpickle.dumps is cloudpickle.dumps
    assert ray_cloudpickle.loads(ray_cloudpickle.dumps(lambda: 7))() == 7


def test_util_placement_group_stays_the_function_after_its_module_is_imported() -> None:
    pg_module = importlib.import_module("runtime.util.placement_group")
    from runtime.util import placement_group

    assert callable(placement_group)
    assert pg_module.placement_group is placement_group is util.placement_group


def test_ray_error_names_catch_what_the_runtime_raises() -> None:
    assert exc.RayError is exc.RuntimeBaseError
    assert issubclass(exc.ActorDiedError, exc.RayActorError)
    assert issubclass(exc.GetTimeoutError, exc.RayError)
    with pytest.raises(exc.RayTaskError):
        raise exc.TaskError("f", "Traceback ...", ValueError("x"))
    with pytest.raises(exc.WorkerCrashedError):
        raise exc.NodeDiedError("node 1 died")
    with pytest.raises(exc.ObjectStoreFullError):
        raise exc.OutOfMemoryError("store full")
    for name in ("RaySystemError", "RuntimeEnvSetupError", "ObjectFetchTimedOutError"):
        assert issubclass(getattr(exc, name), exc.RayError)
    assert issubclass(exc.ObjectFetchTimedOutError, exc.ObjectLostError)


def test_runtime_env_takes_ray_fields_and_refuses_others() -> None:
    from runtime.runtime_env import RuntimeEnv

    env = RuntimeEnv(env_vars={"A": "1"}, working_dir=None)
    assert env == {"env_vars": {"A": "1"}}
    assert isinstance(env, dict)
    with pytest.raises(TypeError, match="unknown fields \\['env_var'\\]"):
        RuntimeEnv(env_var={"A": "1"})


def test_job_config_maps_to_init_keywords() -> None:
    from runtime.job_config import JobConfig

    cfg = JobConfig(runtime_env={"env_vars": {"A": "1"}}, ray_namespace="team")
    assert cfg.init_kwargs() == {"runtime_env": {"env_vars": {"A": "1"}}, "namespace": "team"}
    with pytest.raises(ValueError, match="default_actor_lifetime"):
        JobConfig(default_actor_lifetime="forever")


def test_inspect_serializability_names_the_member_that_does_not_pickle() -> None:
    lock = threading.Lock()

    def uses_lock() -> object:
        return lock

    report = io.StringIO()
    ok, failures = util.inspect_serializability(uses_lock, print_file=report)
    assert not ok
    assert {(f.name, type(f.obj)) for f in failures} == {("lock", type(lock))}
    assert "'uses_lock' is not serializable" in report.getvalue()
    ok, failures = util.inspect_serializability(lambda: 1, name="fine", print_file=report)
    assert ok and failures == set()


def test_node_ip_address_before_init_is_this_machines_address() -> None:
    import ipaddress

    assert not runtime.is_initialized()
    ipaddress.ip_address(util.get_node_ip_address())


@pytest.fixture(scope="module")
def mesh2() -> Iterator[None]:
    runtime.init(num_cpus=2)
    try:
        yield
    finally:
        runtime.shutdown()


@runtime.remote
def add(a: int, b: int) -> int:
    return a + b


@runtime.remote
class Scaler:
    def __init__(self, k: int) -> None:
        self.k = k

    def scale(self, x: int) -> int:
        return self.k * x

    def bye(self) -> None:
        from runtime.actor import exit_actor

        exit_actor()

    def node_ip(self) -> str:
        return util.get_node_ip_address()


@pytest.mark.timeout(90)
def test_a_dag_of_tasks_and_actor_methods_runs_once_per_execute(mesh2: None) -> None:
    from runtime.dag import InputNode, MultiOutputNode

    live = Scaler.remote(3)
    with InputNode() as inp:
        total = add.bind(inp[0], inp[1])
        dag = MultiOutputNode([live.scale.bind(total), Scaler.bind(10).scale.bind(total)])
    assert runtime.get(dag.execute(1, 2)) == [9, 30]
    assert runtime.get(dag.execute(2, 2)) == [12, 40]
    with InputNode() as inp:
        single = add.bind(inp, inp.get_args() or 5)
    assert runtime.get(single.execute(1)) == 6
    with InputNode() as inp:
        by_name = add.bind(inp.a, inp.b)
    assert runtime.get(by_name.execute(a=4, b=5)) == 9


@runtime.remote
class Accumulator:
    def __init__(self, start: int) -> None:
        self.total = start

    def add(self, x: int) -> None:
        self.total += x

    def get(self) -> int:
        return self.total


@pytest.mark.timeout(90)
def test_calls_bound_on_an_actor_node_run_in_order_even_without_an_output(mesh2: None) -> None:
    a1, a2 = Accumulator.bind(10), Accumulator.bind(10)
    a1.get.bind()
    a1.add.bind(2)
    a1.add.bind(4)  # nothing depends on these two, yet they run before the next get
    a2.add.bind(6)
    dag = add.bind(a1.get.bind(), a2.get.bind())
    assert runtime.get(dag.execute()) == 32


@pytest.mark.timeout(90)
def test_exit_actor_ends_the_actor_and_its_call_fails_with_ray_actor_error(mesh2: None) -> None:
    s = Scaler.remote(1)
    assert runtime.get(s.scale.remote(2), timeout=30) == 2
    with pytest.raises(exc.RayActorError):
        runtime.get(s.bye.remote(), timeout=30)
    with pytest.raises(exc.ActorDiedError):
        runtime.get(s.scale.remote(2), timeout=30)
    with pytest.raises(TypeError, match="outside an actor method"):
        from runtime.actor import exit_actor

        exit_actor()


@pytest.mark.timeout(90)
def test_named_actors_are_listed_by_namespace(mesh2: None) -> None:
    a = Scaler.options(name="scaler-a").remote(1)
    b = Scaler.options(name="scaler-b", namespace="other").remote(1)
    runtime.get([a.scale.remote(1), b.scale.remote(1)], timeout=30)
    assert "scaler-a" in util.list_named_actors()
    assert "scaler-b" not in util.list_named_actors()
    everywhere = util.list_named_actors(all_namespaces=True)
    assert {"name": "scaler-b", "namespace": "other"} in everywhere
    runtime.kill(a)
    runtime.kill(b)


@pytest.mark.timeout(90)
def test_placement_group_table_of_one_group_is_its_row(mesh2: None) -> None:
    pg = util.placement_group([{"CPU": 1}], name="one")
    assert pg.wait(30)
    row = util.placement_group_table(pg)
    assert row["placement_group_id"] == pg.id and row["name"] == "one"
    assert row["bundles"] == {0: {"CPU": 1.0}} and row["state"] == "CREATED"
    assert row in util.placement_group_table()
    util.remove_placement_group(pg)


@pytest.mark.timeout(90)
def test_node_ip_address_is_the_address_the_node_listens_on(mesh2: None) -> None:
    s = Scaler.remote(1)
    addresses = {n["NodeManagerAddress"] for n in runtime.nodes()}
    assert runtime.get(s.node_ip.remote(), timeout=30) in addresses
    assert util.get_node_ip_address() in addresses


def test_bind_is_a_method_of_the_core_classes_and_makes_dag_nodes() -> None:
    from runtime.dag import ClassNode, FunctionNode

    for cls in (runtime.RemoteFunction, runtime.ActorClass, runtime.ActorMethod):
        assert "bind" in vars(cls), cls  # defined by the class, not attached at import
    assert isinstance(add.bind(1, 2), FunctionNode)
    assert isinstance(add.options(num_cpus=0.5).bind(1, 2), FunctionNode)
    assert isinstance(Scaler.bind(2), ClassNode)
