"""The compatibility table: which of Ray's documentation examples run unchanged here.

Runs every program of the corpus (``/work/shared/ray-doc-examples/<area>/*.py``, read in
place, never copied) one at a time with a timeout, on Ray 2.60 itself and through
``python -m runtime.compat``, both inside a loopback-only network namespace, and prints per
area how many run on Ray here, how many run here, and why each other one fails (the first
line of its error). ``docs/compat.md`` holds the table this printed.

Usage (from the repository root)::

    python benchmarks/compat.py --json /tmp/compat.json            # both sides, every area
    python benchmarks/compat.py --only ray --json /tmp/ray.json    # one side
    python benchmarks/compat.py --areas ray-core,tune --json ...   # some areas
    python benchmarks/compat.py --report --json /tmp/ray.json --merge /tmp/here.json

Each run keeps its results in its JSON file (``--skip-done`` keeps those already there);
``--merge`` adds another run's file to the table, so the two sides can run at different
times. Ray comes from ``--ray-python`` (a venv with ``ray[default,tune,serve,data,train]
==2.60.0``); this runtime from the interpreter running this script, with ``src/`` first on
the path. Ray runs with ``RAY_USAGE_STATS_ENABLED=0``, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
and ``include_dashboard=False`` (a wrapper sets it as the default of ``ray.init``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bytecode import compile_runtime

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path("/work/shared/ray-doc-examples")
AREAS = ["ray-core", "tune", "train", "data", "serve", "rllib"]
NAMESPACE = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]

# Runs a script on Ray with the dashboard off by default (an explicit argument wins).
RAY_WRAPPER = """
import runpy, sys
import ray
import ray._private.worker as _worker
_init = _worker.init
def init(*args, **kwargs):
    kwargs.setdefault("include_dashboard", False)
    return _init(*args, **kwargs)
ray.init = _worker.init = init
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, __import__("os").path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""

# A measurement aid (--auto-init), not a feature: how many examples would run here if the
# core started a local cluster on first use as Ray does. In the driver only, the first
# .remote(), put, get or wait calls runtime.init() when nothing is initialized.
AUTO_INIT_WRAPPER = """
import sys, runtime
from runtime.compat.__main__ import main
def auto(fn):
    def call(*args, **kwargs):
        if not runtime.is_initialized():
            runtime.init()
        return fn(*args, **kwargs)
    return call
for owner, name in ((runtime.RemoteFunction, "remote"), (runtime.ActorClass, "remote"),
                    (runtime, "put"), (runtime, "get"), (runtime, "wait")):
    setattr(owner, name, auto(getattr(owner, name)))
sys.exit(main(sys.argv[1:]))
"""

ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure|Refused))\b.*")


def first_error_line(stderr: str) -> str:
    """The line naming the exception that ended the program (the last such line), else
    the last line of its output."""
    lines = [ln.rstrip() for ln in stderr.splitlines() if ln.strip()]
    matches = [ln for ln in lines if ERROR_LINE.match(ln)]
    line = matches[-1] if matches else (lines[-1] if lines else "no output")
    return line[:240]


def run_one(
    side: str, script: Path, timeout: float, ray_python: str, auto_init: bool = False
) -> dict[str, object]:
    """Run one script on one side; returns ``{"ok", "secs", "error"}``."""
    tmp = tempfile.mkdtemp(prefix=f"compat-{side}-")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["RAY_TMPDIR"] = tmp
    env["RUNTIME_TMPDIR"] = tmp
    env["TMPDIR"] = tmp
    # Examples write under ~ (~/ray_results): each run gets its own, so neither side reads
    # what the other (or an earlier example) left there.
    env["HOME"] = tmp
    env["MPLBACKEND"] = "Agg"
    if side == "ray":
        # As in an activated venv: the programs that run the `ray` CLI find Ray's.
        env["PATH"] = os.path.dirname(ray_python) + os.pathsep + env.get("PATH", "")
        cmd = [*NAMESPACE, ray_python, "-c", RAY_WRAPPER, str(script)]
    else:
        env["PYTHONPATH"] = str(REPO / "src")
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        cmd = [*NAMESPACE, sys.executable, "-m", "runtime.compat", str(script)]
        if auto_init:
            cmd = [*NAMESPACE, sys.executable, "-c", AUTO_INIT_WRAPPER, str(script)]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=timeout)
        ok = proc.returncode == 0
        error = "" if ok else first_error_line(stderr)
        if not ok and not error:
            error = f"exit status {proc.returncode}"
    except subprocess.TimeoutExpired:
        ok, error = False, f"timeout after {timeout:.0f} s"
    finally:
        # The program's session: its cluster's processes too, if it left any behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"ok": ok, "secs": round(time.monotonic() - start, 1), "error": error}


def load(path: Path) -> dict[str, dict[str, dict[str, object]]]:
    if path.exists():
        data: dict[str, dict[str, dict[str, object]]] = json.loads(path.read_text())
        return data
    return {}


