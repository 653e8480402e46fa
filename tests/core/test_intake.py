"""The calls of a batch are taken into their actors' mailboxes in one pass
(``execution.intake``): each actor's calls in the order sent when one burst interleaves two
actors, calls with ref arguments (the general path) in their place among plain ones, an
actor with a pending-call limit (the general path) still bounded, and the answers of a run
kept for resent calls (``sync_runs.finish_many``)."""

from __future__ import annotations

import pytest

import runtime
from runtime import exceptions as exc

pytestmark = pytest.mark.timeout(90)


@runtime.remote(num_cpus=0)
class Log:
    def __init__(self):
        self.seen = []

    def add(self, i):
        self.seen.append(i)
        return i

    def history(self):
        return list(self.seen)

    def kept(self):
        from runtime.core.objects.refs import current_worker

        return len(current_worker().executor.answers)


def test_one_burst_to_two_actors_keeps_each_actors_order(cluster):
    a, b = Log.remote(), Log.remote()
    runtime.get([a.history.remote(), b.history.remote()], timeout=30)
    refs = [(a if i % 3 else b).add.remote(i) for i in range(3_000)]
    assert runtime.get(refs, timeout=60) == list(range(3_000))
    assert runtime.get(a.history.remote(), timeout=30) == [i for i in range(3_000) if i % 3]
    assert runtime.get(b.history.remote(), timeout=30) == [i for i in range(3_000) if not i % 3]


def test_calls_with_ref_arguments_keep_their_place_in_a_burst(cluster):
    a = Log.remote()
    runtime.get(a.history.remote(), timeout=30)
    refs = [a.add.remote(runtime.put(i) if i % 7 == 0 else i) for i in range(700)]
    assert runtime.get(refs, timeout=60) == list(range(700))
    assert runtime.get(a.history.remote(), timeout=30) == list(range(700))


def test_an_actor_with_a_pending_call_limit_still_refuses_past_it(cluster):
    a = Log.options(max_pending_calls=5).remote()
    runtime.get(a.history.remote(), timeout=30)
    refs = [a.add.remote(i) for i in range(2_000)]
    got, refused = [], 0
    for ref in refs:
        try:
            got.append(runtime.get(ref, timeout=60))
        except exc.PendingCallsLimitExceeded:
            refused += 1
    assert refused > 0
    assert got == sorted(got)
    assert runtime.get(a.history.remote(), timeout=30) == got


def test_the_answers_of_a_pipelined_run_are_kept_for_resent_calls(cluster):
    a = Log.remote()
    before = runtime.get(a.kept.remote(), timeout=30)
    assert runtime.get([a.add.remote(i) for i in range(1_000)], timeout=60) == list(range(1_000))
    assert runtime.get(a.kept.remote(), timeout=30) >= min(before + 1_000, 4_096)
