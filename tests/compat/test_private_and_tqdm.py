"""Ray's ``_private.internal_api`` (``memory_summary``, ``free``) and
``experimental.tqdm_ray`` on this runtime."""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator

import cloudpickle
import pytest

import runtime
from runtime._private import internal_api
from runtime.experimental.tqdm_ray import tqdm

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def mesh() -> Iterator[None]:
    runtime.init(num_cpus=1)
    try:
        yield
    finally:
        runtime.shutdown()


@runtime.remote
def pickled_put(value: int) -> bytes:
    return pickle.dumps(runtime.put(value))


def test_a_ref_pickled_inside_a_task_still_resolves_after_the_task_ends(mesh: None) -> None:
    blob = runtime.get(pickled_put.remote(41))
    assert runtime.get(pickle.loads(blob), timeout=20) == 41


def test_memory_summary_lists_an_object_the_driver_pinned_and_free_drops_the_pin(
    mesh: None,
) -> None:
    ref = runtime.put(b"x" * 300_000)
    cloudpickle.dumps(ref)
    text = internal_api.memory_summary(group_by="STACK_TRACE", units="KB")
    assert ref.hex() in text
    assert "grouped by call_site" in text
    assert internal_api.memory_summary(stats_only=True, num_entries=0).startswith("0 objects")
    assert internal_api.free([ref]) == 1
    assert internal_api.free(ref) == 0  # nothing left to release
    assert runtime.get(ref) == b"x" * 300_000  # a live ref still holds it


def test_memory_summary_refuses_what_it_does_not_know(mesh: None) -> None:
    with pytest.raises(ValueError, match="group_by"):
        internal_api.memory_summary(group_by="COLOR")
    with pytest.raises(ValueError, match="address"):
        internal_api.memory_summary(address="10.0.0.1:6379")
    with pytest.raises(TypeError, match="ObjectRefs"):
        internal_api.free(["not a ref"])  # type: ignore[list-item]


def test_a_bar_over_an_iterable_writes_its_first_and_last_count() -> None:
    out = io.StringIO()
    items = list(tqdm(range(7), desc="load", flush_interval_s=3600, file=out))
    assert items == list(range(7))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("load: 0/7 [")
    assert lines[-1].startswith("load: 7/7 [")
    assert len(lines) == 2


def test_a_bar_updated_by_hand_flushes_at_its_interval_and_ignores_updates_after_close() -> None:
    out = io.StringIO()
    bar: tqdm[int] = tqdm(desc="steps", total=3, flush_interval_s=0, file=out, unit="batch")
    bar.update(2)
    bar.close()
    bar.update(5)
    bar.close()
    assert bar.n == 2
    lines = out.getvalue().splitlines()
    assert [line.split(" [")[0] for line in lines] == ["steps: 0/3", "steps: 2/3", "steps: 2/3"]
    assert lines[-1].endswith("batch/s]")
    with pytest.raises(ValueError, match="flush_interval_s"):
        tqdm(range(2), flush_interval_s=-1)


@runtime.remote
def count_with_bar(n: int) -> int:
    return sum(1 for _ in tqdm(range(n), desc="remote"))


def test_a_bar_works_inside_a_task(mesh: None) -> None:
    assert runtime.get(count_with_bar.remote(5)) == 5
