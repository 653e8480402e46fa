"""Pure pieces, no cluster: options checked up front, the app graph, HTTP mapping, batching,
the router's choice and queue, the autoscaling rule, and the public names."""

from __future__ import annotations

import asyncio
import json

import pytest

from runtime import serve
from runtime.serve import _http
from runtime.serve._deployment import build
from runtime.serve._router import ReplicaSlot, Router

pytestmark = pytest.mark.timeout(30)


def test_public_names_are_sorted_documented_and_importable() -> None:
    assert sorted(serve.__all__) == serve.__all__
    for name in serve.__all__:
        assert getattr(serve, name).__doc__, f"serve.{name} has no docstring"
    assert issubclass(serve.BackPressureError, serve.ServeError)
    assert issubclass(serve.BackPressureError, RuntimeError)
    import runtime.exceptions

    assert issubclass(serve.ServeError, runtime.exceptions.RuntimeBaseError)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"num_replicas": -1}, ValueError, "num_replicas"),
        ({"max_ongoing_requests": 0}, ValueError, "max_ongoing_requests"),
        ({"max_queued_requests": -2}, ValueError, "max_queued_requests"),
        ({"health_check_period_s": 0}, ValueError, "health_check_period_s"),
        ({"ray_actor_options": {"lifetime": "detached"}}, ValueError, "ray_actor_options"),
        ({"autoscaling_config": {"min_replicas": 3, "max_replicas": 2}}, ValueError, "max_repl"),
        ({"autoscaling_config": {"target": 1}}, ValueError, "unknown autoscaling_config"),
        ({"no_such_option": 1}, TypeError, "unknown deployment options"),
    ],
)
def test_bad_deployment_options_fail_at_declaration(
    options: dict, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):

        @serve.deployment(**options)
        class D:
            pass


def test_bad_names_and_calls_are_refused_up_front() -> None:
    @serve.deployment
    class D:
        pass

    with pytest.raises(ValueError, match="deployment name"):
        D.options(name="a/b")
    with pytest.raises(TypeError, match="cannot be called directly"):
        D()
    with pytest.raises(TypeError, match="expected an application"):
        build(D, "app")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="passed unbound"):
        build(D.bind(D), "app")
    with pytest.raises(ValueError, match="route_prefix"):
        serve.run(D.bind(), route_prefix="no-slash")
    with pytest.raises(TypeError, match="async def"):
        serve.batch(lambda xs: xs)


def test_build_turns_bound_deployments_into_handles_and_dedupes_names() -> None:
    @serve.deployment
    class Leaf:
        def __init__(self, n: int) -> None:
            self.n = n

    @serve.deployment
    class Root:
        def __init__(self, a: object, rest: list) -> None:
            pass

    shared = Leaf.bind(1)
    ingress, specs = build(Root.bind(shared, [shared, Leaf.bind(2)]), "app")
    assert ingress == "Root"
    assert [s.name for s in specs] == ["Root", "Leaf", "Leaf_1"]
    import cloudpickle

    _, args, _ = cloudpickle.loads(specs[0].blob)
    handle, rest = args
    assert isinstance(handle, serve.DeploymentHandle) and handle.deployment_name == "Leaf"
    assert [h.deployment_name for h in rest] == ["Leaf", "Leaf_1"]
    # Same code and arguments: same version; other arguments: another version.
    shared_again = Leaf.bind(1)
    _, again = build(Root.bind(shared_again, [shared_again, Leaf.bind(2)]), "app")
    assert specs[1].code_version == again[1].code_version
    assert specs[2].code_version == again[2].code_version
    _, other = build(Leaf.bind(3), "app")
    assert other[0].code_version != specs[1].code_version


def test_return_values_render_as_api_md_says() -> None:
    assert _http.render({"a": 1})[2] == b'{"a":1}'
    assert _http.render("hi")[1] == [("Content-Type", _http.TEXT_TYPE)]
    assert _http.render(b"\x00")[1] == [("Content-Type", _http.BYTES_TYPE)]
    status, headers, body = _http.render(serve.Response("x", status=202, headers={"A": "b"}))
    assert (status, body, dict(headers)["A"]) == (202, b"x", "b")
    with pytest.raises(TypeError, match="not JSON-serializable"):
        _http.render(object())
    status, _, body = _http.render_error(serve.HTTPException(404, "gone"))
    assert (status, json.loads(body)["message"]) == (404, "gone")
    assert _http.render_error(ValueError("boom"))[0] == 500


async def test_request_parses_query_headers_and_body() -> None:
    req = _http.Request("POST", "/p", "a=1&b=2&a=3", [("X-Key", "v")], b'{"k": [1]}')
    assert req.query_params == {"a": "3", "b": "2"}
    assert req.headers["x-key"] == "v" and "X-KEY" in req.headers
    assert await req.json() == {"k": [1]}
    assert await req.text() == '{"k": [1]}'
    bad = _http.Request("POST", "/p", body=b"\xff")
    with pytest.raises(serve.HTTPException, match="not valid JSON") as info:
        await bad.json()
    assert info.value.status_code == 400


