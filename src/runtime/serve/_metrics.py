"""Serve's metrics, through the public ``runtime.util.metrics`` API: requests, errors and
latency by deployment and route (recorded by each HTTP proxy), and replicas by state
(recorded by the controller)."""

from __future__ import annotations

from typing import Any

from runtime.util.metrics import Counter, Gauge, Histogram

_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_made: dict[str, Any] = {}


def _get() -> dict[str, Any]:
    if not _made:
        keys = ("app", "deployment", "route")
        _made["requests"] = Counter(
            "runtime_serve_requests", "Serve HTTP requests", tag_keys=(*keys, "code")
        )
        _made["errors"] = Counter(
            "runtime_serve_request_errors", "Serve HTTP requests answered 5xx", tag_keys=keys
        )
        _made["latency"] = Histogram(
            "runtime_serve_request_latency_seconds",
            "Serve HTTP requests, from received to answered",
            boundaries=_BOUNDS,
            tag_keys=keys,
        )
        _made["replicas"] = Gauge(
            "runtime_serve_replicas",
            "Serve replicas by state",
            tag_keys=("app", "deployment", "state"),
        )
    return _made


def request(route: tuple[str, str, str] | None, status: int, seconds: float) -> None:
    """One request the proxy answered (``route``: prefix, app, ingress deployment)."""
    key = (route, status)
    tags = _tags.get(key)
    if tags is None:
        prefix, app, deployment = route if route is not None else ("", "", "")
        plain = {"app": app, "deployment": deployment, "route": prefix}
        tags = ({**plain, "code": str(status)}, plain)
        if len(_tags) < 4096:
            _tags[key] = tags
    m = _made or _get()
    m["requests"].inc(tags=tags[0])
    if status >= 500:
        m["errors"].inc(tags=tags[1])
    m["latency"].observe(seconds, tags=tags[1])


#: (route, status) -> the tags of its records, made once (the proxy records every request).
_tags: dict[tuple[Any, int], tuple[dict[str, str], dict[str, str]]] = {}


class ReplicaCounts:
    """The controller's replicas by state (deployments gone are set to zero)."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, str]] = set()

    def update(self, counts: dict[tuple[str, str, str], int]) -> None:
        gauge = _get()["replicas"]
        for key in self._seen - set(counts):
            gauge.set(0, tags={"app": key[0], "deployment": key[1], "state": key[2]})
        for (app, deployment, state), n in counts.items():
            gauge.set(n, tags={"app": app, "deployment": deployment, "state": state})
        self._seen = set(counts)
