"""GPUs of a host: how much of each device it has, and what a task or actor is shown
(``CUDA_VISIBLE_DEVICES``)."""

from __future__ import annotations

import math
import os
from typing import Final

_EPS: Final = 1e-9


def gpu_capacities(total: float) -> list[float]:
    """How much of each device a host of ``total`` GPUs has (a fraction for the last)."""
    whole = math.floor(total + _EPS)
    caps = [1.0] * whole
    rest = total - whole
    if rest > _EPS:
        caps.append(rest)
    return caps


#: CUDA_VISIBLE_DEVICES as the node process found it: a grant's ids index into it.
_VISIBLE_AT_START = os.environ.get("CUDA_VISIBLE_DEVICES")


def visible_devices(ids: list[int]) -> str:
    """The CUDA_VISIBLE_DEVICES value for GPU ids ``ids`` of this host (mapped through the
    node's own CUDA_VISIBLE_DEVICES when it was started with one, as Ray does)."""
    if _VISIBLE_AT_START:
        names = _VISIBLE_AT_START.split(",")
        return ",".join(names[i] if i < len(names) else str(i) for i in ids)
    return ",".join(str(i) for i in ids)


def set_visible_devices(ids: list[int] | None) -> None:
    """Show the task or actor its GPUs (None: put back what the node started with). The
    variable is the process's: a process that runs two GPU holders at once shows the last
    one's (see docs/core.md)."""
    if ids is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices(ids)
    elif _VISIBLE_AT_START is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = _VISIBLE_AT_START


__all__ = ["gpu_capacities", "set_visible_devices", "visible_devices"]