async def test_batch_groups_calls_and_fails_every_caller_of_a_failing_batch() -> None:
    sizes: list[int] = []

    class Model:
        @serve.batch(max_batch_size=3, batch_wait_timeout_s=0.05)
        async def double(self, xs: list[int]) -> list[int]:
            sizes.append(len(xs))
            if 99 in xs:
                raise ValueError("bad batch")
            return [x * 2 for x in xs]

    m = Model()
    assert await asyncio.gather(*(m.double(i) for i in range(7))) == [i * 2 for i in range(7)]
    assert sizes[:2] == [3, 3]
    results = await asyncio.gather(m.double(1), m.double(99), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)

    class Wrong:
        @serve.batch
        async def f(self, xs: list[int]) -> list[int]:
            return [1]

    w = Wrong()
    with pytest.raises(TypeError, match="must return a list of 2"):
        await asyncio.gather(w.f(1), w.f(2))


async def test_router_picks_the_less_busy_replica_caps_and_queues() -> None:
    router = Router("app", "dep", asyncio.get_running_loop())
    try:
        router.update(
            {"replicas": [("r1", None), ("r2", None)], "max_ongoing_requests": 2,
             "max_queued_requests": 1}
        )  # fmt: skip
        taken = [router.try_assign() for _ in range(4)]
        assert all(isinstance(s, ReplicaSlot) for s in taken)
        assert sorted(s.tag for s in taken if s) == ["r1", "r1", "r2", "r2"]
        assert router.try_assign() is None  # both at max_ongoing_requests
        waiter = asyncio.ensure_future(router.assign())
        await asyncio.sleep(0)
        with pytest.raises(serve.BackPressureError, match="max_queued_requests=1"):
            await router.assign()
        first = taken[0]
        assert first is not None
        router.release(first)  # the freed slot goes straight to the waiter
        assert (await waiter) is first
        router.update(None)
        with pytest.raises(serve.DeploymentUnavailableError, match="does not exist"):
            await router.assign()
    finally:
        router.close()


async def test_a_refused_request_keeps_its_place_and_the_queue_keeps_its_bound() -> None:
    router = Router("app", "dep", asyncio.get_running_loop())
    try:
        router.update(
            {"replicas": [("r1", None)], "max_ongoing_requests": 1, "max_queued_requests": 2}
        )
        first = router.try_assign()
        assert first is not None
        waiting = [asyncio.ensure_future(router.assign()) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(serve.BackPressureError):
            await router.assign()
        # The replica refuses the first request (another caller fills it): its slot goes
        # to no one, and the refused request waits at the head of the queue, outside the
        # bound, so the queue still has no room for a new one.
        router.release(first, ran=False)
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiting)
        refused = asyncio.ensure_future(router.assign(refused=True))
        await asyncio.sleep(0)
        with pytest.raises(serve.BackPressureError):
            await router.assign()
        # The back-off over, the refused request goes first.
        again = await asyncio.wait_for(refused, 5)
        assert again is first
        assert not any(w.done() for w in waiting)
        with pytest.raises(serve.BackPressureError):
            await router.assign()
        router.release(again)  # it ran: the slot goes to the oldest waiter
        assert (await asyncio.wait_for(waiting[0], 5)) is first
        assert not waiting[1].done()
        waiting[1].cancel()
    finally:
        router.close()


async def test_requests_that_wait_for_the_first_replica_list_keep_order_and_bound() -> None:
    router = Router("app", "dep", asyncio.get_running_loop())
    try:
        early = [asyncio.ensure_future(router.assign()) for _ in range(4)]
        await asyncio.sleep(0)  # all wait for the controller's first list
        late = asyncio.ensure_future(router.assign())  # sent just as the list comes
        router.update(
            {"replicas": [("r1", None)], "max_ongoing_requests": 1, "max_queued_requests": 2}
        )
        slot = await asyncio.wait_for(early[0], 5)  # the oldest goes first, not the latest
        # The list says the queue holds 2: the newest early one is refused, and so is the
        # late one; the two oldest wait.
        with pytest.raises(serve.BackPressureError, match="max_queued_requests=2"):
            await early[3]
        with pytest.raises(serve.BackPressureError, match="2 requests queued"):
            await late
        assert not early[1].done() and not early[2].done()
        router.release(slot)
        assert (await asyncio.wait_for(early[1], 5)) is slot
        assert not early[2].done()
        early[2].cancel()
    finally:
        router.close()


def test_autoscaling_rule() -> None:
    a = serve.AutoscalingConfig(min_replicas=0, max_replicas=4, target_ongoing_requests=2)
    assert a.desired(current=0, total_load=0) == 0
    assert a.desired(current=0, total_load=1) == 1  # from zero, one request starts one
    assert a.desired(current=1, total_load=5) == 3
    assert a.desired(current=2, total_load=100) == 4
    assert serve.AutoscalingConfig(min_replicas=1, max_replicas=2).desired(3, 0) == 1


def test_serve_calls_without_a_runtime_say_serve_is_not_running() -> None:
    import runtime

    if runtime.is_initialized():
        pytest.skip("a runtime is up in this process")
    assert serve.status().applications == {}
    serve.shutdown()  # harmless
    with pytest.raises(serve.DeploymentUnavailableError, match="not running"):
        serve.get_app_handle("x")
