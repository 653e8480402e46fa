"""``RUNTIME_LOG_FORMAT=json``: the nodes keep their output as JSON lines, with the task."""

from __future__ import annotations

import json
import logging
import os
import uuid

import pytest

import runtime

from ..conftest import until

pytestmark = pytest.mark.timeout(60)


@runtime.remote
def shout(word: str) -> str:
    print(f"shout {word} 0")
    return runtime.get_runtime_context().get_task_id()


@runtime.remote
def warn(word: str) -> str:
    logging.getLogger("user.code").warning("careful %s", word)
    return runtime.get_runtime_context().get_task_id()


def test_json_format_writes_the_node_log_file_as_json_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNTIME_LOG_FORMAT", "json")
    monkeypatch.setenv("RUNTIME_TMPDIR", str(tmp_path))
    info = runtime.init(num_cpus=1, log_to_driver=False)  # the nodes' stderr: nodes.log
    try:
        word = uuid.uuid4().hex[:8]
        task_id = runtime.get(shout.remote(word))
        logs = os.path.join(info["session_dir"], "logs")

        def records() -> list[dict]:
            out = []
            for name in os.listdir(logs) if os.path.isdir(logs) else []:
                with open(os.path.join(logs, name)) as f:
                    out += [json.loads(line) for line in f if line.strip()]
            return out

        until(lambda: any(word in r["message"] for r in records()))
        mine = [r for r in records() if word in r["message"]]
        assert mine[0]["task_id"] == task_id and mine[0]["task_name"] == "shout"
        assert mine[0]["stream"] == "stdout" and mine[0]["message"] == f"shout {word} 0"

        # The node's own logging output is JSON too, with the task a record was emitted in.
        warned = runtime.get(warn.remote(word))
        nodes_log = os.path.join(info["session_dir"], "nodes.log")

        def node_records() -> list[dict]:
            with open(nodes_log) as f:
                return [json.loads(line) for line in f if line.startswith("{")]

        until(
            lambda: any(word in r["message"] for r in node_records()),
            why=lambda: json.dumps(node_records()[-20:]),
        )
        (record,) = [r for r in node_records() if word in r["message"]]
        assert record["level"] == "WARNING" and record["logger"] == "user.code"
        assert record["task_id"] == warned and record["task_name"] == "warn"
    finally:
        runtime.shutdown()
