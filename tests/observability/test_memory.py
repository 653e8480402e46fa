"""``python -m runtime memory``: what pins memory, grouped by owner and by call site, as
``ray memory`` shows it."""

from __future__ import annotations

import json

import numpy as np
import pytest

import runtime
from runtime.core.objects import sites

from .conftest import run_cli

pytestmark = pytest.mark.timeout(90)


@runtime.remote
def put_inside_a_task(n: int) -> list[runtime.ObjectRef]:
    return [runtime.put(np.ones(n, dtype=np.uint8))]  # owned by the node that ran it


@runtime.remote
def hold(refs: list[runtime.ObjectRef]) -> int:
    return len(refs)


def test_objects_are_grouped_by_owner_and_call_site_with_their_size(cluster, monkeypatch):
    monkeypatch.setattr(sites, "RECORD", True)  # as RUNTIME_RECORD_REF_CREATION_SITES=1 does
    big = runtime.put(np.zeros(2_000_000, dtype=np.uint8))  # in the store
    small = runtime.put("a small value")  # inline in the owner
    result = hold.remote([big])
    runtime.get(result)
    (inner,) = runtime.get(put_inside_a_task.remote(500_000))
    me = runtime.get_runtime_context().node_id

    summary = json.loads(run_cli("--json", "memory").stdout)
    rows = {r["object_id"]: r for r in summary["objects"]}
    b, s = rows[big.hex()], rows[small.hex()]
    assert b["owner"] == me and b["size"] >= 2_000_000 and b["where"] in ("memory", "shm")
    assert s["where"] == "inline" and "LOCAL_REFERENCE" in s["reference_type"]
    assert b["call_site"].startswith("(put) ") and __file__ in b["call_site"]
    assert b["call_site"].endswith(
        ":test_objects_are_grouped_by_owner_and_call_site_with_their_size"
    )
    i = rows[inner.hex()]
    assert i["owner"] != me and i["size"] >= 500_000 and "BORROWED" in i["reference_type"]
    assert i["call_site"] == "(disabled)"  # the node that made it does not record sites
    (mine,) = [g for g in summary["groups"] if g["group"].startswith(f"driver {me[:8]}")]
    assert mine["objects"] >= 3 and mine["bytes"] >= 2_000_000
    assert summary["total_bytes"] >= 2_500_000
    assert any(st["node_id"] == me and st["used"] >= 2_000_000 for st in summary["stores"])

    by_site = json.loads(run_cli("memory", "--group-by", "call_site", "--json").stdout)
    groups = {g["group"]: g for g in by_site["groups"]}
    assert groups[b["call_site"]]["bytes"] >= 2_000_000

    text = run_cli("memory", "--units", "MB").stdout
    assert f"--- driver {me[:8]}" in text and big.hex() in text and "1.91 MB" in text
    assert "object stores:" in text
    stats = run_cli("memory", "--stats-only").stdout
    assert f"--- driver {me[:8]}" in stats and big.hex() not in stats
    del big, small, inner


def test_a_bad_group_is_refused(cluster):
    import subprocess

    from .conftest import cli_argv

    out = subprocess.run(
        cli_argv("memory", "--group-by", "color"),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "invalid choice" in out.stderr
