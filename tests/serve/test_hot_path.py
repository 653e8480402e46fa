"""The request path's parts, no cluster: the proxy's acceptor, a proxy's preference for the
replica on its own node, headers decoded only when read, a replica's cancellation without a
task per request, and the garbage collector's freeze after a replica starts."""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import Any

import cloudpickle
import pytest

from runtime.serve import _http
from runtime.serve._exceptions import RequestCancelledError
from runtime.serve._proxy import _BUSY, _Acceptor
from runtime.serve._replica import ServeReplica
from runtime.serve._router import Router

pytestmark = pytest.mark.timeout(30)


class _Recorder(asyncio.Protocol):
    made: list[Any] = []

    def connection_made(self, transport: Any) -> None:
        self.made.append(transport)


async def test_one_readiness_accepts_every_waiting_connection_and_refuses_beyond_the_cap() -> None:
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    clients = []
    for _ in range(40):  # all in the kernel's accept queue before the loop looks
        c = socket.create_connection(listener.getsockname())
        clients.append(c)
    _Recorder.made = []
    acceptor = _Acceptor(loop, listener, _Recorder, cap=30, live=lambda: 0)
    try:
        acceptor._ready()  # one readiness
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing left waiting
        await asyncio.gather(*acceptor._tasks)
        assert len(_Recorder.made) == 30
        refused = 0
        for c in clients:
            c.setblocking(False)
            try:
                data = c.recv(1024)
            except BlockingIOError:
                continue  # accepted and handed to the protocol: no answer yet
            assert data == _BUSY
            refused += 1
        assert refused == 10
    finally:
        acceptor.close()
        for t in _Recorder.made:
            t.close()
        for c in clients:
            c.close()


async def test_a_proxy_router_prefers_the_replica_on_its_own_node_while_it_has_room() -> None:
    router = Router("app", "dep", asyncio.get_running_loop(), prefer_local=True)
    router._node_id = "n1"  # as a proxy on node n1
    try:
        router.update(
            {
                "replicas": [("far", None), ("near", None)],
                "nodes": {"far": "n2", "near": "n1"},
                "max_ongoing_requests": 2,
                "max_queued_requests": 0,
            }
        )
        taken = [router.try_assign() for _ in range(4)]
        assert [s.tag if s else None for s in taken] == ["near", "near", "far", "far"]
        assert router.try_assign() is None
        near = taken[0]
        assert near is not None
        router.release(near)
        again = router.try_assign()
        assert again is not None and again.tag == "near"
        # A multiplexed model not held anywhere yet is spread, not piled on this node's
        # replica (other proxies would pile theirs on their own, and the caches thrash).
        for slot in [*taken[1:], again]:
            assert slot is not None
            router.release(slot)
        first, second = router.try_assign("m1"), router.try_assign("m2")
        assert first is not None and second is not None
        assert {first.tag, second.tag} == {"far", "near"}
    finally:
        router.close()


async def test_a_router_without_the_preference_spreads_over_every_replica() -> None:
    router = Router("app", "dep", asyncio.get_running_loop())
    router._node_id = "n1"
    try:
        router.update(
            {
                "replicas": [("far", None), ("near", None)],
                "nodes": {"far": "n2", "near": "n1"},
                "max_ongoing_requests": 2,
                "max_queued_requests": 0,
            }
        )
        first, second = router.try_assign(), router.try_assign()
        assert first is not None and second is not None
        assert {first.tag, second.tag} == {"far", "near"}  # the less busy of two
    finally:
        router.close()


async def test_headers_from_the_wire_are_decoded_only_when_read() -> None:
    raw = ((b"Host", b"x"), (b"X-Name", b"caf\xc3\xa9"), (b"X-Raw", b"\xff"))
    req = _http.Request.from_wire("GET", "/p", "a=1", _http.encode_raw_headers(raw), b"", "/")
    assert req._headers is None
    assert req.headers["x-name"] == "café"
    assert req.headers["X-RAW"] == "\udcff"  # undecodable bytes kept, as aiohttp keeps them
    assert req.query_params == {"a": "1"}
    old = _http.decode_request("GET", "/p", "", _http.encode_request({"K": "v"}), b"", "/")
    assert old.headers["k"] == "v"
    req.headers = [("Only", "this")]
    assert dict(req.headers) == {"only": "this"}


