"""Ray's parameter names and init() options: a Ray program's calls start here unchanged."""

from __future__ import annotations

import logging
import types
import warnings

import pytest

import runtime

pytestmark = pytest.mark.timeout(90)


@runtime.remote
def _square(x: int) -> int:
    return x * x


@runtime.remote
def _sleep() -> None:
    import time

    time.sleep(30)


def test_get_wait_and_cancel_take_rays_keyword_names():
    runtime.init(num_cpus=1)
    try:
        _keywords()
    finally:
        runtime.shutdown()


def _keywords() -> None:
    ref = _square.remote(3)
    assert runtime.get(object_refs=ref, timeout=30) == 9
    assert runtime.get(object_refs=[ref, _square.remote(2)]) == [9, 4]
    ready, rest = runtime.wait(ray_waitables=[ref], num_returns=1, timeout=30)
    assert (ready, rest) == ([ref], [])
    slow = _sleep.remote()
    runtime.cancel(ray_waitable=slow, force=True)
    with pytest.raises(runtime.exceptions.TaskCancelledError):
        runtime.get(slow, timeout=30)


def test_init_refuses_an_option_ray_does_not_know_either():
    with pytest.raises(TypeError, match="no_such_option"):
        runtime.init(num_cpus=1, no_such_option=1)
    assert not runtime.is_initialized()


def test_init_warns_once_for_ray_options_with_no_meaning_here():
    with pytest.warns(UserWarning, match=r"_lru_evict=.*no effect here"):
        runtime.init(num_cpus=1, _lru_evict=True, _node_name=None)
    runtime.shutdown()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runtime.init(num_cpus=1, include_dashboard=False)
    runtime.shutdown()


def test_init_applies_logging_level_temp_dir_and_a_job_configs_runtime_env(tmp_path):
    job_config = types.SimpleNamespace(
        runtime_env={"env_vars": {"RAY_STYLE_JOB": "yes"}}, ray_namespace="jobs"
    )
    info = runtime.init(
        num_cpus=1,
        job_config=job_config,
        logging_level=logging.WARNING,
        _temp_dir=str(tmp_path),
    )
    try:
        assert logging.getLogger("runtime").level == logging.WARNING
        assert info["namespace"] == "jobs"

        @runtime.remote
        def env() -> str | None:
            import os

            return os.environ.get("RAY_STYLE_JOB")

        assert runtime.get(env.remote(), timeout=30) == "yes"
        assert any(tmp_path.iterdir())  # the session's traces went to _temp_dir
    finally:
        runtime.shutdown()
        logging.getLogger("runtime").setLevel(logging.NOTSET)


@runtime.remote(resources={"custom": 1.0})
def _assigned() -> dict[str, float]:
    return runtime.get_runtime_context().get_assigned_resources()


@runtime.remote(num_cpus=1)
class _Holder:
    def assigned(self) -> dict[str, float]:
        return runtime.get_runtime_context().get_assigned_resources()


def test_get_assigned_resources_names_what_a_task_or_actor_holds(cluster):
    assert runtime.get(_assigned.remote(), timeout=30) == {"CPU": 1.0, "custom": 1.0}
    holder = _Holder.remote()
    assert runtime.get(holder.assigned.remote(), timeout=30) == {"CPU": 1.0}
    assert runtime.get_runtime_context().get_assigned_resources() == {}


@runtime.remote
def _init_inside() -> tuple[bool, str, str]:
    try:
        runtime.init()
        outcome = "started a second cluster"
    except RuntimeError as exc:
        outcome = str(exc)
    info = runtime.init(ignore_reinit_error=True)
    return runtime.is_initialized(), outcome, info["node_id"]


def test_inside_a_task_the_runtime_is_initialized_and_init_starts_nothing(cluster):
    initialized, outcome, node_id = runtime.get(_init_inside.remote(), timeout=30)
    assert initialized is True
    assert "inside a task or actor" in outcome
    assert node_id in {n["NodeID"] for n in runtime.nodes()}


@runtime.remote
def _count(n: int):  # type: ignore[no-untyped-def]
    yield from range(n)


@runtime.remote
class _Counter:
    async def count(self, n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i * 10


def test_generator_functions_and_methods_stream_by_default_as_in_ray(cluster):
    gen = _count.remote(3)
    assert isinstance(gen, runtime.ObjectRefGenerator)
    assert [runtime.get(ref, timeout=30) for ref in gen] == [0, 1, 2]
    counter = _Counter.remote()
    assert [runtime.get(ref, timeout=30) for ref in counter.count.remote(3)] == [0, 10, 20]
    # an explicit num_returns still wins
    assert runtime.get(_count.options(num_returns=2).remote(2), timeout=30) == [0, 1]
