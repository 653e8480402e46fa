"""Deployment options from Ray's config file: placement_group_bundles and
placement_group_strategy, logging_config, and an application's runtime_env (through
``serve deploy`` against a real head)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

import pytest

import runtime
from runtime import serve
from runtime.serve.schema import LoggingConfig
from runtime.util import (
    PlacementGroupSchedulingStrategy,
    get_current_placement_group,
    placement_group_table,
)
from tests.conftest import HeadProcess

from .conftest import http, http_json
from .test_lifecycle import _eventually

pytestmark = pytest.mark.timeout(90)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bad_placement_and_logging_options_raise_at_declaration() -> None:
    with pytest.raises(ValueError, match="placement_group_bundles must be a non-empty list"):
        serve.deployment(placement_group_bundles=[])
    with pytest.raises(ValueError, match=r"placement_group_bundles\[0\]"):
        serve.deployment(placement_group_bundles=[{"CPU": -1}])
    with pytest.raises(ValueError, match="placement_group_strategy must be one of"):
        serve.deployment(placement_group_bundles=[{"CPU": 1}], placement_group_strategy="TIGHT")
    with pytest.raises(ValueError, match="needs placement_group_bundles"):
        serve.deployment(placement_group_strategy="PACK")
    with pytest.raises(ValueError, match="drop max_replicas_per_node"):
        serve.deployment(placement_group_bundles=[{"CPU": 1}], max_replicas_per_node=1)
    with pytest.raises(ValueError, match="encoding"):
        serve.deployment(logging_config={"encoding": "XML"})
    with pytest.raises(ValueError, match="log_level"):
        LoggingConfig(log_level="LOUD")
    with pytest.raises(ValueError, match="unknown logging_config keys"):
        serve.deployment(logging_config={"colour": True})
    assert LoggingConfig(log_level="debug").level == logging.DEBUG


@runtime.remote(num_cpus=0.25)
def _where() -> bool:
    return get_current_placement_group() is not None


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    placement_group_bundles=[{"CPU": 0.25}, {"CPU": 0.25}],
    placement_group_strategy="STRICT_PACK",
)
class Grouped:
    def __call__(self) -> dict[str, Any]:
        pg = get_current_placement_group()
        assert pg is not None
        # The second bundle is for the work the replica starts.
        inside = runtime.get(
            _where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 1)).remote()
        )
        return {"bundles": pg.bundle_specs, "child_inside": inside, "id": pg.id}


def test_each_replica_reserves_its_own_placement_group(serve_cluster: str) -> None:
    serve.run(Grouped.options(num_replicas=2).bind(), name="grouped", route_prefix="/grouped")
    answers = [http_json(f"{serve_cluster}/grouped") for _ in range(20)]
    assert {json.dumps(a["bundles"]) for a in answers} == {
        json.dumps([{"CPU": 0.25}, {"CPU": 0.25}])
    }
    assert all(a["child_inside"] for a in answers)
    ids = {a["id"] for a in answers}
    assert len(ids) == 2  # one group per replica
    table = {r["placement_group_id"]: r for r in placement_group_table()}
    assert {table[i]["strategy"] for i in ids} == {"STRICT_PACK"}
    serve.delete("grouped")

    def freed() -> bool:  # with their replicas, once these are killed after draining
        table = {r["placement_group_id"]: r for r in placement_group_table()}
        return {table[i]["state"] for i in ids} == {"REMOVED"}

    _eventually(freed, timeout=30, what="the replicas' groups removed")


def test_a_group_that_cannot_be_placed_fails_the_deployment_fast(serve_cluster: str) -> None:
    huge = Grouped.options(name="Huge", placement_group_bundles=[{"CPU": 64}])
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="Infeasible"):
        serve.run(huge.bind(), name="huge", route_prefix="/huge")
    assert time.monotonic() - start < 60
    serve.delete("huge")


@serve.deployment(
    logging_config={
        "encoding": "JSON",
        "log_level": "DEBUG",
        "additional_log_standard_attrs": ["name", "funcName"],
    }
)
class Chatty:
    def __init__(self) -> None:
        logging.getLogger("ray.serve").info("constructed")

    async def __call__(self, request: serve.Request) -> str:
        logging.getLogger("ray.serve").debug("handling %s", request.query_params["n"])
        logging.getLogger("runtime.serve.mine").warning("careful")
        return "ok"


@serve.deployment(logging_config={"log_level": "WARNING", "enable_access_log": False})
class Quiet:
    def __call__(self, request: serve.Request) -> str:  # a sync method: on a thread
        logging.getLogger("ray.serve").info("not written")
        logging.getLogger("ray.serve").warning("quiet warning %s", request.query_params["n"])
        return "ok"


def _lines(folder: str, tag: str) -> list[str]:
    out = []
    for name in os.listdir(folder):
        if tag in name:
            with open(os.path.join(folder, name)) as f:
                out += f.read().splitlines()
    return out


def test_each_replica_logs_by_its_deployments_logging_config(serve_cluster: str, tmp_path) -> None:
    logs = str(tmp_path)
    chatty_config = {**dataclasses.asdict(Chatty.config.logging_config), "logs_dir": logs}
    quiet_config = {"log_level": "WARNING", "enable_access_log": False, "logs_dir": logs}
    serve.run(Chatty.options(logging_config=chatty_config).bind(), name="chatty",
              route_prefix="/chatty")  # fmt: skip
    serve.run(Quiet.options(logging_config=quiet_config).bind(), name="quiet",
              route_prefix="/quiet")  # fmt: skip
    for n in range(3):
        assert http(f"{serve_cluster}/chatty?n={n}")[0] == 200
        assert http(f"{serve_cluster}/quiet?n={n}")[0] == 200
    serve.delete("chatty")  # the replica closes its log on shutdown
    serve.delete("quiet")

    chatty = [json.loads(line) for line in _lines(logs, "Chatty")]
    messages = [r["message"] for r in chatty]
    assert "constructed" in messages
    assert [m for m in messages if m.startswith("handling")] == [f"handling {n}" for n in range(3)]
    assert messages.count("careful") == 3
    access = [m for m in messages if m.startswith("GET /chatty")]
    assert len(access) == 3 and all(" 200 " in m for m in access)
    handling = [r for r in chatty if r["message"].startswith("handling")]
    assert {r["deployment"] for r in handling} == {"Chatty"}
    assert {r["application"] for r in handling} == {"chatty"}
    assert {r["levelname"] for r in handling} == {"DEBUG"}
    assert {r["name"] for r in handling} == {"ray.serve"}
    assert {r["funcName"] for r in handling} == {"__call__"}
    assert all(r["request_id"] for r in handling)
    assert "quiet warning 0" not in messages  # another replica's records stay out

    quiet = _lines(logs, "Quiet")
    assert [line.rsplit(" -- ", 1)[1] for line in quiet] == [
        f"quiet warning {n}" for n in range(3)
    ]  # TEXT, WARNING and up, no access lines


WD_APP = """
import os

