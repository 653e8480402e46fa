"""Ray's ``ray.air.session``: report and read the session of a Train run or a Tune trial.

Each function warns (:class:`runtime.air.RayDeprecationWarning`) and then does what
``runtime.train``'s function of the same name does inside a Train worker, or
``runtime.tune``'s inside a Tune trial.
"""

from __future__ import annotations

import warnings
from typing import Any

from runtime.air._deprecation import RayDeprecationWarning


def _warn(name: str) -> None:
    warnings.warn(
        f"ray.air.session.{name} is deprecated (as in Ray 2.60): use ray.train.{name} in a "
        f"Train worker or ray.tune.{name} in a Tune trial (runtime.train / runtime.tune here)",
        RayDeprecationWarning,
        stacklevel=3,
    )


def _in_train() -> bool:
    """Whether the caller runs inside a Train worker's loop."""
    from runtime import train

    try:
        train.get_context()
    except RuntimeError:
        return False
    return True


def report(metrics: dict[str, Any], *, checkpoint: Any = None) -> None:
    """Report metrics (and a checkpoint) to the Train run or Tune trial running the caller."""
    _warn("report")
    if _in_train():
        from runtime import train

        train.report(metrics, checkpoint=checkpoint)
    else:
        from runtime import tune

        tune.report(metrics, checkpoint=checkpoint)


def get_checkpoint() -> Any:
    """The checkpoint to resume from (Train run or Tune trial), or None."""
    _warn("get_checkpoint")
    if _in_train():
        from runtime import train

        return train.get_checkpoint()
    from runtime import tune

    return tune.get_checkpoint()


def get_dataset_shard(name: str = "train") -> Any:
    """This Train worker's shard of dataset ``name``."""
    _warn("get_dataset_shard")
    from runtime import train

    return train.get_dataset_shard(name)


def _context_value(name: str) -> Any:
    _warn(name)
    if _in_train():
        from runtime import train

        context: Any = train.get_context()
    else:
        from runtime import tune

        context = tune.get_context()
    method = getattr(context, name, None)
    if method is None:
        raise RuntimeError(f"ray.air.session.{name} has no meaning in {type(context).__name__}")
    return method()


def get_world_rank() -> int:
    """This Train worker's rank among all workers."""
    return int(_context_value("get_world_rank"))


def get_world_size() -> int:
    """How many Train workers run the loop."""
    return int(_context_value("get_world_size"))


def get_local_rank() -> int:
    """This Train worker's rank on its node."""
    return int(_context_value("get_local_rank"))


def get_trial_name() -> str:
    """The Tune trial's name."""
    return str(_context_value("get_trial_name"))


def get_trial_id() -> str:
    """The Tune trial's id."""
    return str(_context_value("get_trial_id"))


__all__ = [
    "get_checkpoint",
    "get_dataset_shard",
    "get_local_rank",
    "get_trial_id",
    "get_trial_name",
    "get_world_rank",
    "get_world_size",
    "report",
]
