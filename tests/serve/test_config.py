"""Config operations: `serve build`, deployment versions, the full AutoscalingConfig."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

import runtime
from runtime import serve

from .test_lifecycle import _eventually

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_serve_build_writes_a_config_that_deploy_reads(tmp_path: object) -> None:
    out = os.path.join(str(tmp_path), "config.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.serve", "build", "tests.serve.cli_app:tuned", "-o", out],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with open(out) as f:
        config = yaml.safe_load(f)
    assert config == {
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "applications": [
            {
                "name": "default",
                "route_prefix": "/",
                "import_path": "tests.serve.cli_app:tuned",
                "deployments": [
                    {
                        "name": "Tuned",
                        "num_replicas": 2,
                        "max_ongoing_requests": 7,
                        "user_config": {"greeting": "hi"},
                        "version": "v1",
                    }
                ],
            }
        ],
    }
    # What deploy does with it: the same options on the same graph.
    from runtime.serve._cli import apply_overrides, import_app

    tuned = import_app("tests.serve.cli_app:tuned")
    apply_overrides(tuned, config["applications"][0]["deployments"])
    c = tuned.deployment.config
    assert (c.num_replicas, c.max_ongoing_requests, c.version) == (2, 7, "v1")


@serve.deployment(num_replicas=1)
class Versioned:
    def __init__(self, word: str) -> None:
        self.word = word

    async def __call__(self, request: serve.Request | None = None) -> dict:
        return {"word": self.word, "tag": serve.get_replica_context().replica_tag}


def test_replicas_are_replaced_only_when_the_version_changes(serve_cluster: str) -> None:
    def tags() -> set[str]:
        controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")
        return set(runtime.get(controller.replica_pids.remote("versioned", "Versioned")))

    h = serve.run(Versioned.options(version="1").bind("a"), name="versioned", route_prefix=None)
    first = h.remote().result(timeout_s=30)
    assert first["word"] == "a"
    # New arguments, same version: the running replica stays (and keeps its old arguments).
    h = serve.run(Versioned.options(version="1").bind("b"), name="versioned", route_prefix=None)
    assert h.remote().result(timeout_s=30) == first
    assert tags() == {first["tag"]}
    # A new version rolls the deployment.
    h = serve.run(Versioned.options(version="2").bind("c"), name="versioned", route_prefix=None)
    _eventually(lambda: tags() and first["tag"] not in tags(), what="the old replica gone")
    assert h.remote().result(timeout_s=30)["word"] == "c"
    with pytest.raises(ValueError, match="version"):
        Versioned.options(version="")


def test_autoscaling_smoothing_and_rays_names() -> None:
    a = serve.AutoscalingConfig(min_replicas=1, max_replicas=10, target_ongoing_requests=2)
    assert a.desired(2, 8) == 4  # straight to ceil(8 / 2) with factor 1
    slow = serve.AutoscalingConfig(
        min_replicas=1, max_replicas=10, target_ongoing_requests=2, upscale_smoothing_factor=0.5
    )
    assert slow.desired(2, 8) == 3  # half way: 2 * (1 + (2 - 1) * 0.5)
    assert slow.desired(4, 2) == 1  # down at factor 1 (smoothing_factor)
    down = serve.AutoscalingConfig(
        min_replicas=1, max_replicas=10, target_ongoing_requests=2, downscaling_factor=0.5
    )
    assert down.desired(4, 2) == 3  # 4 * (1 + (0.25 - 1) * 0.5) = 2.5 -> 3
    old = serve.AutoscalingConfig.parse(
        {"max_replicas": 3, "target_num_ongoing_requests_per_replica": 5}
    )
    assert old is not None and old.target_ongoing_requests == 5
    for bad in (
        {"look_back_period_s": -1},
        {"smoothing_factor": 0},
        {"metrics_interval_s": float("nan")},
    ):
        with pytest.raises(ValueError):
            serve.AutoscalingConfig(**bad)  # type: ignore[arg-type]
