"""Checking the options of ``@remote`` and ``.options()``: the names each kind accepts,
scheduling strategies, ``num_returns``, the streaming window, concurrency groups.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..common.context import current_task
from ..scheduling.labels import check_label_selector
from ..scheduling.scheduler import check_amount, check_gpus
from ..submission.streaming import DEFAULT_WINDOW
from ..wire import protocol as p

TASK_OPTIONS = frozenset(
    {
        "num_cpus",
        "num_gpus",
        "resources",
        "num_returns",
        "max_retries",
        "retry_exceptions",
        "scheduling_strategy",
        "name",
        "memory",
        "runtime_env",
        "label_selector",
        "_generator_backpressure_num_objects",
    }
)
ACTOR_OPTIONS = frozenset(
    {
        "num_cpus",
        "num_gpus",
        "resources",
        "name",
        "namespace",
        "lifetime",
        "get_if_exists",
        "max_restarts",
        "max_task_retries",
        "max_concurrency",
        "max_pending_calls",
        "scheduling_strategy",
        "memory",
        "runtime_env",
        "label_selector",
        "concurrency_groups",
        "dedicated_process",
    }
)


def at_least(options: dict[str, Any], name: str, low: int) -> int:
    value = options.get(name, 0)
    if not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low} (-1: no limit), got {value!r}")
    return value


#: The longest actor name or namespace accepted (names travel to the head and sit in its tables).
MAX_NAME_LENGTH = 1024
#: Integer options and the lowest value each accepts (-1 means "no limit" where allowed).
_INT_FLOORS = {
    "max_retries": -1,
    "max_restarts": -1,
    "max_task_retries": -1,
    "max_pending_calls": -1,
    "max_concurrency": 1,
}


def check_options(options: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    """Refuse unknown option names and bad values (NaN, infinite or negative amounts,
    out-of-range counts, absurd names) at ``@remote``/``.options()`` time."""
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown option(s) for {what}: {', '.join(sorted(unknown))}")
    check_values(options)


def check_values(options: dict[str, Any]) -> None:
    for key in ("num_cpus", "num_gpus", "memory"):
        value = options.get(key)
        if value is not None:
            check_amount(key, value)
    check_gpus(options.get("num_gpus") or 0.0)
    if options.get("label_selector") is not None:
        check_label_selector(options["label_selector"])
    resources = options.get("resources")
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError(f"resources must be a dict of name to amount, got {resources!r:.100}")
        for name, amount in resources.items():
            if not isinstance(name, str) or not name or len(name) > 256:
                raise ValueError(f"a resource name must be a non-empty str, got {name!r:.100}")
            check_amount(f"resource {name!r}", amount)
    for key, low in _INT_FLOORS.items():
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{key} must be an int, got {value!r:.100}")
        if value < low:
            no_limit = " (-1: no limit)" if low == -1 else ""
            raise ValueError(f"{key} must be >= {low}{no_limit}, got {value}")
    for key in ("name", "namespace"):
        value = options.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"{key} must be a str, got {type(value).__name__}")
        if not value or len(value) > MAX_NAME_LENGTH:
            raise ValueError(
                f"{key} must be a non-empty str of at most {MAX_NAME_LENGTH} characters, "
                f"got {len(value)} characters"
            )


def strategy_option(strategy: Any, label_selector: Any = None) -> Any:
    """Scheduling strategies travel as small lists the head understands; a label selector
    (Ray's ``label_selector``) as ``["labels", selector, spread]``, with the DEFAULT or the
    SPREAD strategy."""
    if label_selector:
        selector = check_label_selector(label_selector)
        if strategy is None or strategy in ("DEFAULT", "SPREAD"):
            return ["labels", selector, strategy == "SPREAD"]
        raise ValueError(
            "label_selector works with the DEFAULT and SPREAD scheduling strategies; give a "
            f"placement group or node affinity without it (got {strategy!r:.100})"
        )
    if strategy is None or strategy == "DEFAULT":
        return None
    to_wire = getattr(strategy, "_to_wire", None)
    if to_wire is not None:
        return to_wire()
    if strategy == "SPREAD":
        return ["spread"]
    raise ValueError(f"unknown scheduling_strategy {strategy!r}")


def dedicated_option(value: Any) -> bool | list[str]:
    """``dedicated_process``: the actor runs in a node process of its own (True), or in one
    forked from a warm process that has imported these modules (a list of module names)."""
    if isinstance(value, list | tuple) and all(isinstance(m, str) and m for m in value):
        return list(value) or True
    if not isinstance(value, bool):
        raise TypeError(
            f"dedicated_process must be True, False or a list of module names, got {value!r:.100}"
        )
    return value


def may_be_captured(options: dict[str, Any]) -> bool:
    """Whether a submission with these options goes where its submitter's placement group
    sends its children: only one with no strategy (or ``"DEFAULT"``) and no label selector;
    ``PlacementGroupSchedulingStrategy(placement_group=None)`` says "not in any group"."""
    return options.get("scheduling_strategy") in (None, "DEFAULT") and not options.get(
        "label_selector"
    )


def captured_bundle() -> tuple[bytes, int] | None:
    """(group, -1: any bundle) when the calling task runs in a placement group that
    captures its children (Ray's ``placement_group_capture_child_tasks``), else None."""
    ctx = current_task.get()
    if ctx is None or ctx.capture is None:
        return None
    return (ctx.capture, -1)


def num_returns_option(n: Any) -> int:
    """``num_returns`` as sent: an int >= 0, or STREAMING for ``"streaming"``."""
    if n in ("streaming", "dynamic"):
        return p.STREAMING
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"num_returns must be an int >= 0 or 'streaming', got {n!r}")
    return n


def default_num_returns(fn: Any) -> int:
    """Ray's default ``num_returns``: what ``@runtime.method`` set, else a generator function
    (sync or async) streams its items (an ObjectRefGenerator), anything else returns one."""
    explicit = getattr(fn, "__runtime_num_returns__", None)
    if explicit is not None:
        return int(explicit)
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        return p.STREAMING
    return 1


def window_option(options: dict[str, Any]) -> int:
    n = options.get("_generator_backpressure_num_objects")
    if n is None or n == -1:
        return DEFAULT_WINDOW if n is None else 1 << 30
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"_generator_backpressure_num_objects must be an int >= 1, got {n!r}")
    return n


def concurrency_groups(cls: type, groups: Any) -> dict[str, int]:
    """Check ``concurrency_groups`` against the methods that name a group."""
    out: dict[str, int] = {}
    if groups is not None:
        if not isinstance(groups, dict):
            raise ValueError("concurrency_groups must be a dict of group name to max concurrency")
        for name, limit in groups.items():
            if not isinstance(name, str) or not isinstance(limit, int) or limit < 1:
                raise ValueError(
                    f"concurrency group {name!r} needs a str name and an int limit >= 1, "
                    f"got {limit!r}"
                )
            out[name] = limit
    for attr, member in inspect.getmembers(cls, predicate=inspect.isfunction):
        group = getattr(member, "__runtime_concurrency_group__", None)
        if group is not None and group not in out:
            raise ValueError(
                f"method {cls.__name__}.{attr} uses concurrency group {group!r}, which the "
                f"actor does not define (concurrency_groups={out or None})"
            )
    return out
