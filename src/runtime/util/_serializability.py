"""Finding what makes a value unpicklable (Ray's ``util.inspect_serializability``)."""

from __future__ import annotations

import inspect
import sys
from typing import Any, NamedTuple, TextIO

import cloudpickle


class FailureTuple(NamedTuple):
    """One member that does not pickle: the value, its name, and the value holding it."""

    obj: Any
    name: str
    parent: Any


def _pickles(obj: Any) -> bool:
    try:
        cloudpickle.dumps(obj)
    except Exception:  # any pickling failure is the answer, not an error here
        return False
    return True


def _members(obj: Any) -> list[tuple[str, Any]]:
    """The values ``obj`` carries when pickled: a function's closure and globals, an
    object's attributes."""
    if inspect.isfunction(obj):
        found = inspect.getclosurevars(obj)
        return [*found.nonlocals.items(), *found.globals.items()]
    if inspect.isclass(obj):
        return [
            (k, v) for k, v in vars(obj).items() if not (k.startswith("__") and k.endswith("__"))
        ]
    if isinstance(obj, dict):
        return [(str(k), v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    try:
        return list(vars(obj).items())
    except TypeError:
        return []


def _inspect(obj: Any, name: str, parent: Any, depth: int, failures: set[FailureTuple]) -> bool:
    if _pickles(obj):
        return True
    found_inside = False
    if depth > 0:
        for member_name, member in _members(obj):
            if not _inspect(member, member_name, obj, depth - 1, failures):
                found_inside = True
    if not found_inside:  # the root cause: nothing inside it explains the failure
        try:
            failures.add(FailureTuple(obj, name, parent))
        except TypeError:  # an unhashable value: keep its type instead
            failures.add(FailureTuple(type(obj), name, parent))
    return False


def inspect_serializability(
    base_obj: Any,
    name: str | None = None,
    depth: int = 3,
    print_file: TextIO | None = None,
) -> tuple[bool, set[FailureTuple]]:
    """Whether ``base_obj`` pickles, and which members stop it when it does not.

    Walks a function's closure and globals and an object's attributes, ``depth`` levels
    down, and reports the innermost values that fail to pickle.

    Args:
        base_obj: the value to check (a function, class, or any object).
        name: its name in the report (its ``__name__`` or ``str`` by default).
        depth: how many levels of members to walk.
        print_file: where the report goes (``sys.stdout`` by default).

    Returns:
        ``(serializable, failures)``, where each failure is a :class:`FailureTuple`.

    Example::

        import threading
        lock = threading.Lock()
        ok, failures = inspect_serializability(lambda: lock, name="uses_lock")
        assert not ok and {f.name for f in failures} == {"lock"}
    """
    out = sys.stdout if print_file is None else print_file
    label = name if name is not None else getattr(base_obj, "__name__", str(base_obj))
    failures: set[FailureTuple] = set()
    ok = _inspect(base_obj, label, None, depth, failures)
    if ok:
        print(f"{label!r} is serializable", file=out)
    else:
        print(f"{label!r} is not serializable; what fails to pickle:", file=out)
        for failure in sorted(failures, key=lambda f: f.name):
            print(f"    {failure.name}: {type(failure.obj).__name__}", file=out)
    return ok, failures
