"""Task retries: on the death of the node running a task, and on exceptions when asked."""

from __future__ import annotations

import os
import signal

import pytest

import runtime
from runtime.exceptions import NodeDiedError

pytestmark = pytest.mark.timeout(90)


@runtime.remote
class Tally:
    """Counts attempts per key, on the head-less side of the kills (tests pin it)."""

    def __init__(self):
        self.counts = {}

    def bump(self, key):
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


def _node_pids():
    return sorted(n["Pid"] for n in runtime.nodes() if not n["IsDriver"] and n["Resources"])


def test_tasks_on_a_killed_node_run_again_elsewhere_and_return_once(mesh):
    pids = _node_pids()
    victim, *_ = pids

    @runtime.remote
    def work(i):
        import time

        time.sleep(0.2)
        return i, os.getpid()

    refs = [work.remote(i) for i in range(12)]
    ready, _ = runtime.wait(refs, num_returns=1, timeout=30)
    assert ready  # the work is under way on every node
    os.kill(victim, signal.SIGKILL)
    results = runtime.get(refs, timeout=60)
    assert [i for i, _ in results] == list(range(12))
    assert all(pid in pids for _, pid in results)


def test_a_task_that_kills_its_node_stops_after_max_retries(mesh):
    @runtime.remote(max_retries=1)
    def crash():
        os._exit(1)

    with pytest.raises(NodeDiedError, match="tried 2 times"):
        runtime.get(crash.remote(), timeout=60)


def test_application_errors_are_retried_only_when_asked(mesh):
    tally = Tally.remote()

    @runtime.remote(max_retries=3, retry_exceptions=True)
    def flaky(tally, key):
        if runtime.get(tally.bump.remote(key)) < 3:
            raise ConnectionError("not yet")
        return "ok"

    @runtime.remote(max_retries=3, retry_exceptions=[KeyError])
    def wrong_kind(tally, key):
        runtime.get(tally.bump.remote(key))
        raise ValueError("not retried")

    @runtime.remote(max_retries=3)
    def plain(tally, key):
        runtime.get(tally.bump.remote(key))
        raise ValueError("not retried either")

    assert runtime.get(flaky.remote(tally, "a"), timeout=30) == "ok"
    with pytest.raises(ValueError, match="not retried"):
        runtime.get(wrong_kind.remote(tally, "b"), timeout=30)
    with pytest.raises(ValueError, match="either"):
        runtime.get(plain.remote(tally, "c"), timeout=30)
    assert runtime.get(tally.bump.remote("a")) == 4  # three tries, then this call
    assert runtime.get(tally.bump.remote("b")) == 2
    assert runtime.get(tally.bump.remote("c")) == 2


def test_retry_options_are_checked(mesh):
    @runtime.remote
    def f():
        return 1

    with pytest.raises(ValueError, match="max_retries"):
        f.options(max_retries=-2)
    with pytest.raises(ValueError, match="retry_exceptions"):
        f.options(retry_exceptions=["KeyError"])
    assert runtime.get(f.options(max_retries=0).remote()) == 1


def test_a_large_result_whose_node_died_is_made_again_from_its_lineage(mesh):
    import numpy as np

    @runtime.remote(num_returns=2)
    def big_and_pid():
        return np.full(1 << 20, 7, dtype=np.uint8), os.getpid()  # the array stays on its node

    array_ref, pid_ref = big_and_pid.remote()
    first_pid = runtime.get(pid_ref)
    os.kill(first_pid, signal.SIGKILL)
    value = runtime.get(array_ref, timeout=60)  # its node is gone: the task runs again
    assert value.nbytes == 1 << 20 and int(value[0]) == 7


def test_a_large_result_of_a_task_without_retries_is_lost_with_a_clear_error(mesh):
    import numpy as np

    from runtime.exceptions import ObjectLostError

    @runtime.remote(num_returns=2, max_retries=0)
    def big_and_pid():
        return np.ones(1 << 20, dtype=np.uint8), os.getpid()

    array_ref, pid_ref = big_and_pid.remote()
    os.kill(runtime.get(pid_ref), signal.SIGKILL)
    with pytest.raises(ObjectLostError, match=r"unreachable|no longer"):
        runtime.get(array_ref, timeout=30)


def test_a_borrower_of_an_object_whose_owner_died_gets_owner_died_error(mesh):
    import subprocess
    import sys
    import textwrap

    from runtime.exceptions import OwnerDiedError

    @runtime.remote
    class Keeper:
        def __init__(self):
            self.refs = []

        def keep(self, wrapped):
            self.refs.append(wrapped[0])  # a ref nested in a list stays a ref: borrowed
            return True

        async def read(self):
            return await self.refs[0]

    Keeper.options(name="keeper", namespace="owners", lifetime="detached").remote()
    info = runtime.init(ignore_reinit_error=True)
    env = {**os.environ, "RUNTIME_AUTH_TOKEN_FILE": os.path.join(info["session_dir"], "token")}
    script = f"""
        import runtime
        runtime.init(address={info["address"]!r})
        keeper = runtime.get_actor("keeper", namespace="owners")
        assert runtime.get(keeper.keep.remote([runtime.put("owned by a driver that exits")]))
        runtime.shutdown()
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    keeper = runtime.get_actor("keeper", namespace="owners")
    with pytest.raises(OwnerDiedError):
        runtime.get(keeper.read.remote(), timeout=30)
