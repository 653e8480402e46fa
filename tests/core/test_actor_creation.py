"""Creating many actors: the creations of one loop pass go to the head in one request (each
class's blob once), the head places them with one request per node, and tells the creator
where each runs, so the creator's first calls need not ask the head."""

from __future__ import annotations

from typing import Any

import pytest

import runtime
from runtime.core.api.blocking import current_worker
from runtime.core.wire import protocol as p
from runtime.exceptions import ActorDiedError
from runtime.util import (
    PlacementGroupSchedulingStrategy,
    placement_group,
    remove_placement_group,
)

from ..actors import Echo
from ..conftest import until

pytestmark = pytest.mark.usefixtures("cluster")


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every request this driver sends the head, recorded."""
    worker = current_worker()
    sent: list[Any] = []
    original = worker.head_request

    async def recording(msg: Any) -> Any:
        sent.append(msg)
        return await original(msg)

    monkeypatch.setattr(worker, "head_request", recording)
    monkeypatch.setattr(worker.caller, "head_request", recording)  # bound once by the caller
    return sent


def test_actors_created_together_go_in_one_request_and_need_no_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = _recording(monkeypatch)
    actors = [Echo.remote(i) for i in range(300)]
    assert runtime.get([a.who.remote() for a in actors], timeout=60) == list(range(300))
    creates = [m for m in sent if isinstance(m, p.CreateActors)]
    assert sum(len(m.specs) for m in creates) == 300
    assert len(creates) < 300  # gathered per loop pass
    assert all(len(m.blobs) == 1 and not any(s.cls_blob for s in m.specs) for m in creates)
    assert not [m for m in sent if isinstance(m, p.CreateActor | p.GetActor)]  # told, not asked


def test_one_actor_that_cannot_be_created_fails_alone_in_its_batch() -> None:
    pg = placement_group([{"CPU": 0.1}])
    assert pg.wait(30)
    remove_placement_group(pg)
    doomed = Echo.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote(-1)
    good = [Echo.remote(i) for i in range(20)]  # the same loop pass as the doomed one
    assert runtime.get([a.who.remote() for a in good], timeout=60) == list(range(20))
    with pytest.raises(Exception, match="does not exist"):
        runtime.get(doomed.who.remote(), timeout=30)


def test_an_actor_created_from_an_actor_is_placed_and_called_from_there() -> None:
    @runtime.remote(num_cpus=0)
    class Maker:
        def make(self, n: int) -> list[int]:
            made = [Echo.remote(i) for i in range(n)]
            return runtime.get([a.who.remote() for a in made], timeout=60)

    maker = Maker.remote()
    assert runtime.get(maker.make.remote(50), timeout=90) == list(range(50))


def test_an_actor_killed_right_after_it_was_created_is_dead() -> None:
    """The kill goes to the head after the creation it follows (same order as sent)."""
    for i in range(10):
        a = Echo.remote(i)
        runtime.kill(a)
        with pytest.raises(ActorDiedError):
            runtime.get(a.who.remote(), timeout=30)


def test_a_creator_that_hears_nothing_in_time_asks_the_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An actor that waits for resources past the creator's wait: its calls ask the head
    where it is (GetActor, which waits while it is PENDING) and run once it is placed."""
    from runtime.core.submission import creations

    monkeypatch.setattr(creations, "PLACED_WAIT_S", 0.2)
    monkeypatch.setattr(creations, "PLACED_CHECKS", 1)
    sent = _recording(monkeypatch)
    holder = Echo.options(resources={"custom": 2}).remote(1)
    assert runtime.get(holder.who.remote(), timeout=30) == 1
    waiter = Echo.options(resources={"custom": 2}).remote(2)  # no room until holder goes
    answer = waiter.who.remote()
    until(lambda: any(isinstance(m, p.GetActor) for m in sent), 20)  # it asks, not told
    runtime.kill(holder)
    assert runtime.get(answer, timeout=30) == 2