from runtime import serve


@serve.deployment
class FromWorkingDir:
    def __call__(self) -> dict:
        with open("data.txt") as f:  # the working_dir is the current directory
            data = f.read()
        return {"greeting": os.environ["GREETING"], "data": data, "level": os.environ["LEVEL"]}


app = FromWorkingDir.bind()
"""


def test_serve_deploy_applies_an_applications_runtime_env(head: HeadProcess, tmp_path: Any) -> None:
    wd = tmp_path / "project"
    wd.mkdir()
    (wd / "wd_app.py").write_text(WD_APP)  # importable only from the working_dir
    (wd / "data.txt").write_text("shipped")
    config = tmp_path / "serve.yaml"
    config.write_text(
        "http_options: {host: 127.0.0.1, port: 0}\n"
        "applications:\n"
        "  - name: wd\n"
        "    route_prefix: /wd\n"
        "    import_path: wd_app:app\n"
        f"    runtime_env: {{working_dir: {wd}, env_vars: {{GREETING: hi, LEVEL: app}}}}\n"
        "    deployments:\n"
        "      - name: FromWorkingDir\n"
        "        ray_actor_options: {runtime_env: {env_vars: {LEVEL: deployment}}}\n"
    )

    def cli(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "runtime.serve", *args],
            env=head.env, cwd=ROOT, capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    assert "deployed 'wd'" in cli("deploy", str(config))
    deadline = time.monotonic() + 60
    while True:
        st = json.loads(cli("status"))
        if st["applications"].get("wd", {}).get("status") == "RUNNING":
            break
        assert st["applications"].get("wd", {}).get("status") != "DEPLOY_FAILED", st
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    got = http_json(f"http://127.0.0.1:{st['http']['port']}/wd")
    assert got == {"greeting": "hi", "data": "shipped", "level": "deployment"}
    cli("shutdown")


@serve.deployment
class Plain:
    async def __call__(self) -> str:
        logging.getLogger("ray.serve").info("plain here")
        return "ok"


@serve.deployment(logging_config={"log_level": "ERROR", "enable_access_log": False})
class OwnConfig:
    def __init__(self, plain: Any) -> None:
        self.plain = plain

    async def __call__(self) -> str:
        logging.getLogger("ray.serve").info("own: not written")
        return await self.plain.remote()


def test_an_applications_logging_config_covers_deployments_without_their_own(
    serve_cluster: str, tmp_path
) -> None:
    logs = str(tmp_path)
    config = {"encoding": "JSON", "logs_dir": logs}
    serve.run(OwnConfig.bind(Plain.bind()), name="mixed", route_prefix="/mixed",
              logging_config=config)  # fmt: skip
    assert http(f"{serve_cluster}/mixed")[0] == 200
    serve.delete("mixed")
    plain = [json.loads(line)["message"] for line in _lines(logs, "Plain")]
    assert plain == ["plain here"]  # handle calls write no access lines
    assert _lines(logs, "OwnConfig") == []  # its own config: ERROR and up, no logs_dir
