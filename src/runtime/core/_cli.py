"""``python -m runtime``: look at a running cluster (status, list) or stop it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import _api


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m runtime", description="Inspect or stop a cluster.")
    ap.add_argument(
        "--address", default="auto", help="HOST:PORT of the head (default: the local one)"
    )
    ap.add_argument("--token-file", help="file holding the cluster token")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="nodes, resources and actors at a glance")
    ls = sub.add_parser("list", help="list nodes, actors, or objects (what pins memory)")
    ls.add_argument("what", choices=["nodes", "actors", "objects"])
    sub.add_parser("stop", help="stop every node of the cluster")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token = None
    if args.token_file:
        from ._launcher import read_token_file

        token = read_token_file(args.token_file)
    try:
        info = _api.init(address=args.address, token=token)
    except (ConnectionError, OSError, ValueError) as exc:
        if args.command == "stop":  # stopping what is not running is done already
            print(f"no cluster to stop: {exc}")
            return 0
        print(f"error: cannot reach the cluster: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "stop":
            _api.stop_cluster()
            print(f"stopping the cluster at {info['address']}")
            return 0
        if args.command == "list":
            rows = _api.list_state(args.what)
            if args.what == "nodes":
                rows = [r for r in rows if r["node_id"] != info["node_id"]]
            _print(rows, args.json)
            return 0
        nodes = [n for n in _api.list_state("nodes") if n["node_id"] != info["node_id"]]
        actors = _api.list_state("actors")
        status = _status(info["address"], nodes, actors)
        print(json.dumps(status, indent=2) if args.json else _format_status(status))
        return 0
    finally:
        _api.shutdown()


def _status(
    address: str, nodes: list[dict[str, Any]], actors: list[dict[str, Any]]
) -> dict[str, Any]:
    total: dict[str, float] = {}
    free: dict[str, float] = {}
    for n in nodes:
        if n["is_driver"]:
            continue
        for k, v in n["resources"].items():
            total[k] = total.get(k, 0.0) + v
        for k, v in n["available"].items():
            free[k] = free.get(k, 0.0) + v
    states: dict[str, int] = {}
    for a in actors:
        states[a["state"]] = states.get(a["state"], 0) + 1
    return {
        "address": address,
        "nodes": sum(1 for n in nodes if not n["is_driver"]),
        "drivers": sum(1 for n in nodes if n["is_driver"]),
        "resources": {
            k: {"total": v, "available": free.get(k, 0.0)} for k, v in sorted(total.items())
        },
        "actors": states,
    }


def _format_status(s: dict[str, Any]) -> str:
    lines = [f"cluster at {s['address']}: {s['nodes']} node(s), {s['drivers']} driver(s)"]
    for name, r in s["resources"].items():
        lines.append(f"  {name}: {r['available']:g} of {r['total']:g} available")
    actors = ", ".join(f"{n} {state.lower()}" for state, n in sorted(s["actors"].items())) or "none"
    lines.append(f"actors: {actors}")
    return "\n".join(lines)


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("(none)")
        return
    keys = [k for k in rows[0] if k not in ("labels", "path")]
    cells = [[_cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.upper().ljust(w) for k, w in zip(keys, widths, strict=True)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def _cell(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    if isinstance(v, dict):
        return (
            ",".join(f"{k}={x:g}" if isinstance(x, float) else f"{k}={x}" for k, x in v.items())
            or "-"
        )
    return "-" if v is None else str(v)
