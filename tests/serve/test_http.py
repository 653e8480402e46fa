"""Real HTTP requests against real replicas: routing, mapping of answers, errors."""

from __future__ import annotations

import json
import os

import pytest

from runtime import serve

from .conftest import fetch_many, http, http_json

pytestmark = pytest.mark.timeout(60)


@serve.deployment(num_replicas=2)
class Echo:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def __call__(self, request: serve.Request) -> dict:
        body = await request.body()
        return {
            "tag": self.tag,
            "pid": os.getpid(),
            "method": request.method,
            "path": request.path,
            "query": request.query_params,
            "header": request.headers.get("X-Probe"),
            "body": body.decode(),
        }


@serve.deployment
def kinds(request: serve.Request) -> object:
    kind = request.query_params["kind"]
    if kind == "text":
        return "plain text"
    if kind == "bytes":
        return b"\x00\x01"
    if kind == "list":
        return [1, 2, 3]
    if kind == "response":
        return serve.Response("made", status=201, headers={"X-Made": "yes"})
    if kind == "fail":
        raise ValueError("the app failed on purpose")
    if kind == "teapot":
        raise serve.HTTPException(418, "short and stout")
    return None


@serve.deployment
class JsonBody:
    async def __call__(self, request: serve.Request) -> dict:
        if request.method != "POST":
            raise serve.HTTPException(405, f"{request.method} is not allowed here")
        return {"got": await request.json()}


def test_two_replicas_both_serve_requests(serve_cluster: str) -> None:
    serve.run(Echo.bind("a"), name="echo", route_prefix="/echo")
    answers = fetch_many([f"{serve_cluster}/echo/x?i={i}" for i in range(40)], concurrency=8)
    assert all(status == 200 for status, _ in answers)
    pids = {json.loads(body)["pid"] for _, body in answers}
    assert len(pids) == 2


def test_request_fields_reach_the_deployment(serve_cluster: str) -> None:
    serve.run(Echo.bind("b"), name="echo", route_prefix="/echo")
    import urllib.request

    req = urllib.request.Request(
        f"{serve_cluster}/echo/sub/path?a=1&b=two", data=b"payload", method="PUT",
        headers={"X-Probe": "probe-value"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        got = json.loads(resp.read())
    assert got["tag"] == "b"
    assert got["method"] == "PUT"
    assert got["path"] == "/echo/sub/path"
    assert got["query"] == {"a": "1", "b": "two"}
    assert got["header"] == "probe-value"
    assert got["body"] == "payload"


def test_return_values_map_to_responses(serve_cluster: str) -> None:
    serve.run(kinds.bind(), name="kinds", route_prefix="/kinds")
    status, headers, body = http(f"{serve_cluster}/kinds?kind=text")
    assert (status, body) == (200, b"plain text")
    assert headers["content-type"].startswith("text/plain")
    status, headers, body = http(f"{serve_cluster}/kinds?kind=bytes")
    assert (status, body, headers["content-type"]) == (200, b"\x00\x01", "application/octet-stream")
    assert http_json(f"{serve_cluster}/kinds?kind=list") == [1, 2, 3]
    status, headers, body = http(f"{serve_cluster}/kinds?kind=response")
    assert (status, body, headers["x-made"]) == (201, b"made", "yes")
    assert http_json(f"{serve_cluster}/kinds?kind=none") is None


def test_application_error_is_500_with_json_and_the_replica_keeps_serving(
    serve_cluster: str,
) -> None:
    serve.run(kinds.bind(), name="kinds", route_prefix="/kinds")
    status, _, body = http(f"{serve_cluster}/kinds?kind=fail")
    assert status == 500
    err = json.loads(body)
    assert err["error"] == "ValueError"
    assert "on purpose" in err["message"]
    status, _, body = http(f"{serve_cluster}/kinds?kind=teapot")
    assert status == 418
    assert json.loads(body)["message"] == "short and stout"
    assert http(f"{serve_cluster}/kinds?kind=text")[0] == 200


def test_bad_requests_get_4xx(serve_cluster: str) -> None:
    serve.run(JsonBody.bind(), name="json", route_prefix="/json")
    assert http_json(f"{serve_cluster}/json", method="POST", body=b'{"x": 1}') == {"got": {"x": 1}}
    status, _, body = http(f"{serve_cluster}/json", method="POST", body=b"{not json")
    assert status == 400
    assert "not valid JSON" in json.loads(body)["message"]
    assert http(f"{serve_cluster}/json", method="GET")[0] == 405
    assert 400 <= http(f"{serve_cluster}/json", method="BREW")[0] < 500


def test_unknown_route_is_404_and_longest_prefix_wins(serve_cluster: str) -> None:
    serve.run(Echo.bind("short"), name="short", route_prefix="/api")
    serve.run(Echo.bind("long"), name="long", route_prefix="/api/v2")
    assert http_json(f"{serve_cluster}/api/x")["tag"] == "short"
    assert http_json(f"{serve_cluster}/api/v2/x")["tag"] == "long"
    assert http_json(f"{serve_cluster}/api/v2")["tag"] == "long"
    assert http_json(f"{serve_cluster}/api/v20")["tag"] == "short"
    status, _, body = http(f"{serve_cluster}/nothing-here")
    assert status == 404
    assert json.loads(body)["error"] == "NotFound"
    serve.delete("short")
    serve.delete("long")
    assert http(f"{serve_cluster}/api/x")[0] == 404
    assert "short" not in serve.status().applications


def test_a_taken_route_prefix_is_refused(serve_cluster: str) -> None:
    serve.run(Echo.bind("one"), name="first", route_prefix="/taken")
    with pytest.raises(ValueError, match="already used"):
        serve.run(Echo.bind("two"), name="second", route_prefix="/taken")
    serve.delete("first")
