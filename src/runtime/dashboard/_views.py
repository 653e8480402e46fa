"""The tables of the page, from the head's state and the last metrics sample: nodes, actors,
tasks (live, and recently finished or failed), jobs, placement groups, Serve deployments, Tune
experiments and trials, Train runs. Each row that has output carries ``logs``: the query of
its lines (``node_id=..&actor=..``, ``&task=..``, ``&who=..`` or ``job=..``), which the page
turns into a link."""

from __future__ import annotations

import glob
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ._history import History, family

if TYPE_CHECKING:
    from runtime.core.control.head import Head


def logs_query(**params: str) -> str:
    """The log view's query for these filters (empty ones left out)."""
    return urlencode({k: v for k, v in params.items() if v})


def nodes(head: Head) -> list[dict[str, Any]]:
    rows = []
    for n in head.nodes.values():
        row: dict[str, Any] = {f: getattr(n, f) for f in n.__struct_fields__ if f != "labels"}
        row["logs"] = logs_query(node_id=n.node_id)
        rows.append(row)
    return rows


def actors(head: Head) -> list[dict[str, Any]]:
    """``runtime list actors``'s rows, with restarts and a link to each actor's lines."""
    return [
        {
            **row,
            "restarts": r.num_restarts,
            "max_restarts": r.spec.max_restarts,
            "logs": logs_query(node_id=r.node_id or "", actor=row["actor_id"]),
        }
        for row, r in zip(head._list("actors"), head.directory.actors.values(), strict=True)
    ]


