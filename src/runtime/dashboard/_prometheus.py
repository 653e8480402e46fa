"""The cluster's metrics in Prometheus' text format: the snapshots of every process, merged
into one set of families, each sample labelled with the process it came from.

Rendered with ``prometheus_client`` (a custom collector over the snapshots), so the output is
the format Prometheus' own client writes; nothing of it runs until a scrape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

#: The labels every sample gets: which process it came from.
PROCESS_LABELS = ("node_id", "role")
#: The text format's media type.
CONTENT_TYPE = CONTENT_TYPE_LATEST


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Families by name, their samples from every snapshot with the process labels added (a
    family another process declared with another type is left out of that process)."""
    merged: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        who = {"node_id": str(snap.get("node_id", "")), "role": str(snap.get("role", ""))}
        for fam in snap.get("families", []):
            name, kind = fam["name"], fam["type"]
            if kind == "counter" and name.endswith("_total"):
                name = name[: -len("_total")]
            into = merged.setdefault(
                name, {"name": name, "type": kind, "help": fam.get("help", ""), "samples": []}
            )
            if into["type"] != kind:
                continue
            for sample in fam["samples"]:
                tags = {**who, **{str(k): str(v) for k, v in sample[0].items()}}
                into["samples"].append([tags, *sample[1:]])
    return merged


def _families(merged: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    for fam in merged.values():
        keys: list[str] = list(PROCESS_LABELS)
        for sample in fam["samples"]:
            keys.extend(k for k in sample[0] if k not in keys)
        help_text = fam["help"] or fam["name"]
        metric: Any
        if fam["type"] == "histogram":
            metric = HistogramMetricFamily(fam["name"], help_text, labels=keys)
            for tags, bounds, counts, total in fam["samples"]:
                running, buckets = 0.0, []
                for le, n in zip([*bounds, float("inf")], counts, strict=True):
                    running += n
                    buckets.append(("+Inf" if le == float("inf") else repr(float(le)), running))
                metric.add_metric([tags.get(k, "") for k in keys], buckets, float(total))
        else:
            cls = CounterMetricFamily if fam["type"] == "counter" else GaugeMetricFamily
            metric = cls(fam["name"], help_text, labels=keys)
            for tags, value in fam["samples"]:
                metric.add_metric([tags.get(k, "") for k in keys], float(value))
        yield metric


class _Snapshots(Collector):
    def __init__(self, merged: dict[str, dict[str, Any]]) -> None:
        self.merged = merged

    def collect(self) -> Iterable[Metric]:
        return _families(self.merged)


def render(snapshots: Iterable[dict[str, Any]]) -> bytes:
    """The text exposition of ``snapshots`` (one process's, or the whole cluster's)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshots(merge(snapshots)))
    return generate_latest(registry)
