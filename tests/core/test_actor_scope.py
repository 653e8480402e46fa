"""Actors out of scope: an unnamed, non-detached actor is stopped once no handle to it is left
anywhere (here, in another process, inside a stored object) and no call to it is in flight, as
in Ray. Named and detached actors live until killed. The head forgets the oldest dead actors
past a bound, so a driver that makes and drops actors all day leaves nothing growing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import runtime
from runtime.core.api.state import list_state
from runtime.core.submission.actor_calls import OUT_OF_SCOPE
from tests.conftest import until

pytestmark = pytest.mark.timeout(60)

DEAD_KEPT = 20


@pytest.fixture(scope="module", autouse=True)
def small_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Two one-CPU nodes; the head keeps at most DEAD_KEPT dead actors."""
    saved = {k: os.environ.get(k) for k in ("RUNTIME_TMPDIR", "RUNTIME_DEAD_ACTORS_KEPT")}
    os.environ["RUNTIME_TMPDIR"] = str(tmp_path_factory.mktemp("scope"))
    os.environ["RUNTIME_DEAD_ACTORS_KEPT"] = str(DEAD_KEPT)
    runtime.init(num_cpus=2)
    try:
        yield
    finally:
        runtime.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@runtime.remote(num_cpus=1)
class Worker:
    """Takes a whole CPU: on two CPUs, a third one can only start once another is gone."""

    def ping(self) -> str:
        return runtime.get_runtime_context().get_actor_id()

    def count(self, n: int) -> Iterator[int]:
        import time

        for i in range(n):
            time.sleep(0.01)
            yield i

    def slow(self, s: float) -> str:
        import time

        time.sleep(s)
        return "done"


@runtime.remote
class Holder:
    """Keeps whatever handles it is given."""

    def __init__(self) -> None:
        self.kept: list[Any] = []

    def keep(self, handles: list[Any]) -> int:
        self.kept.extend(handles)
        return len(self.kept)

    def call_all(self) -> list[str]:
        return runtime.get([h.ping.remote() for h in self.kept])

    def drop(self) -> None:
        self.kept.clear()


def state_of(actor_id: str) -> dict[str, Any] | None:
    return next((a for a in list_state("actors") if a["actor_id"] == actor_id), None)


def is_out_of_scope(actor_id: str) -> bool:
    row = state_of(actor_id)
    return row is not None and row["state"] == "DEAD" and row["death_cause"] == OUT_OF_SCOPE


def test_a_dropped_handle_stops_the_actor_and_gives_its_cpu_back() -> None:
    h = Worker.remote()
    aid = runtime.get(h.ping.remote())
    assert state_of(aid)["state"] == "ALIVE"
    del h
    until(lambda: is_out_of_scope(aid))
    until(lambda: runtime.available_resources().get("CPU") == 2.0)


def test_a_temporary_handle_answers_its_call_first() -> None:
    aid = runtime.get(Worker.remote().ping.remote())  # the handle is gone before the answer
    until(lambda: is_out_of_scope(aid))


def test_a_call_in_flight_keeps_the_actor_until_it_is_answered() -> None:
    h = Worker.remote()
    aid = runtime.get(h.ping.remote())
    ref = h.slow.remote(0.3)
    del h
    assert runtime.get(ref) == "done"
    until(lambda: is_out_of_scope(aid))


def test_a_stream_from_a_dropped_handle_runs_to_its_end() -> None:
    gen = Worker.remote().count.options(num_returns="streaming").remote(20)
    assert [runtime.get(ref) for ref in gen] == list(range(20))


def test_a_borrower_in_another_process_keeps_the_actor_alive() -> None:
    holder = Holder.remote()
    h = Worker.remote()
    aid = runtime.get(h.ping.remote())
    assert runtime.get(holder.keep.remote([h])) == 1
    del h
    # The holder's copy is all that is left: the actor lives and answers through it.
    assert runtime.get(holder.call_all.remote()) == [aid]
    assert state_of(aid)["state"] == "ALIVE"
    runtime.get(holder.drop.remote())
    until(lambda: is_out_of_scope(aid))


def test_a_handle_inside_a_stored_object_keeps_the_actor_alive() -> None:
    h = Worker.remote()
    aid = runtime.get(h.ping.remote())
    box = runtime.put({"handle": h})
    del h
    again = runtime.get(box)["handle"]
    assert runtime.get(again.ping.remote()) == aid
    del again, box
    until(lambda: is_out_of_scope(aid))


@runtime.remote
class Itself:
    def me(self) -> Any:
        return runtime.get_runtime_context().current_actor

    def ping(self) -> str:
        return "pong"


def test_a_handle_an_actor_gives_of_itself_counts_like_any_other() -> None:
    h = Itself.remote()
    again = runtime.get(h.me.remote())
    assert again == h
    aid = h._actor_id.hex()
    del h
    assert runtime.get(again.ping.remote()) == "pong"  # its own handle keeps it in scope
    assert state_of(aid)["state"] == "ALIVE"
    del again
    until(lambda: is_out_of_scope(aid))
    with pytest.raises(RuntimeError, match="only there inside an actor"):
        _ = runtime.get_runtime_context().current_actor


def test_named_and_detached_actors_outlive_their_handles() -> None:
    named = Worker.options(name="kept-by-name", num_cpus=0).remote()
    detached = Worker.options(name="kept-detached", lifetime="detached", num_cpus=0).remote()
    ids = runtime.get([named.ping.remote(), detached.ping.remote()])
    del named, detached
    # Make and drop an unnamed actor after them and wait for it to go: by then the others
    # would have gone too, were they collected.
    aid = runtime.get(Worker.options(num_cpus=0).remote().ping.remote())
    until(lambda: is_out_of_scope(aid))
    for name, aid in zip(["kept-by-name", "kept-detached"], ids, strict=True):
        assert state_of(aid)["state"] == "ALIVE"
        runtime.kill(runtime.get_actor(name))


def test_making_and_dropping_actors_in_a_loop_stays_bounded() -> None:
    # Each takes a CPU and there are two: without collection the third would wait forever.
    for _ in range(3 * DEAD_KEPT):
        h = Worker.remote()
        runtime.get(h.ping.remote())
    del h
    rows = list_state("actors")
    assert sum(r["state"] == "ALIVE" for r in rows) <= 3  # the last one and the holder
    # The head forgot the oldest dead ones.
    assert sum(r["state"] == "DEAD" for r in rows) <= DEAD_KEPT