def report(results: dict[str, dict[str, dict[str, object]]]) -> str:
    """The table (markdown): per area, then each script that does not run here."""
    out = [
        "| area | examples | run on Ray 2.60 here | run here | of Ray's, run here |",
        "|---|---:|---:|---:|---:|",
    ]
    details: list[str] = []
    totals = [0, 0, 0, 0]
    for area in AREAS:
        rows = {k: v for k, v in results.items() if k.startswith(area + "/")}
        if not rows:
            continue
        on_ray = {k for k, v in rows.items() if v.get("ray", {}).get("ok")}
        here = {k for k, v in rows.items() if v.get("runtime", {}).get("ok")}
        both = on_ray & here
        figures = [len(rows), len(on_ray), len(here), len(both)]
        totals = [a + b for a, b in zip(totals, figures, strict=True)]
        pct = f" ({100 * len(both) / len(on_ray):.0f} %)" if on_ray else ""
        out.append(f"| {area} | {len(rows)} | {len(on_ray)} | {len(here)} | {len(both)}{pct} |")
        details.append(f"\n### {area}\n")
        details.append("| example | Ray 2.60 | here |")
        details.append("|---|---|---|")
        for name in sorted(rows):
            row = rows[name]
            ray = row.get("ray", {})
            ours = row.get("runtime", {})
            if ray.get("ok") and ours.get("ok"):
                continue

            def cell(r: dict[str, object]) -> str:
                if not r:
                    return "not run"
                if r.get("ok"):
                    return "runs"
                return "`" + str(r.get("error", "")).replace("|", "\\|").replace("`", "'") + "`"

            details.append(f"| {name.split('/', 1)[1]} | {cell(ray)} | {cell(ours)} |")
    pct = f" ({100 * totals[3] / totals[1]:.0f} %)" if totals[1] else ""
    out.append(f"| all | {totals[0]} | {totals[1]} | {totals[2]} | {totals[3]}{pct} |")
    reasons: dict[str, list[str]] = {}
    for name, row in sorted(results.items()):
        if row.get("ray", {}).get("ok") and "runtime" in row and not row["runtime"].get("ok"):
            reason = re.sub(r"\b[0-9a-f]{16,}\b", "<id>", str(row["runtime"].get("error", "")))
            reasons.setdefault(reason, []).append(name)
    out.append("\nWhy the examples that run on Ray stop here, most frequent first:\n")
    out.append("| examples | first line of the error | which |")
    out.append("|---:|---|---|")
    for reason, names in sorted(reasons.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        cell = reason.replace("|", "\\|").replace("`", "'")
        out.append(f"| {len(names)} | `{cell}` | {', '.join(names)} |")
    return "\n".join(out) + "\n\nEach example that does not run on both:\n" + "\n".join(details)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["ray", "runtime"], help="run one side")
    parser.add_argument("--areas", default=",".join(AREAS), help="comma-separated areas")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per example")
    parser.add_argument("--json", type=Path, default=Path("/tmp/compat.json"))
    parser.add_argument("--ray-python", default="/work/rayenv/bin/python")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--report", action="store_true", help="only print the table")
    parser.add_argument(
        "--merge", type=Path, action="append", default=[], help="more result files to show"
    )
    parser.add_argument("--skip-done", action="store_true", help="keep results already there")
    parser.add_argument(
        "--auto-init",
        action="store_true",
        help="measurement aid: emulate Ray's implicit init() here (see AUTO_INIT_WRAPPER)",
    )
    parser.add_argument(
        "--only-failed-in", type=Path, help="run only the examples that failed in this file"
    )
    parser.add_argument(
        "--only-timeouts", action="store_true", help="with --only-failed-in: only timeouts"
    )
    args = parser.parse_args()
    results = load(args.json)
    failed = None
    if args.only_failed_in is not None:
        side_run = args.only or "runtime"
        failed = {
            k
            for k, v in load(args.only_failed_in).items()
            if not v.get(side_run, {}).get("ok")
            and (not args.only_timeouts or "timeout" in str(v.get(side_run, {}).get("error")))
        }
    if not args.report:
        sides = [args.only] if args.only else ["ray", "runtime"]
        if "runtime" in sides:
            compile_runtime()  # as Ray's wheel is (see _bytecode)
        for area in args.areas.split(","):
            for script in sorted((args.corpus / area).glob("*.py")):
                key = f"{area}/{script.name}"
                if failed is not None and key not in failed:
                    continue
                for side in sides:
                    if args.skip_done and side in results.get(key, {}):
                        continue
                    res = run_one(side, script, args.timeout, args.ray_python, args.auto_init)
                    results.setdefault(key, {})[side] = res
                    args.json.write_text(json.dumps(results, indent=1, sort_keys=True))
                    status = "ok" if res["ok"] else res["error"]
                    print(f"{side:8} {key:50} {res['secs']:6}s {status}", file=sys.stderr)
    for extra in args.merge:
        for key, sides_done in load(extra).items():
            results.setdefault(key, {}).update(sides_done)
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
