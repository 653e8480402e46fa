"""``python -m runtime stack``: every thread's and every asyncio task's stack on every node, for
the question a hung job raises: where is it stuck?"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import pytest

import runtime

from ..conftest import until
from .conftest import run_cli

pytestmark = pytest.mark.timeout(90)


@runtime.remote
def stuck_in_a_thread_forever(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    context = runtime.get_runtime_context()
    while time.monotonic() < deadline and not context.is_cancelled():  # until cancelled
        time.sleep(0.02)


async def deep_inside_the_coroutine(event: asyncio.Event) -> None:
    await event.wait()


@runtime.remote
class Stuck:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def stuck_on_the_loop_forever(self) -> None:
        await deep_inside_the_coroutine(self.release)

    async def ready(self) -> bool:
        return True


def test_the_stack_of_a_hung_task_and_a_hung_async_call_names_their_functions(cluster):
    hung = stuck_in_a_thread_forever.remote(600)
    actor = Stuck.remote()
    runtime.get(actor.ready.remote())
    call = actor.stuck_on_the_loop_forever.remote()
    try:
        # Both have started once the nodes list them as running.
        from runtime.util.state import list_tasks

        deadline = time.monotonic() + 30
        while {"stuck_in_a_thread_forever", "stuck_on_the_loop_forever"} - {
            t.name for t in list_tasks(filters=[("state", "=", "RUNNING")])
        }:
            assert time.monotonic() < deadline, "the hung calls never started"
            time.sleep(0.05)

        text = run_cli("stack").stdout
        thread = text.split("running stuck_in_a_thread_forever", 1)[1].split("\n---", 1)[0]
        assert "in stuck_in_a_thread_forever" in thread
        task = text.split("running Stuck.stuck_on_the_loop_forever", 1)[1].split("\n---", 1)[0]
        # The coroutine chain, outermost first, down to what the innermost awaits.
        inner = task.index("in stuck_on_the_loop_forever")
        assert inner < task.index("in deep_inside_the_coroutine") < task.index("in wait")

        stacks = json.loads(run_cli("--json", "stack").stdout)
        roles = {s["role"] for s in stacks}
        assert {"head", "node", "driver"} <= roles
        functions = {
            frame[2] for s in stacks for t in s["threads"] + s["tasks"] for frame in t["frames"]
        }
        assert {"stuck_in_a_thread_forever", "deep_inside_the_coroutine"} <= functions
        this_driver = [s for s in stacks if s["node_id"] == runtime.get_runtime_context().node_id]
        assert this_driver and any(
            t["name"] == threading.current_thread().name for t in this_driver[0]["threads"]
        )
    finally:
        runtime.cancel(call)
        runtime.cancel(hung)


@runtime.remote
class LoopBlocker:
    async def block_the_loop(self, seconds: float, started: str) -> None:
        open(started, "w").close()  # noqa: ASYNC230 - the loop is about to be blocked anyway
        time.sleep(seconds)  # noqa: ASYNC251 - the mistake under test: the loop is blocked

    async def where(self) -> str:
        return runtime.get_runtime_context().node_id


def test_a_node_whose_loop_is_blocked_is_named_and_the_others_still_answer(cluster, tmp_path):
    blocker = LoopBlocker.remote()
    blocked = runtime.get(blocker.where.remote())
    started = str(tmp_path / "started")
    done = blocker.block_the_loop.remote(6, started)
    until(lambda: os.path.exists(started))
    out = run_cli("stack", env={"RUNTIME_INSPECT_TIMEOUT_S": "2"})
    assert f"no answer from node {blocked}" in out.stderr
    assert f"node {blocked}" not in out.stdout and "=== head" in out.stdout
    runtime.get(done)


def test_stack_of_one_node_and_idle_threads_on_request(cluster):
    node = next(n["NodeID"] for n in runtime.nodes() if n["Alive"] and n["Resources"].get("CPU"))
    runtime.get(stuck_in_a_thread_forever.remote(0))
    few = run_cli("stack", "--node", node[:8]).stdout
    assert few.count("=== ") == 1 and f"node {node}" in few
    every = run_cli("stack", "--node", node[:8], "--all").stdout
    assert every.count("--- thread") >= few.count("--- thread")
