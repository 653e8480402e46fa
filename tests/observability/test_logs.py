"""``python -m runtime logs``: what tasks and actors printed, read back from the nodes by a CLI
that connects to the running cluster, tagged with who printed it, filtered, tailed, followed."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid

import pytest

import runtime
from runtime.core.execution.logs import LogSink
from runtime.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .conftest import cli_argv, run_cli

pytestmark = pytest.mark.timeout(90)


@runtime.remote
def shout(word: str, n: int = 1) -> str:
    for i in range(n):
        print(f"shout {word} {i}")
    print(f"shout {word} on stderr", file=sys.stderr)
    return runtime.get_runtime_context().get_task_id()


@runtime.remote
def log_a_warning(word: str) -> int:
    logging.getLogger("user.code").warning("careful %s", word)
    return os.getpid()


@runtime.remote
class Speaker:
    def say(self, word: str) -> int:
        print(f"speaker says {word}")
        return os.getpid()


def lines_of(*args: str) -> list[dict]:
    return [json.loads(line) for line in run_cli("--json", "logs", *args).stdout.splitlines()]


def test_a_tasks_and_an_actors_lines_are_read_back_tagged_and_filtered(cluster):
    word = uuid.uuid4().hex[:8]
    task_id = runtime.get(shout.remote(word))
    speaker = Speaker.options(name=f"speaker-{word}").remote()
    pid = runtime.get(speaker.say.remote(word))

    text = run_cli("logs", "--actor", f"speaker-{word}").stdout
    assert f"(speaker-{word} pid={pid}) speaker says {word}" in text
    assert f"shout {word}" not in text

    by_task = lines_of("--task", "shout")
    mine = [line for line in by_task if word in line["message"]]
    assert [line["message"] for line in mine] == [f"shout {word} 0", f"shout {word} on stderr"]
    assert {line["task_id"] for line in mine} == {task_id}
    assert [line["stream"] for line in mine] == ["stdout", "stderr"]
    assert lines_of("--task", task_id) == mine  # by id too
    assert all(line["actor_name"] == "" for line in by_task)


def test_tail_gives_the_last_lines_in_the_order_they_were_printed(cluster):
    word = uuid.uuid4().hex[:8]
    runtime.get(shout.remote(word, 40))
    tail = lines_of("--task", "shout", "--tail", "5")
    assert [line["message"] for line in tail] == [
        *(f"shout {word} {i}" for i in range(36, 40)),
        f"shout {word} on stderr",
    ]


def test_logs_by_node_show_only_that_nodes_lines(cluster):
    word = uuid.uuid4().hex[:8]
    nodes = [n["NodeID"] for n in runtime.nodes() if n["Alive"] and n["Resources"].get("CPU")]
    for node_id in nodes:
        pinned = shout.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id))
        runtime.get(pinned.remote(f"{word}-{node_id[:6]}"))
    for node_id in nodes:
        lines = [line for line in lines_of("--node", node_id[:10]) if word in line["message"]]
        assert lines and {line["node_id"] for line in lines} == {node_id}
        assert all(node_id[:6] in line["message"] for line in lines)


def test_logging_records_in_a_task_are_kept_with_the_task(cluster):
    word = uuid.uuid4().hex[:8]
    pid = runtime.get(log_a_warning.remote(word))
    lines = [line for line in lines_of("--task", "log_a_warning") if word in line["message"]]
    assert [line["message"] for line in lines] == [f"WARNING user.code: careful {word}"]
    assert lines[0]["pid"] == pid


def test_follow_prints_lines_printed_after_it_started(cluster):
    word = uuid.uuid4().hex[:8]
    name = f"follower-{word}"
    speaker = Speaker.options(name=name).remote()
    runtime.get(speaker.say.remote("before"))
    with subprocess.Popen(
        cli_argv("logs", "--actor", name, "--follow"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert "speaker says before" in proc.stdout.readline()  # the tail, then new lines
            runtime.get(speaker.say.remote(word))
            line = proc.stdout.readline()  # bounded by the test's timeout
            assert line.rstrip().endswith(f"speaker says {word}")
        finally:
            proc.terminate()
            proc.wait(10)


def test_get_log_yields_an_actors_lines_as_rays_state_api_does(cluster):
    from runtime.util.state import get_log

    word = uuid.uuid4().hex[:8]
    speaker = Speaker.options(name=f"api-{word}").remote()
    pid = runtime.get(speaker.say.remote(word))
    assert list(get_log(actor_id=f"api-{word}")) == [f"(api-{word} pid={pid}) speaker says {word}"]
    with pytest.raises(ValueError, match="tail must be 0 or more"):
        next(get_log(task_id="shout", tail=-1))


def test_a_bad_tail_is_refused_with_a_clear_error(cluster):
    out = subprocess.run(
        cli_argv("logs", "--tail", "-3"), check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "--tail must be 0 or more" in out.stderr


def test_the_ring_of_recent_lines_is_bounded_in_bytes_and_the_file_rotates(tmp_path):
    class Host:  # keep() needs only the node's id (it neither forwards nor posts)
        peer_id = "n" * 16

    path = str(tmp_path / "logs" / "worker.log")
    sink = LogSink(Host(), path)  # type: ignore[arg-type]
    sink.ring_limit = 10_000
    sink.rotate_bytes = 20_000
    for i in range(1000):
        sink.keep("t pid=1", f"line {i:04d} " + "x" * 40, False)
    kept = sink.query()
    assert kept["last_seq"] == 1000
    messages = [line["message"] for line in kept["lines"]]
    assert 0 < len(messages) * (200 + 50) <= 10_000 + 250
    assert messages[-1].startswith("line 0999") and kept["first_seq"] > 1
    assert os.path.getsize(path) <= 20_000 + 100
    assert os.path.exists(path + ".1") and not os.path.exists(path + ".2")
    sink.close()