def tasks(
    live: list[dict[str, Any]], history: History, recent: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Live tasks and actor calls, then the ones that ended lately (newest first): the
    failures the members count (with their errors) and the calls in their timeline rings
    (``recent``: the members' ``timeline`` answers)."""
    rows = [
        {**row, "error": "", "logs": _task_logs(row.get("node_id", ""), row["task_id"])}
        for row in live
    ]
    failed: list[dict[str, Any]] = []
    for snap in history.latest:
        for when, kind, name, task_id, error in snap.get("failures", []):
            failed.append(
                {
                    "task_id": task_id,
                    "name": name,
                    "state": "FAILED",
                    "kind": kind,
                    "node_id": snap.get("node_id", ""),
                    "time": when,
                    "error": error,
                    "logs": _task_logs(snap.get("node_id", ""), task_id),
                }
            )
    known = {r["task_id"] for r in failed}
    for a in recent:
        for _rcv, _fetch, started, ended, label, _tid, _loop, bad, task_id in a["events"]:
            if task_id in known:  # a failure listed above, with its error
                continue
            failed.append(
                {
                    "task_id": task_id,
                    "name": label,
                    "state": "FAILED" if bad else "FINISHED",
                    "kind": "",
                    "node_id": a["node_id"],
                    "time": (ended + a["offset_ns"]) / 1e9,
                    "duration_s": round((ended - started) / 1e9, 6),
                    "error": "",
                    "logs": _task_logs(a["node_id"], task_id),
                }
            )
    failed.sort(key=lambda r: -float(r["time"]))
    return rows + failed[:100]


def _task_logs(node_id: str, task_id: str) -> str:
    """The lines printed while one task or actor call ran (its node's, when known)."""
    return logs_query(node_id=node_id, task=task_id) if task_id else logs_query(node_id=node_id)


def jobs(state_dir: str | None) -> list[dict[str, Any]]:
    """The jobs the head's job manager recorded in its state directory."""
    if not state_dir:
        return []
    rows = []
    for path in glob.glob(os.path.join(state_dir, "jobs", "*", "job.json")):
        try:
            with open(path) as f:
                info = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and isinstance(info.get("job_id"), str):
            info.pop("log_path", None)
            info["logs"] = logs_query(job=info["job_id"])
            rows.append(info)
    return sorted(rows, key=lambda r: -float(r.get("submit_time") or 0))


def _sum_by(
    snaps: list[dict[str, Any]], name: str, keys: tuple[str, ...]
) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for snap in snaps:
        for sample in family(snap, name):
            tags, value = sample[0], sample[1]
            if isinstance(value, list):  # a histogram: its count
                value = sum(sample[2])
            out[tuple(tags.get(k, "") for k in keys)] += float(value)
    return out


def serve(history: History) -> list[dict[str, Any]]:
    """One row per Serve deployment: replicas by state, requests, errors, mean latency."""
    snaps = history.latest
    replicas = _sum_by(snaps, "runtime_serve_replicas", ("app", "deployment", "state"))
    requests = _sum_by(snaps, "runtime_serve_requests", ("deployment",))
    errors = _sum_by(snaps, "runtime_serve_request_errors", ("deployment",))
    latency_sum: dict[str, float] = defaultdict(float)
    latency_n: dict[str, float] = defaultdict(float)
    for snap in snaps:
        for tags, _bounds, counts, total in family(snap, "runtime_serve_request_latency_seconds"):
            latency_sum[tags.get("deployment", "")] += float(total)
            latency_n[tags.get("deployment", "")] += float(sum(counts))
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for (app, deployment, state), n in replicas.items():
        row = rows.setdefault(
            (app, deployment),
            {
                "app": app,
                "deployment": deployment,
                "replicas": {},
                "logs": logs_query(who=f"SERVE_REPLICA::{app}#{deployment}#*"),
            },
        )
        if n:
            row["replicas"][state] = int(n)
    for row in rows.values():
        d = row["deployment"]
        row["requests"] = int(requests.get((d,), 0))
        row["errors"] = int(errors.get((d,), 0))
        row["mean_latency_ms"] = (
            round(1000 * latency_sum[d] / latency_n[d], 2) if latency_n[d] else None
        )
    return sorted(rows.values(), key=lambda r: (r["app"], r["deployment"]))


def tune(history: History) -> dict[str, Any]:
    """Tune experiments (trials by state) and their trials (state and last results)."""
    snaps = history.latest
    by_state = _sum_by(snaps, "runtime_tune_trials", ("experiment", "state"))
    experiments: dict[str, dict[str, Any]] = {}
    for (name, state), n in by_state.items():
        row = experiments.setdefault(name, {"experiment": name, "trials": {}, "metrics": []})
        if n:
            row["trials"][state] = int(n)
    trials: dict[tuple[str, str], dict[str, Any]] = {}
    for snap in snaps:
        for tags, value in family(snap, "runtime_tune_trial_state"):
            if value:
                key = (tags.get("experiment", ""), tags.get("trial_id", ""))
                trials.setdefault(key, {"experiment": key[0], "trial_id": key[1], "results": {}})
                trials[key]["state"] = tags.get("state", "")
        for tags, value in family(snap, "runtime_tune_trial_result"):
            key = (tags.get("experiment", ""), tags.get("trial_id", ""))
            row = trials.setdefault(key, {"experiment": key[0], "trial_id": key[1], "results": {}})
            row["results"][tags.get("metric", "")] = value
            exp = experiments.setdefault(
                key[0], {"experiment": key[0], "trials": {}, "metrics": []}
            )
            if tags.get("metric", "") not in exp["metrics"]:
                exp["metrics"].append(tags.get("metric", ""))
    for row in trials.values():
        row["logs"] = logs_query(who="TrialActor")  # trial actors are unnamed, and reused
    return {
        "experiments": sorted(experiments.values(), key=lambda r: r["experiment"]),
        "trials": sorted(trials.values(), key=lambda r: (r["experiment"], r["trial_id"])),
    }


def train(history: History) -> list[dict[str, Any]]:
    """Train runs: workers, reports so far and reports per second lately."""
    snaps = history.latest
    workers = _sum_by(snaps, "runtime_train_workers", ("run",))
    reports = _sum_by(snaps, "runtime_train_reports", ("run",))
    runs = sorted({k[0] for k in workers} | {k[0] for k in reports})
    return [
        {
            "run": run,
            "workers": int(workers.get((run,), 0)),
            "reports": int(reports.get((run,), 0)),
            "reports_per_s": round(history.report_rate(run), 3),
            "logs": logs_query(who="RankActor"),
        }
        for run in runs
    ]
