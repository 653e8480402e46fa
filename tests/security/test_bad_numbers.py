"""Issue 15, item 8: bad numbers in resource amounts and options are refused at once.

NaN passes every ``<`` check, so ``num_cpus=nan`` once let 12 tasks run together on 2 CPUs
and showed ``CPU: nan`` as available. These run against a real local mesh: each bad value
must raise a clear ValueError/TypeError at ``@remote``/``.options()``/``.remote()``, and the
node's ledger must stay whole afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

import runtime

pytestmark = pytest.mark.timeout(60)

NAN = float("nan")
INF = float("inf")


@pytest.fixture(scope="module")
def two_cpus() -> Iterator[None]:
    runtime.init(num_cpus=2)
    try:
        yield
    finally:
        runtime.shutdown()


def _task() -> int:
    return 1


class _Actor:
    def ping(self) -> int:
        return 1


BAD_AMOUNTS: list[dict[str, Any]] = [
    {"num_cpus": NAN},
    {"num_cpus": INF},
    {"num_cpus": -1},
    {"num_cpus": "2"},
    {"num_gpus": NAN},
    {"num_gpus": -0.5},
    {"memory": NAN},
    {"memory": -1},
    {"resources": {"custom": NAN}},
    {"resources": {"custom": INF}},
    {"resources": {"custom": -1.0}},
    {"resources": {"": 1.0}},
    {"resources": [("custom", 1.0)]},
]

BAD_ACTOR_OPTIONS: list[dict[str, Any]] = [
    *BAD_AMOUNTS,
    {"max_concurrency": 0},
    {"max_concurrency": -3},
    {"max_concurrency": 1.5},
    {"max_restarts": -2},
    {"max_task_retries": -5},
    {"max_pending_calls": -2},
    {"name": "x" * 1025},
    {"name": ""},
    {"name": 7},
    {"namespace": "n" * (1 << 20)},
]


@pytest.mark.parametrize("options", [*BAD_AMOUNTS, {"max_retries": -2}, {"max_retries": NAN}])
def test_a_task_with_a_bad_number_is_refused_at_options_and_at_decoration(
    two_cpus: None, options: dict[str, Any]
) -> None:
    with pytest.raises((ValueError, TypeError)):
        runtime.remote(_task).options(**options).remote()
    with pytest.raises((ValueError, TypeError)):
        runtime.remote(**options)(_task)


@pytest.mark.parametrize("options", BAD_ACTOR_OPTIONS)
def test_an_actor_with_a_bad_number_or_an_absurd_name_is_refused(
    two_cpus: None, options: dict[str, Any]
) -> None:
    with pytest.raises((ValueError, TypeError)):
        runtime.remote(_Actor).options(**options).remote()
    with pytest.raises((ValueError, TypeError)):
        runtime.remote(**options)(_Actor)


def test_the_error_says_which_option_and_value_is_wrong(two_cpus: None) -> None:
    with pytest.raises(ValueError, match=r"num_cpus.*finite.*nan"):
        runtime.remote(_task).options(num_cpus=NAN)
    with pytest.raises(ValueError, match=r"max_concurrency must be >= 1, got 0"):
        runtime.remote(_Actor).options(max_concurrency=0)
    with pytest.raises(ValueError, match=r"name must be .* at most 1024 characters"):
        runtime.remote(_Actor).options(name="a" * 2000)


def test_the_ledger_stays_finite_after_the_refusals_and_good_work_still_runs(
    two_cpus: None,
) -> None:
    for bad in (NAN, INF, -1.0):
        with pytest.raises((ValueError, TypeError)):
            runtime.remote(_task).options(num_cpus=bad).remote()
    ok = runtime.remote(_task).options(num_cpus=0.5, memory=1024, resources={})
    assert runtime.get([ok.remote() for _ in range(4)], timeout=30) == [1] * 4
    actor = runtime.remote(_Actor).options(name="a" * 1024, max_concurrency=2).remote()
    assert runtime.get(actor.ping.remote(), timeout=30) == 1
    available = runtime.available_resources()
    assert all(math.isfinite(v) for v in available.values()), available
    assert available.get("CPU", 0) <= 2.0
