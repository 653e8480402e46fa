"""Node labels and label selectors (Ray 2.60's ``label_selector`` option).

A node carries labels (``--labels '{"zone": "a"}'``, ``init(labels=...)``); a task or actor
may ask for nodes whose labels match a selector: a dict of label name to one of

- ``"a"``: the label is ``a``;
- ``"!a"``: the label is not ``a`` (or the node has no such label);
- ``"in(a,b)"``: the label is one of these;
- ``"!in(a,b)"``: the label is none of these (or absent).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: The longest label name or value accepted (labels travel in every view of the cluster).
MAX_LABEL = 253
_IN = re.compile(r"^(!?)in\((.*)\)$")


def check_label_selector(selector: Any) -> dict[str, str]:
    """``selector`` checked: a dict of non-empty label names to well-formed conditions.

    Raises:
        TypeError: not a dict of str to str.
        ValueError: an empty or overlong name, or a malformed condition.
    """
    if not isinstance(selector, Mapping):
        raise TypeError(f"label_selector must be a dict of label to value, got {selector!r:.100}")
    out: dict[str, str] = {}
    for name, cond in selector.items():
        if not isinstance(name, str) or not isinstance(cond, str):
            raise TypeError(f"label_selector must map str to str, got {name!r:.60}: {cond!r:.60}")
        if not name or len(name) > MAX_LABEL or len(cond) > 4 * MAX_LABEL:
            raise ValueError(f"label_selector has a bad label name {name!r:.100}")
        values = _values(cond)
        if not values or any(not v or len(v) > MAX_LABEL for v in values):
            raise ValueError(
                f"label_selector[{name!r}] = {cond!r:.100} is not a condition: write 'a', "
                "'!a', 'in(a,b)' or '!in(a,b)'"
            )
        out[name] = cond
    return out


def _values(cond: str) -> list[str]:
    m = _IN.match(cond)
    if m:
        return [v.strip() for v in m.group(2).split(",")]
    return [cond[1:] if cond.startswith("!") else cond]


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """True when a node with ``labels`` satisfies every condition of ``selector``."""
    for name, cond in selector.items():
        have = labels.get(name)
        negate = cond.startswith("!")
        ok = have is not None and have in _values(cond)
        if ok == negate:
            return False
    return True


__all__ = ["MAX_LABEL", "check_label_selector", "matches"]
