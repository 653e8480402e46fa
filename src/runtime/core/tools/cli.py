"""``python -m runtime``: look at a running cluster (status, list, logs, timeline, stack,
memory), stop it, or run jobs on it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..api import session as _api
from ..api import state as _state
from ..scheduling.scheduler import RESERVED_ROLES, ROLE_LABEL
from . import observe_cli


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m runtime", description="Inspect or stop a cluster.")
    ap.add_argument(
        "--address", default="auto", help="HOST:PORT of the head (default: the local one)"
    )
    ap.add_argument("--token-file", help="file holding the cluster token")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="nodes, resources and actors at a glance")
    ls = sub.add_parser(
        "list", help="list nodes, actors, tasks (live ones), or objects (what pins memory)"
    )
    ls.add_argument("what", choices=["nodes", "actors", "tasks", "objects"])
    sub.add_parser("stop", help="stop every node of the cluster")
    observe_cli.add_parsers(sub)
    _add_job_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token = None
    if args.token_file:
        from ..process.launcher import read_token_file

        try:
            token = read_token_file(args.token_file)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.command == "job":
        return _job_main(args, token)
    try:
        # Only `status`/`list`/`stop` ever ran with forwarded output; the views do not want it.
        quiet = args.command in observe_cli.COMMANDS
        info = _api.init(address=args.address, token=token, log_to_driver=not quiet)
    except (ConnectionError, OSError, ValueError) as exc:
        if args.command == "stop":  # stopping what is not running is done already
            print(f"no cluster to stop: {exc}")
            return 0
        print(f"error: cannot reach the cluster: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command in observe_cli.COMMANDS:
            return observe_cli.run(args, info["address"])
        if args.command == "stop":
            _state.stop_cluster()
            print(f"stopping the cluster at {info['address']}")
            return 0
        if args.command == "list":
            rows = _state.list_state(args.what)
            if args.what == "nodes":
                rows = [r for r in rows if r["node_id"] != info["node_id"]]
            _print(rows, args.json)
            return 0
        nodes = [n for n in _state.list_state("nodes") if n["node_id"] != info["node_id"]]
        actors = _state.list_state("actors")
        status = _status(info["address"], nodes, actors)
        print(json.dumps(status, indent=2) if args.json else _format_status(status))
        return 0
    finally:
        _api.shutdown()


def _status(
    address: str, nodes: list[dict[str, Any]], actors: list[dict[str, Any]]
) -> dict[str, Any]:
    """Members, resources (per host and in all, with each host's processes and what each
    holds) and actor states at a glance (also the dashboard's summary). The node processes
    of a host share its resources: counted once."""
    live = [n for n in nodes if n.get("alive", True)]
    hosts: dict[str, dict[str, Any]] = {}
    heads, kept = [], []
    for n in live:
        if n["is_driver"]:
            continue
        labels = n.get("labels") or {}
        role = labels.get(ROLE_LABEL, "")
        if role == "head":
            heads.append({"node_id": n["node_id"], "pid": n["pid"],
                          "address": n["address"].rpartition(":")[0]})  # fmt: skip
            continue
        if role in RESERVED_ROLES:  # kept for one actor or env: shown with its host below
            kept.append((n, role))
            continue
        key = n.get("host_id") or n["node_id"]
        host = hosts.setdefault(key, {"host_id": key, "address": n["address"].rpartition(":")[0],
                                      "processes": 0, "resources": {}, "members": []})  # fmt: skip
        if n["resources"] and not host["resources"]:
            host["resources"] = {
                k: {"total": v, "available": n["available"].get(k, 0.0)}
                for k, v in n["resources"].items()
            }
        host["processes"] += 1
        holds = {k: v for k, v in n.get("used", {}).items() if v}
        host["members"].append({"node_id": n["node_id"], "pid": n["pid"], "role": role,
                                "holds": holds})  # fmt: skip
    for n, role in kept:  # its resources are its parent's, on the host at its address
        at = n["address"].rpartition(":")[0]
        near: dict[str, Any] | None = next((h for h in hosts.values() if h["address"] == at), None)
        if near is not None:
            holds = {k: v for k, v in n.get("used", {}).items() if v}
            near["members"].append({"node_id": n["node_id"], "pid": n["pid"], "role": role,
                                    "holds": holds})  # fmt: skip
    total: dict[str, float] = {}
    free: dict[str, float] = {}
    for host in hosts.values():
        for k, r in host["resources"].items():
            total[k] = total.get(k, 0.0) + r["total"]
            free[k] = free.get(k, 0.0) + r["available"]
    states: dict[str, int] = {}
    for a in actors:
        states[a["state"]] = states.get(a["state"], 0) + 1
    return {
        "address": address,
        "nodes": sum(1 for n in live if not n["is_driver"]),
        "drivers": sum(1 for n in live if n["is_driver"]),
        "resources": {
            k: {"total": v, "available": free.get(k, 0.0)} for k, v in sorted(total.items())
        },
        "hosts": [h for h in hosts.values() if h["resources"]],
        "heads": heads,
        "actors": states,
    }


def _amount(name: str, v: float) -> str:
    if name in ("memory", "object_store_memory"):
        return f"{v / 2**30:.1f} GiB"
    return f"{v:g}"


def _format_status(s: dict[str, Any]) -> str:
    lines = [f"cluster at {s['address']}: {s['nodes']} node(s), {s['drivers']} driver(s)"]
    for name, r in s["resources"].items():
        lines.append(
            f"  {name}: {_amount(name, r['available'])} of {_amount(name, r['total'])} available"
        )
    for h in s.get("heads", []):
        lines.append(f"head {h['address']} pid {h['pid']}: the control plane (no user code)")
    for h in s.get("hosts", []):
        use = ", ".join(
            f"{name} {_amount(name, r['total'] - r['available'])}/{_amount(name, r['total'])}"
            for name, r in sorted(h["resources"].items())
        )
        lines.append(f"host {h['address']} ({h['processes']} process(es)): {use} in use")
        for m in h.get("members", []):
            role = f" ({m['role']})" if m["role"] else ""
            holds = ", ".join(f"{k} {_amount(k, v)}" for k, v in sorted(m["holds"].items()))
            lines.append(f"  process {m['node_id'][:8]} pid {m['pid']}{role}: {holds or 'idle'}")
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


# --- python -m runtime job ... ------------------------------------------------------------------


def _add_job_parser(sub: Any) -> None:
    # --address/--token-file are accepted after `job ...` too (as `ray job submit --address`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", default=argparse.SUPPRESS, help="HOST:PORT of the head")
    common.add_argument("--token-file", default=argparse.SUPPRESS, help="the cluster token file")
    job = sub.add_parser("job", help="run driver scripts on the cluster (submit, status, ...)")
    jobs = job.add_subparsers(dest="job_command", required=True)
    sp = jobs.add_parser(
        "submit",
        parents=[common],
        help="run a command on the head node as a job, streaming its output",
        description="Run CMD on the head node; its runtime.init() joins this cluster. One "
        "argument is a shell command line as is; several are quoted and joined.",
    )
    sp.add_argument("--working-dir", help="directory shipped to the job (its cwd and sys.path)")
    sp.add_argument("--job-id", help="the job's id (default: job_<random hex>)")
    sp.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="env var")
    sp.add_argument("--no-wait", action="store_true", help="return once the job has started")
    sp.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    for name, text in (
        ("status", "the job's status, exit code and times"),
        ("stop", "stop the job (SIGTERM, then SIGKILL after a grace period)"),
    ):
        jobs.add_parser(name, parents=[common], help=text).add_argument("job_id")
    lp = jobs.add_parser("logs", parents=[common], help="print the job's output")
    lp.add_argument("job_id")
    lp.add_argument("--follow", "-f", action="store_true", help="until the job ends")
    jobs.add_parser("list", parents=[common], help="every job of the cluster")


def _job_main(args: argparse.Namespace, token: bytes | None) -> int:
    """Run one ``job`` sub-command; its exit status (``submit``: the job's, when waited for)."""
    from ..common.exceptions import RuntimeBaseError
    from . import jobs as _jobs

    if "token_file" in args and args.token_file and token is None:
        from ..process.launcher import read_token_file

        token = read_token_file(args.token_file)
    entrypoint = ""
    env_vars: dict[str, str] = {}
    package: tuple[str, bytes] | None = None
    if args.job_command == "submit":  # bad input is refused before connecting
        argv = list(args.entrypoint)
        if argv[:1] == ["--"]:
            argv = argv[1:]
        try:
            entrypoint = _jobs.entrypoint_from_argv(argv)
            for item in args.env:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise ValueError(f"--env {item!r} must be KEY=VALUE")
                env_vars[key] = value
            if args.job_id is not None:
                _jobs._check_job_id(args.job_id)
            if args.working_dir is not None:
                package = _jobs.package_dir(args.working_dir)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        info = _api.init(address=args.address, token=token, log_to_driver=False)
    except PermissionError as exc:  # AuthenticationError: the token does not match
        print(
            f"error: authentication failed: {exc}; pass the cluster's token with --token-file "
            "(or set RUNTIME_AUTH_TOKEN / RUNTIME_AUTH_TOKEN_FILE)",
            file=sys.stderr,
        )
        return 2
    except (ConnectionError, OSError, ValueError) as exc:
        print(f"error: cannot reach the cluster: {exc}", file=sys.stderr)
        return 2
    try:
        manager = _jobs.get_manager(info["address"])
        if args.job_command == "submit":
            job_id = _jobs.submit(
                manager,
                info["address"],
                entrypoint,
                package=package,
                job_id=args.job_id,
                env_vars=env_vars,
            )
            print(f"job {job_id} submitted: {entrypoint}", file=sys.stderr, flush=True)
            if args.no_wait:
                print(job_id)
                return 0
            try:
                final = _jobs.follow(manager, job_id, _write_out)
            except KeyboardInterrupt:
                print(
                    f"\nstopped following; job {job_id} runs on "
                    f"(stop it with `python -m runtime job stop {job_id}`)",
                    file=sys.stderr,
                )
                return 130
            print(f"job {job_id} {_describe(final)}", file=sys.stderr)
            return _job_exit_code(final)
        if args.job_command == "list":
            rows = [_job_row(j) for j in _jobs.list_jobs(manager)]
            _print(rows, args.json)
            return 0
        if args.job_command == "status":
            job = _jobs.status(manager, args.job_id)
            if args.json:
                print(json.dumps(_job_row(job, full=True), indent=2))
            else:
                print(f"job {job.job_id} {_describe(job)}")
                for key, value in _job_row(job, full=True).items():
                    print(f"  {key}: {'-' if value is None else value}")
            return 0
        if args.job_command == "logs":
            if args.follow:
                _jobs.follow(manager, args.job_id, _write_out)
                return 0
            offset = 0
            while True:
                data, offset, _ = _jobs.tail(manager, args.job_id, offset, 0.0)
                if not data:
                    return 0
                _write_out(data)
        # stop: wait (bounded) until the job has exited, as `ray job stop` does
        if not _jobs.stop(manager, args.job_id):
            print(f"job {args.job_id} had already ended")
            return 0
        job = _jobs.wait(manager, args.job_id, _jobs.STOP_GRACE_S + 10.0)
        print(f"job {args.job_id} {_describe(job)}")
        return 0 if job.status in _jobs.TERMINAL else 1
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeBaseError as exc:  # e.g. the job manager's node died mid-call
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # `job logs --follow` interrupted: the job runs on
        return 130
    finally:
        _api.shutdown()


def _write_out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _describe(job: Any) -> str:
    text = str(job.status)
    if job.exit_code is not None and job.status != "SUCCEEDED":
        text += f" (exit code {job.exit_code})"
    return text + (f": {job.message}" if job.message else "")


def _job_exit_code(job: Any) -> int:
    if job.status == "SUCCEEDED":
        return 0
    code = job.exit_code
    return code if isinstance(code, int) and 0 < code < 256 else 1


def _job_row(job: Any, full: bool = False) -> dict[str, Any]:
    def when(t: float | None) -> str | None:
        return None if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    row: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status,
        "exit_code": job.exit_code,
        "start_time": when(job.start_time),
        "end_time": when(job.end_time),
        "entrypoint": job.entrypoint,
    }
    if full:
        row.update(
            message=job.message or None,
            pid=job.pid,
            working_dir_hash=job.working_dir_hash,
            log_path=job.log_path,
        )
    return row
