"""What a node process printed before it died stays readable: ``logs --node ID`` reads its log
file when no live process has that id."""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest

import runtime
from runtime.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..conftest import until, wait_gone, workers
from .conftest import run_cli

pytestmark = pytest.mark.timeout(90)


@runtime.remote(max_retries=0)
def last_words(word: str) -> int:
    print(f"last words {word}")
    return os.getpid()


def test_the_lines_of_a_killed_node_are_read_from_its_log_file(mesh):
    word = uuid.uuid4().hex[:8]
    node_id, pid = next(iter(workers().items()))
    here = last_words.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id))
    assert runtime.get(here.remote(word)) == pid
    # Its line reached its log file once the CLI reads it from the live node's ring.
    until(lambda: word in run_cli("logs", "--node", node_id).stdout)
    os.kill(pid, signal.SIGKILL)
    assert wait_gone([pid]) == []  # the head may not have noticed yet: it need not have

    out = run_cli("--json", "logs", "--node", node_id[:10], "--task", "last_words").stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["message"] for line in lines] == [f"last words {word}"]
    assert lines[0]["node_id"] == node_id and lines[0]["pid"] == pid
    assert lines[0]["source"] == f"last_words pid={pid}"
    text = run_cli("logs", "--node", node_id, "--tail", "1").stdout
    assert text.strip() == f"(last_words pid={pid}) last words {word}"
