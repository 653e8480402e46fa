"""Chaos scenario 5: ``kill -9`` of a driver.

A local mesh dies with the driver that started it (no orphans). A driver that joined a
cluster leaves no trace when it is killed: its non-detached actors are killed, its queued
tasks are dropped and the resources of its running ones come back; its detached actors
survive, state and all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import runtime
from runtime.core.api.state import list_state

from ..conftest import HeadProcess, stop_process, until, wait_gone

pytestmark = pytest.mark.timeout(90)


DRIVER = """
    import os, sys, time, runtime
    runtime.init(address="auto")

    @runtime.remote
    class Keeper:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    @runtime.remote
    def hog(i, marks):
        open(os.path.join(marks, f"start-{i}"), "w").close()
        time.sleep(3)
        return i

    survivor = Keeper.options(name="survivor", lifetime="detached").remote()
    temporary = Keeper.options(name="temporary").remote()
    assert runtime.get([survivor.incr.remote(), temporary.incr.remote()]) == [1, 1]
    refs = [hog.remote(i, sys.argv[1]) for i in range(8)]  # 3 CPUs: 3 run, 5 wait
    while len(os.listdir(sys.argv[1])) < 3:
        time.sleep(0.01)
    print("ready", flush=True)
    time.sleep(120)
"""


def test_a_killed_driver_leaves_its_detached_actors_and_nothing_else(head: HeadProcess, tmp_path):
    node = head.start_node("--num-cpus", "2")
    marks = tmp_path / "marks"
    marks.mkdir()
    driver = None
    try:
        runtime.init(address=head.address, token=head.token)
        until(lambda: runtime.cluster_resources().get("CPU") == 3.0, timeout=30)
        driver = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(DRIVER), str(marks)],
            env=head.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert driver.stdout is not None
        assert driver.stdout.readline().strip() == "ready", head.log()
        # Its tasks hold every CPU (nodes report what is free as it changes: wait for it).
        until(lambda: runtime.available_resources().get("CPU", 0.0) == 0.0, timeout=30)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)

        # Its non-detached actor goes; its detached one stays, with its state.
        until(lambda: _named("temporary") is None, timeout=30)
        assert runtime.get(runtime.get_actor("survivor").incr.remote(), timeout=30) == 2
        # Its running tasks give their CPUs back; its queued ones never start.
        until(lambda: runtime.available_resources().get("CPU") == 3.0, timeout=30)
        # No node has any of its tasks left: a queued one that wrongly started would be listed
        # (running) until it ended, its mark written by then.
        until(lambda: not [r for r in list_state("tasks") if "hog" in r["name"]], timeout=30)
        assert len(os.listdir(marks)) == 3
        assert runtime.get_actor("survivor") is not None
    finally:
        runtime.shutdown()
        if driver is not None:
            stop_process(driver)  # type: ignore[arg-type]
            if driver.stdout is not None:
                driver.stdout.close()
        stop_process(node)
    assert head.proc.poll() is None


def _named(name: str):
    try:
        return runtime.get_actor(name)
    except ValueError:
        return None


def test_mesh_processes_die_when_the_driver_is_killed(tmp_path):
    script = """
        import os, sys, time, psutil, runtime
        runtime.init(num_cpus=2)
        print(" ".join(str(c.pid) for c in psutil.Process().children(recursive=True)), flush=True)
        time.sleep(120)
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "RUNTIME_TMPDIR": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_gone(pids) == []
    finally:
        stop_process(proc)  # type: ignore[arg-type]
        if proc.stdout is not None:
            proc.stdout.close()
