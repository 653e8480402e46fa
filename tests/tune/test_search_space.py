"""Search spaces resolve without a cluster: domains, grids, sample_from, validation."""

from __future__ import annotations

import random

import pytest

from runtime import tune
from runtime.tune._search_space import count_variants, generate_variants, validate


def _variants(space: dict, seed: int = 0) -> list[dict]:
    return list(generate_variants(space, random.Random(seed)))


def test_each_domain_samples_within_its_bounds() -> None:
    space = {
        "u": tune.uniform(1, 2),
        "lu": tune.loguniform(1e-4, 1e-1),
        "qu": tune.quniform(0, 10, 2.5),
        "ri": tune.randint(3, 5),
        "lri": tune.lograndint(1, 100),
        "rn": tune.randn(10, 0.1),
        "c": tune.choice(["a", "b"]),
        "const": 7,
    }
    rng = random.Random(1)
    for _ in range(200):
        (config,) = list(generate_variants(space, rng))
        assert 1 <= config["u"] < 2
        assert 1e-4 <= config["lu"] < 1e-1
        assert config["qu"] in (0.0, 2.5, 5.0, 7.5, 10.0)
        assert config["ri"] in (3, 4)
        assert 1 <= config["lri"] < 100 and isinstance(config["lri"], int)
        assert 9 < config["rn"] < 11
        assert config["c"] in ("a", "b")
        assert config["const"] == 7


def test_grid_search_is_a_cross_product_over_nested_dicts() -> None:
    space = {"a": tune.grid_search([1, 2, 3]), "nested": {"b": tune.grid_search(["x", "y"])}}
    configs = _variants(space)
    assert count_variants(space) == 6
    assert sorted((c["a"], c["nested"]["b"]) for c in configs) == sorted(
        (a, b) for a in (1, 2, 3) for b in ("x", "y")
    )


def test_sample_from_sees_the_resolved_config_even_when_chained() -> None:
    space = {
        "a": tune.grid_search([1, 2]),
        "c": tune.sample_from(lambda spec: spec.config.b * 10),
        "b": tune.sample_from(lambda spec: spec.config.a + 1),
        "nested": {"d": tune.sample_from(lambda spec: spec.config.nested.e * 2), "e": 5},
    }
    configs = _variants(space)
    assert [(c["a"], c["b"], c["c"], c["nested"]["d"]) for c in configs] == [
        (1, 2, 20, 10),
        (2, 3, 30, 10),
    ]


def test_a_seeded_space_draws_the_same_values() -> None:
    space = {"x": tune.uniform(0, 1), "y": tune.randint(0, 1000)}
    assert _variants(space, 5) == _variants(space, 5)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"x": tune.uniform}, "tune.uniform itself"),
        ({"x": iter([1, 2])}, "iterator"),
        ({"x": lambda spec: 1}, "sample_from"),
        ({"n": {"x": (i for i in range(3))}}, "n/x"),
        ({"x": {"grid_search": []}}, "non-empty"),
    ],
)
def test_values_of_unknown_kinds_are_rejected_with_their_place(bad: dict, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        validate(bad)


def test_a_domain_subclass_tune_does_not_know_is_rejected() -> None:
    class Mine(tune.Domain):
        pass

    with pytest.raises(TypeError, match="Mine"):
        validate({"x": Mine()})


@pytest.mark.parametrize(
    "make",
    [
        lambda: tune.uniform(2, 1),
        lambda: tune.loguniform(0, 1),
        lambda: tune.randint(5, 5),
        lambda: tune.choice([]),
        lambda: tune.grid_search([]),
        lambda: tune.quniform(0, 1, 0),
        lambda: tune.randn(0, -1),
    ],
)
def test_bad_domain_bounds_raise_value_errors(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]
