"""Ray's module path ``ray.tune.logger``: the logger callbacks and :func:`pretty_print`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from runtime.tune._callback import (
    CSVLoggerCallback,
    JsonLoggerCallback,
    LoggerCallback,
    TBXLoggerCallback,
)

#: Keys a result carries that :func:`pretty_print` leaves out, as Ray's does.
_NOISE = frozenset({"config", "hist_stats"})


def _lines(value: Mapping[str, Any], indent: int) -> Iterable[str]:
    pad = "  " * indent
    for key in sorted(value, key=str):
        item = value[key]
        if isinstance(item, Mapping):
            if not item:
                continue
            yield f"{pad}{key}:"
            yield from _lines(item, indent + 1)
        elif isinstance(item, float) and math.isfinite(item):
            yield f"{pad}{key}: {item:.6g}"
        elif isinstance(item, list | tuple) and item and len(repr(item)) > 80:
            yield f"{pad}{key}:"
            yield from (f"{pad}- {v!r}" for v in item)
        else:
            yield f"{pad}{key}: {item}"


def pretty_print(result: Mapping[str, Any], exclude: Iterable[str] | None = None) -> str:
    """A result dict as indented ``key: value`` lines, sorted, nested dicts indented
    (Ray's ``tune.logger.pretty_print``); ``config``, ``hist_stats``, empty dicts and the
    ``exclude`` keys are left out.

    Example::

        print(pretty_print({"loss": 0.25, "info": {"lr": 0.1}}))
        # info:
        #   lr: 0.1
        # loss: 0.25
    """
    skip = _NOISE | set(exclude or ())
    return "\n".join(_lines({k: v for k, v in result.items() if k not in skip}, 0)) + "\n"


__all__ = [
    "CSVLoggerCallback",
    "JsonLoggerCallback",
    "LoggerCallback",
    "TBXLoggerCallback",
    "pretty_print",
]
