"""Task retries on exceptions when asked, their options, and owners that exit.

Retries on the death of the node running a task are chaos scenarios: tests/chaos/test_node_kill.py.
"""

from __future__ import annotations

import os

import pytest

import runtime

pytestmark = pytest.mark.timeout(90)


@runtime.remote
class Tally:
    """Counts attempts per key."""

    def __init__(self):
        self.counts = {}

    def bump(self, key):
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


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
