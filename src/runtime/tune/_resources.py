"""What one trial asks for: one bundle (the trial's actor) or several (a placement group).

``resources_per_trial={"cpu": 1, "gpu": 0, "custom": 2}`` is one bundle: the trial's actor
is created with those resources. ``tune.PlacementGroupFactory([{"CPU": 1}, {"CPU": 2}],
strategy="PACK")`` reserves a placement group per trial: the trial's actor runs in bundle
0, and the trainable places its own workers in the other bundles
(``tune.get_context().get_placement_group()``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def _bundle(bundle: Any, where: str) -> dict[str, float]:
    if not isinstance(bundle, Mapping):
        raise TypeError(f"{where} must be a dict like {{'cpu': 1}}, got {bundle!r}")
    out: dict[str, float] = {}
    for key, amount in bundle.items():
        name = str(key).upper() if str(key).lower() in ("cpu", "gpu") else str(key)
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            raise ValueError(f"{where}[{key!r}] must be a number >= 0, got {amount!r}")
        if amount:
            out[name] = out.get(name, 0.0) + float(amount)
    return out


class PlacementGroupFactory:
    """The resources of one trial as bundles placed together (Ray's PlacementGroupFactory).

    Args:
        bundles: a list of resource dicts; the first is the trial actor's own.
        strategy: how bundles spread over nodes: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD.
    """

    def __init__(self, bundles: Sequence[Mapping[str, float]], strategy: str = "PACK"):
        if isinstance(bundles, Mapping) or not isinstance(bundles, Sequence) or not bundles:
            raise ValueError("PlacementGroupFactory needs a non-empty list of bundles")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        self.bundles = [_bundle(b, f"bundle {i}") for i, b in enumerate(bundles)]
        if len(self.bundles) > 1 and not all(self.bundles):
            raise ValueError("every bundle of a multi-bundle request must ask for something")
        self.strategy = strategy

    @property
    def head_bundle(self) -> dict[str, float]:
        """The trial actor's resources."""
        return dict(self.bundles[0])

    @property
    def required_resources(self) -> dict[str, float]:
        """The sum over all bundles (what the controller accounts for)."""
        total: dict[str, float] = {}
        for bundle in self.bundles:
            for k, v in bundle.items():
                total[k] = total.get(k, 0.0) + v
        return total

    @property
    def uses_placement_group(self) -> bool:
        return len(self.bundles) > 1

    def key(self) -> tuple[Any, ...]:
        return (self.strategy, tuple(tuple(sorted(b.items())) for b in self.bundles))

    def to_state(self) -> dict[str, Any]:
        return {"bundles": self.bundles, "strategy": self.strategy}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroupFactory) and other.key() == self.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        return f"PlacementGroupFactory({self.bundles}, strategy={self.strategy!r})"


def resource_request(resources: Any) -> PlacementGroupFactory:
    """The request ``resources_per_trial`` means (default: one CPU, as Ray)."""
    if resources is None:
        return PlacementGroupFactory([{"CPU": 1.0}])
    if isinstance(resources, PlacementGroupFactory):
        return resources
    if isinstance(resources, Mapping):
        return PlacementGroupFactory([_bundle(resources, "resources_per_trial")])
    raise TypeError(
        "resources_per_trial must be a dict like {'cpu': 1} or a tune.PlacementGroupFactory, "
        f"got {resources!r}"
    )
