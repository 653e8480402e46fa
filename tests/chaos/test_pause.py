"""Chaos scenario 6: a node paused with SIGSTOP, shorter and longer than the dead window.

Paused briefly, it keeps its place (no false death). Paused too long, it is declared dead;
its work runs elsewhere meanwhile; after SIGCONT what its old incarnation still sends is
rejected (a side effect it attempts lands nowhere, so none runs twice) and the node rejoins
under a new id, in the same process.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

import runtime
from runtime.util import NodeAffinitySchedulingStrategy

from ..conftest import until as _until
from ..conftest import workers as _workers

pytestmark = pytest.mark.timeout(90)

# The `fast_mesh` fixture (tests/conftest.py): beat every 0.1 s, suspect after 0.6 s of
# silence, dead after 1.5 s.


@runtime.remote
class Ledger:
    """Where task bodies started and finished their side effect (lives on the awake node)."""

    def __init__(self):
        self.started = []
        self.done = []

    def start(self, pid):
        self.started.append(pid)

    def effect(self, pid):
        self.done.append(pid)

    def record(self):
        return list(self.started), list(self.done)


@runtime.remote(max_retries=3)
def effect_after_gate(ledger, gate):
    """Start, wait for the test to open ``gate`` (a file), then do the side effect once."""
    pid = os.getpid()
    runtime.get(ledger.start.remote(pid))
    while not os.path.exists(gate):
        time.sleep(0.01)
    open(f"{gate}.{pid}", "w").close()
    runtime.get(ledger.effect.remote(pid))
    return pid


def test_a_node_paused_shorter_than_the_window_is_not_declared_dead(fast_mesh):
    before = _workers()
    pid = next(iter(before.values()))
    os.kill(pid, signal.SIGSTOP)
    time.sleep(0.3)  # the pause under test
    os.kill(pid, signal.SIGCONT)
    time.sleep(2.0)  # longer than the dead window: a false death would show by now
    assert _workers() == before


def test_a_node_paused_too_long_is_declared_dead_and_rejoins_with_a_new_id(fast_mesh):
    before = _workers()
    victim_id, pid = next(iter(before.items()))

    @runtime.remote
    def where():
        return os.getpid()

    os.kill(pid, signal.SIGSTOP)
    try:
        _until(lambda: victim_id not in _workers())
        # Work goes to the live node meanwhile.
        assert set(runtime.get([where.remote() for _ in range(4)], timeout=30)) == {
            p for p in before.values() if p != pid
        }
    finally:
        os.kill(pid, signal.SIGCONT)
    # Told it was evicted, the node rejoins under a new id (same process).
    _until(lambda: pid in _workers().values() and victim_id not in _workers())
    assert runtime.cluster_resources()["CPU"] == 2.0
    assert len(set(runtime.get([where.remote() for _ in range(20)], timeout=30))) >= 1


def test_a_side_effect_the_evicted_incarnation_attempts_after_sigcont_is_rejected(
    fast_mesh, tmp_path
):
    (victim_id, victim), (awake_id, awake) = sorted(_workers().items())
    ledger = Ledger.options(scheduling_strategy=NodeAffinitySchedulingStrategy(awake_id)).remote()
    gate = str(tmp_path / "gate")
    ref = effect_after_gate.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(victim_id, soft=True)
    ).remote(ledger, gate)
    _until(lambda: runtime.get(ledger.record.remote())[0] == [victim])  # it started there
    os.kill(victim, signal.SIGSTOP)
    try:
        _until(lambda: victim_id not in _workers())
        open(gate, "w").close()
        assert runtime.get(ref, timeout=30) == awake  # retried on the awake node
    finally:
        os.kill(victim, signal.SIGCONT)
    # The old incarnation wakes inside the task, past the gate: it tries its side effect...
    _until(lambda: os.path.exists(f"{gate}.{victim}"))
    # ...and rejoins under a new id; by then its attempt has met a closed door.
    _until(lambda: victim in _workers().values())
    assert victim_id not in _workers()
    started, done = runtime.get(ledger.record.remote(), timeout=30)
    assert started == [victim, awake]
    assert done == [awake]  # the side effect ran once
