"""The direct path of sync actor calls under failures: calls from many threads racing a
restart of their actor (its node killed) all arrive, at least once and in each thread's
order; a caller killed mid-call leaves the actor serving the others.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import runtime

from ..conftest import HeadProcess, stop_process
from ..core.test_direct_calls import Log

pytestmark = pytest.mark.timeout(120)


def test_calls_from_many_threads_racing_a_restart_all_arrive(mesh):
    log = Log.options(max_restarts=-1, max_task_retries=-1).remote()
    pid = runtime.get(log.pid.remote())
    threads, calls = 4, 150
    failures: list[BaseException] = []
    progress = [0] * threads
    halfway = threading.Event()

    def caller(t: int) -> None:
        try:
            for i in range(calls):
                assert runtime.get(log.echo.remote((t, i)), timeout=60) == (t, i)
                progress[t] = i
                if sum(progress) > threads * 20:
                    halfway.set()
        except BaseException as exc:
            failures.append(exc)
            halfway.set()

    workers = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    assert halfway.wait(60)
    os.kill(pid, signal.SIGKILL)  # the actor's node, with calls in flight from every thread
    for w in workers:
        w.join(100)
    assert not any(w.is_alive() for w in workers)
    assert not failures, failures[0]
    assert runtime.get(log.pid.remote()) != pid
    seen = runtime.get(log.history.remote())  # the restarted instance's calls, in order
    for t in range(threads):
        mine = [i for (who, i) in seen if who == t]
        assert mine == sorted(mine) and mine[-1] == calls - 1


CALLER = """
    import runtime
    runtime.init(address="auto")

    @runtime.remote
    class Echo:
        def echo(self, x):
            return x

    e = Echo.options(name="echo", lifetime="detached").remote()
    blob = b"x" * 90_000  # an answer over the 64 KiB of a GMAC-sealed write, still inline
    for i in range(1_000_000):
        assert runtime.get(e.echo.remote(blob)) == blob
        if i == 50:
            print("calling", flush=True)
"""


def test_a_caller_killed_mid_call_leaves_the_actor_serving_others(head: HeadProcess) -> None:
    node = head.start_node("--num-cpus", "1")
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CALLER)],
        env=head.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert driver.stdout is not None
        assert driver.stdout.readline().strip() == "calling", head.log()
        driver.send_signal(signal.SIGKILL)  # mid-loop: most likely with a call or answer on the way
        driver.wait(10)
        runtime.init(address=head.address, token=head.token)
        echo = runtime.get_actor("echo")
        for i in range(200):
            payload = os.urandom(i * 500)
            assert runtime.get(echo.echo.remote(payload), timeout=30) == payload
        assert node.poll() is None and head.proc.poll() is None
    finally:
        runtime.shutdown()
        stop_process(driver)  # type: ignore[arg-type]
        if driver.stdout is not None:
            driver.stdout.close()
        stop_process(node)