class _Slow:
    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def __call__(self) -> str:
        self.started.set()
        await asyncio.sleep(30)
        return "late"

    async def wait(self) -> str:
        self.started.set()
        await asyncio.sleep(30)
        return "late"


async def _replica() -> ServeReplica:
    replica = ServeReplica("app", "dep", "tag", cloudpickle.dumps((_Slow, (), {})), False)
    await replica.initialize()
    return replica


async def test_cancel_request_ends_the_user_code_as_request_cancelled_and_the_call_goes_on() -> (
    None
):
    replica = await _replica()
    call = asyncio.ensure_future(replica.handle_request("r1", "wait", False, ""))
    await asyncio.wait_for(replica._obj.started.wait(), 5)
    assert await replica.cancel_request("r1")
    with pytest.raises(RequestCancelledError, match="r1 was cancelled"):
        await call
    assert call.cancelling() == 0  # the call's own task was not left cancelled
    assert replica._ongoing == 0 and not replica._tasks and not replica._cancelling
    assert not await replica.cancel_request("r1")  # nothing runs under that id any more


async def test_cancelling_the_call_itself_stays_a_cancellation() -> None:
    replica = await _replica()
    call = asyncio.ensure_future(replica.handle_request("r2", "wait", False, ""))
    await asyncio.wait_for(replica._obj.started.wait(), 5)
    call.cancel()  # runtime.cancel, or the node shutting down
    with pytest.raises(asyncio.CancelledError):
        await call
    assert replica._ongoing == 0 and not replica._tasks


async def test_a_replica_freezes_what_it_loaded_out_of_the_collectors_passes() -> None:
    before = gc.get_freeze_count()
    try:
        await _replica()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()


class _Mixed:
    async def __call__(self, request: Any) -> dict[str, str]:
        if request.path.endswith("/slow"):
            await asyncio.sleep(0.5)
        return {"path": request.path}


def _args(request_id: str, path: str) -> list[Any]:
    return [request_id, "GET", path, "", _http.encode_raw_headers(()), b"", "/", ""]


async def test_a_batch_answers_its_fast_requests_without_waiting_for_a_slow_one() -> None:
    replica = ServeReplica("app", "dep", "tag", cloudpickle.dumps((_Mixed, (), {})), False)
    await replica.initialize()
    loop = asyncio.get_running_loop()
    started = loop.time()
    answers = await replica.handle_http_batch(
        [_args("a", "/fast"), _args("b", "/slow"), _args("c", "/fast")]
    )
    assert loop.time() - started < 0.4  # not held for the slow one
    assert answers[1] is None  # still running: fetched apart
    assert _http.unpack_answer(answers[0])[2] == b'{"path":"/fast"}'
    assert _http.unpack_answer(answers[2])[0] == 200
    late = await asyncio.wait_for(replica.http_result("b"), 5)
    assert _http.unpack_answer(late)[2] == b'{"path":"/slow"}'
    with pytest.raises(RequestCancelledError, match="no answer"):
        await replica.http_result("b")  # fetched once
    assert replica._ongoing == 0


async def test_a_batch_beyond_max_ongoing_requests_answers_the_refusal_per_request() -> None:
    blob = cloudpickle.dumps((_Mixed, (), {}))
    replica = ServeReplica("app", "dep", "tag", blob, False, max_ongoing=2)
    await replica.initialize()
    answers = await replica.handle_http_batch([_args(str(i), "/slow") for i in range(3)])
    assert answers[:2] == [None, None]  # running (fetched apart); the third did not run
    assert type(answers[2]).__name__ == "ReplicaFullError"
    for request_id in ("0", "1"):
        assert _http.unpack_answer(await replica.http_result(request_id))[0] == 200
