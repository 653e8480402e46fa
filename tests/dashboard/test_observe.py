"""The dashboard's views of what the nodes keep: a finished task's row links to the lines it
printed (read from its node's ring), an actor's row to its own lines (also when no driver
took them), ``who=`` picks lines by tag; the timeline as Chrome trace events, every
member's stacks, and what pins memory."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

import runtime
from tests.conftest import until

from .conftest import DashboardCluster

pytestmark = pytest.mark.timeout(120)


@runtime.remote
def chatty(word: str) -> str:
    print(f"chatty says {word}")
    return runtime.get_runtime_context().get_task_id()


@runtime.remote
class Parrot:
    def say(self, word: str) -> None:
        print(f"the parrot says {word}")


def _lines(dash: DashboardCluster, query: str) -> list[str]:
    return [r["line"] for r in dash.json("/api/logs?" + query)]


def test_a_finished_tasks_row_links_to_the_lines_it_printed(dash: DashboardCluster) -> None:
    word = uuid.uuid4().hex[:8]
    task_id = runtime.get(chatty.remote(word))
    other = runtime.get(chatty.remote("something else"))

    def row() -> dict[str, Any] | None:
        rows = [r for r in dash.json("/api/tasks") if r["task_id"] == task_id]
        return rows[0] if rows else None

    until(lambda: row() is not None, 20)
    found = row()
    assert found is not None and found["state"] == "FINISHED" and found["name"].endswith("chatty")
    assert found["duration_s"] >= 0 and found["node_id"]
    assert f"task={task_id}" in found["logs"] and f"node_id={found['node_id']}" in found["logs"]
    until(lambda: _lines(dash, found["logs"]), 20)
    assert _lines(dash, found["logs"]) == [f"chatty says {word}"]  # not the other call's
    assert other != task_id
    status, page = dash.get("/logs?" + found["logs"])
    assert status == 200 and f"chatty says {word}".encode() in page


def test_an_actors_row_links_to_its_lines_and_who_picks_lines_by_tag(
    dash: DashboardCluster,
) -> None:
    word = uuid.uuid4().hex[:8]
    parrot = Parrot.options(name=f"parrot-{word}").remote()
    runtime.get(parrot.say.remote(word))
    [row] = [r for r in dash.json("/api/actors") if r["name"] == f"parrot-{word}"]
    assert f"actor={row['actor_id']}" in row["logs"]
    until(lambda: _lines(dash, row["logs"]), 20)
    assert _lines(dash, row["logs"]) == [f"the parrot says {word}"]
    assert _lines(dash, f"who=parrot-{word}") == [f"the parrot says {word}"]
    assert _lines(dash, f"who=parrot-{word[:4]}*") == [f"the parrot says {word}"]
    assert _lines(dash, f"who=parrot-{word[:4]}") == []  # a name is whole, or a prefix with *
    status, _ = dash.get("/api/logs?tail=oops")
    assert status == 400


_QUIET_DRIVER = """
import sys, runtime
runtime.init(address=sys.argv[1], token=sys.argv[2], log_to_driver=False)

@runtime.remote
class Hermit:
    def speak(self, word):
        print("the hermit says", word, flush=True)
        return runtime.get_runtime_context().get_actor_id()

hermit = Hermit.options(name="hermit-" + sys.argv[3], lifetime="detached").remote()
print(runtime.get(hermit.speak.remote(sys.argv[3])))
runtime.shutdown()
"""


def test_an_actors_lines_show_though_no_driver_took_them(dash: DashboardCluster) -> None:
    """A driver with log_to_driver=False starts a detached actor that prints, and leaves:
    no driver got the line, and the actor's row still links to it (its node kept it)."""
    word = uuid.uuid4().hex[:8]
    done = subprocess.run(
        [sys.executable, "-c", _QUIET_DRIVER, dash.head.address, dash.head.token.hex(), word],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=dash.head.env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    actor_id = done.stdout.strip().splitlines()[-1]
    assert "the hermit says" not in done.stdout  # not forwarded to its driver
    [row] = [r for r in dash.json("/api/actors") if r["actor_id"] == actor_id]
    until(lambda: _lines(dash, row["logs"]), 20)
    assert _lines(dash, row["logs"]) == [f"the hermit says {word}"]
    runtime.kill(runtime.get_actor(f"hermit-{word}"))


def test_the_timeline_endpoint_gives_chrome_trace_events(dash: DashboardCluster) -> None:
    runtime.get(chatty.remote("for the timeline"))
    trace = dash.json("/api/timeline")
    spans = [e for e in trace if e["ph"] == "X" and e["name"].endswith("chatty")]
    assert spans and all(e["dur"] >= 0 and e["args"]["task_id"] for e in spans)
    assert any(e["ph"] == "M" and e["name"] == "process_name" for e in trace)
    status, body = dash.get("/api/timeline?download=1")
    assert status == 200 and isinstance(json.loads(body), list)


def test_the_stacks_endpoint_shows_every_members_threads(dash: DashboardCluster) -> None:
    stacks = dash.json("/api/stacks")
    assert {a["role"] for a in stacks} >= {"head", "node"}
    head = next(a for a in stacks if a["role"] == "head")
    assert head["threads"] and any(t["frames"] for t in head["threads"])
    status, text = dash.get("/api/stacks?format=text")
    assert status == 200 and b"=== head " in text and b"--- thread " in text


def test_the_memory_endpoint_shows_what_pins_objects(dash: DashboardCluster) -> None:
    ref = runtime.put(b"x" * 300_000)
    summary = dash.json("/api/memory")
    [obj] = [o for o in summary["objects"] if o["object_id"] == ref.hex()]
    assert obj["size"] >= 300_000
    assert summary["groups"] and summary["stores"]
    assert dash.json("/api/memory?group_by=node")["groups"]
    status, text = dash.get("/api/memory?format=text")
    assert status == 200 and ref.hex().encode()[:16] in text
    status, _ = dash.get("/api/memory?group_by=colour")
    assert status == 400
    del ref
