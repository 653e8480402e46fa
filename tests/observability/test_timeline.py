"""``python -m runtime timeline`` and ``runtime.timeline()``: the recent tasks and actor calls
of every node as Chrome trace events, one track per process and thread, spans for run, queue
and fetch."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time

import pytest

import runtime

from .conftest import run_cli

pytestmark = pytest.mark.timeout(90)


@runtime.remote
def nap_in_a_thread(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@runtime.remote
def make_block() -> bytes:
    return b"x" * 300_000  # big enough to stay in the store: its reader fetches it


@runtime.remote
def read_block(block: bytes) -> int:
    return len(block)


@runtime.remote
class Napper:
    async def nap_on_the_loop(self, seconds: float) -> int:
        await asyncio.sleep(seconds)
        return os.getpid()


def spans(trace: list[dict], name: str) -> list[dict]:
    return [e for e in trace if e["ph"] == "X" and e["name"] == name]


def test_the_cli_writes_runs_queues_and_fetches_as_chrome_trace_events(cluster, tmp_path):
    pids = set(runtime.get([nap_in_a_thread.remote(0.05) for _ in range(6)]))
    napper = Napper.remote()
    apid = runtime.get(napper.nap_on_the_loop.remote(0.05))
    assert runtime.get(read_block.remote(make_block.remote())) == 300_000
    out = tmp_path / "trace.json"
    printed = run_cli("timeline", "--out", str(out)).stdout
    assert str(out) in printed and "perfetto" in printed
    trace = json.loads(out.read_text())

    runs = spans(trace, "nap_in_a_thread")
    assert len(runs) >= 6 and {e["pid"] for e in runs} >= pids
    assert all(e["cat"] == "run" and e["dur"] >= 50_000 for e in runs)
    # Six one-CPU tasks on two one-CPU nodes: some waited for a CPU.
    queued = spans(trace, "nap_in_a_thread (queue)")
    assert queued and max(e["dur"] for e in queued) >= 40_000
    fetched = spans(trace, "read_block (fetch)")
    assert fetched and fetched[-1]["cat"] == "fetch"
    (async_run,) = spans(trace, "Napper.nap_on_the_loop")
    # uvloop's timers have millisecond resolution: an asyncio.sleep may end up to 1 ms early.
    assert async_run["pid"] == apid and async_run["dur"] >= 49_000

    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace if e["name"] == "thread_name"}
    assert all((e["pid"], e["tid"]) in names for e in trace if e["ph"] == "X")
    assert any(name.startswith("runtime-task") for (pid, _), name in names.items() if pid in pids)
    assert names[(async_run["pid"], async_run["tid"])].startswith("event loop (async)")
    processes = {e["pid"]: e["args"]["name"] for e in trace if e["name"] == "process_name"}
    assert pids | {apid} <= set(processes)
    assert any(name.startswith("head ") for name in processes.values())
    # A thread's spans never overlap (each track nests, as trace viewers need).
    for track in {(e["pid"], e["tid"]) for e in trace if e["ph"] == "X"}:
        on_it = sorted(
            (e["ts"], e["ts"] + e["dur"])
            for e in trace
            if e["ph"] == "X" and (e["pid"], e["tid"]) == track
        )
        assert all(a_end <= b_start + 1 for (_, a_end), (b_start, _) in itertools.pairwise(on_it))


def test_runtime_timeline_returns_the_events_or_writes_them_as_ray_timeline_does(cluster, tmp_path):
    runtime.get(nap_in_a_thread.remote(0.01))
    trace = runtime.timeline()
    assert trace and spans(trace, "nap_in_a_thread")
    before = time.time() * 1e6
    assert all(e["ts"] <= before for e in spans(trace, "nap_in_a_thread"))
    path = tmp_path / "t.json"
    assert runtime.timeline(str(path)) is None
    assert spans(json.loads(path.read_text()), "nap_in_a_thread")


def test_overlapping_async_calls_and_queues_get_lanes_of_their_own():
    from runtime.core.api.timeline import chrome_trace

    ms = 1_000_000  # ns
    answer = {
        "node_id": "n" * 16, "pid": 7, "role": "node", "offset_ns": 0,
        "threads": {"11": "runtime-task-0"},
        "events": [
            # received, fetched, started, ended, label, thread, on loop, failed, task id
            [0, 0, 0, 10 * ms, "a", 99, True, False, "01"],
            [2 * ms, 0, 2 * ms, 5 * ms, "b", 99, True, False, "02"],  # overlaps a: lane 2
            [6 * ms, 0, 6 * ms, 9 * ms, "c", 99, True, True, "03"],  # lane 2 is free again
            [0, 1 * ms, 3 * ms, 4 * ms, "d", 11, False, False, "04"],
        ],
    }  # fmt: skip
    trace = chrome_trace([answer])
    names = {e["tid"]: e["args"]["name"] for e in trace if e["name"] == "thread_name"}
    track = {e["name"]: names[e["tid"]] for e in trace if e["ph"] == "X"}
    assert track["a"] == "event loop (async) #1"
    assert track["b"] == track["c"] == "event loop (async) #2"
    assert track["d"] == "runtime-task-0"
    assert track["d (fetch)"] == "fetch args #1" and track["d (queue)"] == "queued #1"
    assert "b (queue)" not in track  # it started as it arrived
    (c,) = [e for e in trace if e["name"] == "c"]
    assert (
        c["ts"] == 6000.0 and c["dur"] == 3000.0 and c["args"] == {"task_id": "03", "failed": True}
    )
    (process,) = [e for e in trace if e["name"] == "process_name"]
    assert process["pid"] == 7 and process["args"]["name"] == f"node {'n' * 8} pid=7"


def test_two_live_threads_of_one_name_get_a_track_each():
    from runtime.core.api.timeline import chrome_trace

    ms = 1_000_000  # ns
    answer = {
        "node_id": "n" * 16, "pid": 7, "role": "node", "offset_ns": 0,
        # two actors of one class, each with a thread of its own: the same thread name
        "threads": {"11": "actor-Worker-0", "12": "actor-Worker-0", "13": "runtime-task-0"},
        "events": [
            [0, 0, 0, 10 * ms, "a", 11, False, False, "01"],
            [0, 0, 2 * ms, 5 * ms, "b", 12, False, False, "02"],  # at the same time as a
            [0, 0, 1 * ms, 3 * ms, "c", 13, False, False, "03"],
        ],
    }  # fmt: skip
    trace = chrome_trace([answer])
    names = {e["tid"]: e["args"]["name"] for e in trace if e["name"] == "thread_name"}
    track = {e["name"]: names[e["tid"]] for e in trace if e["ph"] == "X"}
    assert track["a"] == "actor-Worker-0 (11)" and track["b"] == "actor-Worker-0 (12)"
    assert track["c"] == "runtime-task-0"
