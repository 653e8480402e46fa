"""runtime.util.metrics, as Ray's ray.util.metrics: records in this process, validation with
clear errors, and the text format the head renders from snapshots (parsed back with
prometheus_client's own parser)."""

from __future__ import annotations

import pytest

from runtime.core.common import metrics as core_metrics
from runtime.util.metrics import Counter, Gauge, Histogram

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from runtime.dashboard import render  # noqa: E402


def _family(name: str) -> dict:
    return next(f for f in core_metrics.snapshot() if f["name"] == name)


def test_counter_gauge_and_histogram_record_by_tags() -> None:
    c = Counter("t_api_requests", description="requests", tag_keys=("route",))
    c.set_default_tags({"route": "/"})
    c.inc()
    c.inc(2.0, tags={"route": "/a"})
    c.inc(tags={"route": "/a"})
    g = Gauge("t_api_queue", tag_keys=("q",))
    g.set(3, tags={"q": "x"})
    g.set(5, tags={"q": "x"})
    h = Histogram("t_api_latency", boundaries=[0.1, 1.0], tag_keys=())
    for v in (0.05, 0.5, 5.0, 0.5):
        h.observe(v)
    assert dict((tuple(t.values()), v) for t, v in _family("t_api_requests")["samples"]) == {
        ("/",): 1.0,
        ("/a",): 3.0,
    }
    assert _family("t_api_queue")["samples"] == [[{"q": "x"}, 5.0]]
    [[tags, bounds, counts, total]] = _family("t_api_latency")["samples"]
    assert (tags, bounds, counts, total) == ({}, [0.1, 1.0], [1, 2, 1], 6.05)


def test_bad_names_tags_and_values_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="bad metric name"):
        Counter("has space")
    with pytest.raises(TypeError, match="tuple"):
        Counter("t_api_list_keys", tag_keys=["a"])  # type: ignore[arg-type]
    c = Counter("t_api_tagged", tag_keys=("a",))
    with pytest.raises(ValueError, match="missing value for tag key 'a'"):
        c.inc()
    with pytest.raises(ValueError, match="unknown tag key 'b'"):
        c.inc(tags={"a": "1", "b": "2"})
    with pytest.raises(ValueError, match="only goes up"):
        c.inc(-1)
    with pytest.raises(ValueError, match="already a counter"):
        Gauge("t_api_tagged", tag_keys=("a",))
    with pytest.raises(ValueError, match="increasing positive"):
        Histogram("t_api_bad_bounds", boundaries=[1.0, 0.5])
    again = Counter("t_api_tagged", tag_keys=("a",))  # the same metric again: shared values
    again.inc(tags={"a": "1"})
    c.inc(tags={"a": "1"})
    assert _family("t_api_tagged")["samples"] == [[{"a": "1"}, 2.0]]


def test_snapshots_of_two_processes_render_as_one_valid_exposition() -> None:
    Counter("t_api_rendered", tag_keys=("k",)).inc(4, tags={"k": "v"})
    one = {"node_id": "aaa", "role": "node", "families": core_metrics.snapshot()}
    two = {"node_id": "bbb", "role": "driver", "families": core_metrics.snapshot()}
    text = render([one, two]).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    rendered = families["t_api_rendered"]
    assert rendered.type == "counter"
    assert sorted(
        (s.labels["node_id"], s.labels["role"], s.labels["k"], s.value)
        for s in rendered.samples
        if s.name == "t_api_rendered_total"
    ) == [("aaa", "node", "v", 4.0), ("bbb", "driver", "v", 4.0)]
    latency = families["runtime_actor_call_latency_seconds"]
    buckets = [s for s in latency.samples if s.name.endswith("_bucket")]
    assert {s.labels["le"] for s in buckets} >= {"0.001", "+Inf"}
    per_node = [s.value for s in buckets if s.labels["node_id"] == "aaa"]
    assert per_node == sorted(per_node)  # cumulative
