"""``python -m runtime logs | timeline | stack | memory``: look into a running cluster.

The commands connect like ``status`` does (``--address``, ``--token-file``), as a driver that
asks for no forwarded output, and print what :mod:`runtime.core.api.observe` gathers from
every node (:mod:`runtime.core.api.observe`, ``.timeline``, ``.memory``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..api import memory, observe
from ..api import timeline as _timeline

#: How often ``logs --follow`` asks the nodes for new lines, in seconds.
FOLLOW_EVERY_S = 0.5
#: Lines ``logs`` shows by default (as ``ray logs``): the last ones kept.
DEFAULT_TAIL = 1000
COMMANDS = ("logs", "timeline", "stack", "memory")


def add_parsers(sub: Any) -> None:
    # The global options are accepted after the command too (`logs --json`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", default=argparse.SUPPRESS, help="HOST:PORT of the head")
    common.add_argument("--token-file", default=argparse.SUPPRESS, help="the cluster token file")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON")
    lg = sub.add_parser(
        "logs",
        parents=[common],
        help="what tasks and actors printed, kept on each node (by node, actor, task, job)",
        description="Print the recent output lines each node keeps, tagged with the actor or "
        "task that printed them, oldest first. Filters combine.",
    )
    lg.add_argument("--node", help="a node id (or its first characters)")
    lg.add_argument("--actor", help="an actor's id (prefix), name, or class name")
    lg.add_argument("--task", help="a task's id (prefix), function name, or method name")
    lg.add_argument("--job", help="a submitted job's id: its driver's output (`job logs`)")
    lg.add_argument(
        "--tail", type=int, default=None, help=f"the last N lines (default {DEFAULT_TAIL})"
    )
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    tl = sub.add_parser(
        "timeline",
        parents=[common],
        help="write the recent tasks and actor calls as a Chrome trace (Perfetto)",
        description="Write the recent tasks and actor calls of every node as Chrome trace "
        "events: open the file in https://ui.perfetto.dev or chrome://tracing.",
    )
    tl.add_argument("--out", help="the file to write (default: runtime-timeline-<time>.json)")
    st = sub.add_parser(
        "stack",
        parents=[common],
        help="the stack of every thread and asyncio task of every node (a hung job)",
    )
    st.add_argument("--node", help="a node id (or its first characters)")
    st.add_argument("--all", action="store_true", help="idle pool threads too")
    mem = sub.add_parser(
        "memory",
        parents=[common],
        help="what pins memory: objects by owner or call site (as `ray memory`)",
    )
    mem.add_argument("--group-by", choices=["owner", "call_site", "node"], default="owner")
    mem.add_argument("--units", choices=["B", "KB", "MB", "GB"], default="B")
    mem.add_argument(
        "--stats-only", action="store_true", help="the groups and the stores, not each object"
    )


def run(args: argparse.Namespace, address: str) -> int:
    """Run one of :data:`COMMANDS` on the connected cluster; the exit status."""
    if args.command == "logs":
        if args.job:
            return _job_logs(args, address)
        return _logs(args)
    if args.command == "timeline":
        out = args.out or time.strftime("runtime-timeline-%Y%m%d-%H%M%S.json")
        _timeline.timeline(out)
        print(f"wrote {out}: open it in https://ui.perfetto.dev or chrome://tracing")
        return 0
    if args.command == "stack":
        stacks = observe.get_stacks(args.node)
        if not stacks:
            print("no node answered", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(stacks, indent=2))
        else:
            print(observe.format_stacks(stacks, all_threads=args.all))
        _say_who_did_not_answer(stacks, args.node)
        return 0
    summary = memory.get_memory(args.group_by)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(memory.format_memory(summary, args.units, objects=not args.stats_only))
    return 0


def _say_who_did_not_answer(answers: list[dict[str, Any]], node: str | None) -> None:
    """A member whose loop is blocked cannot answer: name it (its stack is the question)."""
    from ..api.blocking import current_worker
    from ..api.state import list_state

    answered = {a["node_id"] for a in answers}
    me = current_worker().peer_id
    silent = [
        n
        for n in list_state("nodes")
        if n["alive"] and n["node_id"] not in answered and n["node_id"] != me
        and (not node or n["node_id"].startswith(node))
    ]  # fmt: skip
    for n in silent:
        what = "driver" if n["is_driver"] else "node"
        print(
            f"no answer from {what} {n['node_id']} pid={n['pid']} within "
            f"{observe.answer_timeout():g} s: its event loop may be blocked",
            file=sys.stderr,
        )


def _logs(args: argparse.Namespace) -> int:
    tail = DEFAULT_TAIL if args.tail is None else args.tail
    if tail < 0:
        print("error: --tail must be 0 or more", file=sys.stderr)
        return 2
    filters = {"node": args.node, "actor": args.actor, "task": args.task}
    lines, cursor = observe.get_logs(tail=tail, **filters)
    _show(lines, args.json)
    if not args.follow:
        return 0
    try:
        while True:
            time.sleep(FOLLOW_EVERY_S)
            before = dict(cursor)
            lines, cursor = observe.get_logs(cursor=cursor, **filters)
            for node_id in before.keys() - cursor.keys():
                cursor[node_id] = before[node_id]  # a node that did not answer this time
            _show(lines, args.json)
    except KeyboardInterrupt:
        return 130


def _show(lines: list[dict[str, Any]], as_json: bool) -> None:
    for line in lines:
        text = json.dumps(line) if as_json else observe.format_line(line)
        stream = sys.stderr if line["stream"] == "stderr" and not as_json else sys.stdout
        print(text, file=stream)
    sys.stdout.flush()
    sys.stderr.flush()


def _job_logs(args: argparse.Namespace, address: str) -> int:
    """The output of a job submitted with ``job submit`` (its driver's stdout and stderr)."""
    from . import jobs as _jobs

    manager = _jobs.get_manager(address)

    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    try:
        if args.follow:
            _jobs.follow(manager, args.job, write)
            return 0
        chunks, offset = [], 0
        while True:
            data, offset, _ = _jobs.tail(manager, args.job, offset, 0.0)
            if not data:
                break
            chunks.append(data)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    text = b"".join(chunks)
    if args.tail is not None:
        text = b"".join(text.splitlines(keepends=True)[-args.tail :]) if args.tail else b""
    write(text)
    return 0


__all__ = ["COMMANDS", "add_parsers", "run"]
