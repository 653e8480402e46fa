"""Ray Serve programs that port unchanged: Ray's module paths, a zero-argument ``__call__``
over HTTP, ``@serve.batch`` returning an ndarray, a FastAPI app defined in ``__main__``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from runtime import serve

from .conftest import fetch_many, http, http_json

pytestmark = pytest.mark.timeout(60)


def test_rays_module_paths_hold_the_same_objects() -> None:
    from runtime.serve import config, handle, schema

    assert handle.DeploymentHandle is serve.DeploymentHandle
    assert handle.DeploymentResponse is serve.DeploymentResponse
    assert handle.DeploymentResponseGenerator is serve.DeploymentResponseGenerator
    assert config.AutoscalingConfig is serve.AutoscalingConfig
    assert config.HTTPOptions is serve.HTTPOptions
    assert config.ProxyLocation.parse("EveryNode") is config.ProxyLocation.EveryNode
    assert config.gRPCOptions(port=9001).port == 9001
    for name in config.__all__ + handle.__all__:
        assert hasattr(config if name in config.__all__ else handle, name)
    assert schema.__all__ == ["LoggingConfig"]
    logging_config = schema.LoggingConfig(encoding="JSON", log_level="DEBUG", logs_dir="/tmp/x",
                                          enable_access_log=False,
                                          additional_log_standard_attrs=["name"])  # fmt: skip
    assert logging_config.additional_log_standard_attrs == ("name",)


@serve.deployment
class NoArgs:
    def __call__(self) -> str:
        return "no request needed"


@serve.deployment
def hello() -> dict:
    return {"hello": "world"}


def test_a_call_method_without_arguments_answers_http(serve_cluster: str) -> None:
    serve.run(NoArgs.bind(), name="noargs", route_prefix="/noargs")
    serve.run(hello.bind(), name="hello", route_prefix="/hello")
    status, _, body = http(f"{serve_cluster}/noargs")
    assert (status, body) == (200, b"no request needed")
    assert http_json(f"{serve_cluster}/hello") == {"hello": "world"}


@serve.deployment(max_ongoing_requests=16)
class Doubler:
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.2)
    async def __call__(self, requests: list) -> np.ndarray:
        xs = [float(r.query_params["x"]) if isinstance(r, serve.Request) else r for r in requests]
        return np.array(xs) * 2


async def test_a_batch_method_may_return_an_ndarray(serve_cluster: str) -> None:
    handle = serve.run(Doubler.bind(), name="doubler", route_prefix="/double")
    import asyncio

    results = await asyncio.gather(*(handle.remote(float(i)) for i in range(6)))
    assert [float(r) for r in results] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    answers = await asyncio.to_thread(
        fetch_many, [f"{serve_cluster}/double?x={i}" for i in range(4)], 4
    )
    assert sorted(json.loads(body) for status, body in answers if status == 200) == [
        0.0,
        2.0,
        4.0,
        6.0,
    ]


_MAIN_APP = """
import json, os, urllib.request
import runtime
from runtime import serve
from fastapi import FastAPI

app = FastAPI()

@serve.deployment
@serve.ingress(app)
class Api:
    def __init__(self) -> None:
        self.count = 0

    @app.get("/count")
    def count(self) -> dict:
        self.count += 1
        return {"count": self.count, "pid": os.getpid()}

if __name__ == "__main__":
    runtime.init(num_cpus=1)
    try:
        serve.start(http_options={"port": 0})
        serve.run(Api.bind(), route_prefix="/api")
        url = f"http://127.0.0.1:{serve.status().http_port}/api/count"
        out = [json.loads(urllib.request.urlopen(url, timeout=30).read()) for _ in range(2)]
        print("RESULT", json.dumps({"driver": os.getpid(), "answers": out}))
        serve.shutdown()
    finally:
        runtime.shutdown()
"""


@pytest.mark.timeout(120)
def test_a_fastapi_app_defined_in_main_is_served(tmp_path: object) -> None:
    pytest.importorskip("fastapi")
    script = os.path.join(str(tmp_path), "main_app.py")
    with open(script, "w") as f:
        f.write(textwrap.dedent(_MAIN_APP))
    env = dict(os.environ, RUNTIME_TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, script],
        check=False,
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert [o["count"] for o in result["answers"]] == [1, 2]
    assert result["answers"][0]["pid"] != result["driver"]  # served by a replica
