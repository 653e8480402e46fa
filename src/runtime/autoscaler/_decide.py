"""The autoscaler's decision, as a pure function: demand and nodes in, launches and
terminations out (no processes, no cluster: tested on its own)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Bundle = Mapping[str, float]
#: Resources every host reports that no bundle asks for by name (sizes, not slots).
_SIZES = ("memory", "object_store_memory")
_EPS = 1e-9


@dataclass(frozen=True)
class NodeType:
    """A kind of node the provider can start: what one offers, and how many may run."""

    name: str
    resources: Mapping[str, float]
    min_workers: int = 0
    max_workers: int = 10
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a node type needs a name")
        if not 0 <= self.min_workers <= self.max_workers:
            raise ValueError(
                f"node type {self.name!r}: need 0 <= min_workers <= max_workers, got "
                f"{self.min_workers} and {self.max_workers}"
            )
        for k, v in self.resources.items():
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"node type {self.name!r}: resource {k!r} must be >= 0, got {v!r}")


@dataclass
class NodeView:
    """One host as the autoscaler sees it. ``node_type`` None: not the provider's (a static
    host); ``available`` None: launched, not joined yet; ``idle_s``: how long it has had
    nothing running (0 while busy)."""

    node_id: str
    node_type: str | None
    resources: Mapping[str, float]
    available: Mapping[str, float] | None = None
    idle_s: float = 0.0


@dataclass
class Decision:
    launch: dict[str, int] = field(default_factory=dict)
    terminate: list[str] = field(default_factory=list)
    #: Demand no node type could ever hold (it stays pending, or fails, as the core says).
    infeasible: list[dict[str, float]] = field(default_factory=list)


def fits(bundle: Bundle, free: Mapping[str, float]) -> bool:
    return all(v <= free.get(k, 0.0) + _EPS for k, v in bundle.items() if v > 0)


def _take(bundle: Bundle, free: dict[str, float]) -> None:
    for k, v in bundle.items():
        free[k] = free.get(k, 0.0) - v


def _size(bundle: Bundle) -> float:
    return sum(v for k, v in bundle.items() if k not in _SIZES)


def pack(bundles: Sequence[Bundle], bins: list[dict[str, float]]) -> list[Bundle]:
    """First-fit, largest first, of ``bundles`` into ``bins`` (consumed in place); what did
    not fit."""
    left = []
    for b in sorted(bundles, key=_size, reverse=True):
        for free in bins:
            if fits(b, free):
                _take(b, free)
                break
        else:
            left.append(b)
    return left


def decide(
    types: Sequence[NodeType],
    nodes: Sequence[NodeView],
    demand: Sequence[Bundle],
    requests: Sequence[Bundle] = (),
    *,
    idle_timeout_s: float = 60.0,
) -> Decision:
    """What to launch and what to stop.

    ``demand``: bundles that wait for resources now (pending tasks, actors, placement group
    bundles); they go first into what nodes have free, and what is launching. ``requests``:
    :func:`runtime.autoscaler.sdk.request_resources`, a floor for the cluster's *total*
    capacity, whatever runs. Leftovers start nodes of the smallest type that holds them,
    within ``max_workers``; a provider node idle for ``idle_timeout_s`` stops unless
    ``min_workers`` or the requests need it.
    """
    by_name = {t.name: t for t in types}
    count = {t.name: 0 for t in types}
    for n in nodes:
        if n.node_type in count:
            count[n.node_type] += 1
    out = Decision()
    free = [dict(n.available if n.available is not None else n.resources) for n in nodes]
    left = pack(demand, free)
    left += pack(requests, [dict(n.resources) for n in nodes])
    # New nodes: the smallest type that holds each leftover, packing the rest in with it.
    new_bins: list[dict[str, float]] = []
    for b in sorted(left, key=_size, reverse=True):
        if pack([b], new_bins) == []:
            continue
        holds = [t for t in types if fits(b, t.resources) and count[t.name] < t.max_workers]
        if not holds:
            if not any(fits(b, t.resources) for t in types):
                out.infeasible.append(dict(b))
            continue  # at max_workers: it waits for room
        t = min(holds, key=lambda t: _size(t.resources))
        count[t.name] += 1
        out.launch[t.name] = out.launch.get(t.name, 0) + 1
        bin_ = dict(t.resources)
        _take(b, bin_)
        new_bins.append(bin_)
    for t in types:  # keep min_workers up
        if count[t.name] < t.min_workers:
            out.launch[t.name] = out.launch.get(t.name, 0) + t.min_workers - count[t.name]
            count[t.name] = t.min_workers
    if out.launch:
        return out  # demand is waiting: stop nothing this round
    kept = list(nodes)
    for n in sorted(nodes, key=lambda n: -n.idle_s):
        kind = by_name.get(n.node_type or "")
        if kind is None or n.available is None or n.idle_s < idle_timeout_s:
            continue
        if count[kind.name] - 1 < kind.min_workers:
            continue
        rest = [m for m in kept if m is not n]
        if requests and pack(requests, [dict(m.resources) for m in rest]):
            continue  # the requested capacity needs it
        kept = rest
        count[kind.name] -= 1
        out.terminate.append(n.node_id)
    return out


__all__ = ["Decision", "NodeType", "NodeView", "decide", "fits", "pack"]
