"""Application metrics, as Ray's ``ray.util.metrics``: :class:`Counter`, :class:`Gauge` and
:class:`Histogram`, with tags.

Record from anywhere (a driver, a task, an actor method); each process keeps its values and
the head's metrics endpoint (``/metrics`` on the dashboard) merges them with the runtime's
own, each sample labelled with the process it came from (``node_id``, ``role``)::

    from runtime.util.metrics import Counter, Histogram

    requests = Counter("app_requests", description="Requests served", tag_keys=("route",))
    requests.set_default_tags({"route": "/"})
    requests.inc()
    latency = Histogram("app_latency_s", boundaries=[0.01, 0.1, 1.0], tag_keys=("route",))
    latency.observe(0.03, tags={"route": "/predict"})

Names follow Prometheus' rules (letters, digits, ``_`` and ``:``); a counter is exported
with ``_total`` appended, as Prometheus' client does. Every tag key must get a value (from
``tags`` or the default tags); an unknown key is a ``ValueError``. Recording costs a dict
update and is not sent anywhere until the head asks (when scraped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from runtime.core.common import metrics as _m

__all__ = ["Counter", "Gauge", "Histogram", "Metric"]


class Metric:
    """What the three kinds share: a name, a description, tag keys and default tags."""

    _kind = ""

    def __init__(
        self,
        name: str,
        description: str = "",
        tag_keys: tuple[str, ...] | None = None,
        *,
        _bounds: tuple[float, ...] = _m.DEFAULT_BOUNDS,
    ) -> None:
        if tag_keys is None:
            tag_keys = ()
        if not isinstance(tag_keys, tuple):
            raise TypeError(f"tag_keys must be a tuple of str, not {type(tag_keys).__name__}")
        if not isinstance(description, str):
            raise TypeError("description must be a str")
        self._name = name
        self._description = description
        self._tag_keys = tag_keys
        self._default_tags: dict[str, str] = {}
        self._family = _m.register(name, self._kind, description, tag_keys, _bounds)

    @property
    def info(self) -> dict[str, object]:
        """The metric's name, description, tag keys and default tags."""
        return {
            "name": self._name,
            "description": self._description,
            "tag_keys": self._tag_keys,
            "default_tags": dict(self._default_tags),
        }

    def set_default_tags(self, default_tags: Mapping[str, str]) -> Metric:
        """Tag values used when a record does not give them (returns the metric)."""
        for key in default_tags:
            if key not in self._tag_keys:
                raise ValueError(f"unknown tag key {key!r} of metric {self._name!r}")
        self._default_tags = {k: str(v) for k, v in default_tags.items()}
        return self

    def _key(self, tags: Mapping[str, str] | None) -> tuple[str, ...]:
        if not tags:
            merged = self._default_tags
        else:
            merged = {**self._default_tags, **tags}
            for key in tags:
                if key not in self._tag_keys:
                    raise ValueError(f"unknown tag key {key!r} of metric {self._name!r}")
        try:
            return tuple(str(merged[k]) for k in self._tag_keys)
        except KeyError as exc:
            raise ValueError(
                f"missing value for tag key {exc.args[0]!r} of {self._name!r}"
            ) from None


class Counter(Metric):
    """A count that only goes up (requests served, rows read)."""

    _kind = "counter"

    def inc(self, value: float = 1.0, tags: Mapping[str, str] | None = None) -> None:
        """Add ``value`` (>= 0)."""
        if value < 0:
            raise ValueError(f"a counter only goes up: inc({value}) on {self._name!r}")
        self._family.add(self._key(tags), float(value))


class Gauge(Metric):
    """A value that goes up and down (queue length, memory in use)."""

    _kind = "gauge"

    def set(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Set the value for these tags."""
        self._family.set(self._key(tags), float(value))


class Histogram(Metric):
    """A distribution of observed values (latencies) in buckets with the given upper
    ``boundaries`` (increasing, positive)."""

    _kind = "histogram"

    def __init__(
        self,
        name: str,
        description: str = "",
        boundaries: Iterable[float] | None = None,
        tag_keys: tuple[str, ...] | None = None,
    ) -> None:
        bounds = tuple(float(b) for b in boundaries) if boundaries else _m.DEFAULT_BOUNDS
        super().__init__(name, description, tag_keys, _bounds=bounds)
        self.boundaries = list(bounds)

    def observe(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Count one observation of ``value``."""
        self._family.observe(self._key(tags), float(value))
