"""``request_resources``, as Ray's ``ray.autoscaler.sdk``: ask the autoscaler for capacity
ahead of demand. The request is kept in the head's key-value store; every running
:class:`~runtime.autoscaler.Autoscaler` of the cluster reads it on each update."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

from runtime.experimental import internal_kv

_NAMESPACE = b"_autoscaler"
_KEY = b"resource_request"


def request_resources(
    num_cpus: int | None = None, bundles: Sequence[Mapping[str, float]] | None = None
) -> None:
    """Ask for a cluster that can hold ``num_cpus`` CPUs (as 1-CPU bundles) and each of
    ``bundles`` at once, whatever already runs there. Each call replaces the last request
    (as in Ray); ``request_resources(num_cpus=0)`` withdraws it, so idle nodes may stop."""
    out: list[dict[str, float]] = []
    if num_cpus is not None:
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 0:
            raise ValueError(f"num_cpus must be an int >= 0, got {num_cpus!r}")
        out += [{"CPU": 1.0}] * num_cpus
    for b in bundles or ():
        if not isinstance(b, Mapping) or not b:
            raise ValueError(f"each bundle must be a non-empty dict of resources, got {b!r:.100}")
        for k, v in b.items():
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            if not isinstance(k, str) or not ok or v < 0:
                raise ValueError(f"bundle {dict(b)!r:.100}: {k!r} must map to a number >= 0")
        out.append({str(k): float(v) for k, v in b.items()})
    internal_kv._internal_kv_put(_KEY, json.dumps(out).encode(), namespace=_NAMESPACE)


def requested_resources() -> list[dict[str, float]]:
    """The bundles of the standing request (empty when none)."""
    raw = internal_kv._internal_kv_get(_KEY, namespace=_NAMESPACE)
    return [dict(b) for b in json.loads(raw)] if raw else []


__all__ = ["request_resources", "requested_resources"]
