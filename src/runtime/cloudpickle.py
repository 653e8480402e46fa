"""Ray's module path ``ray.cloudpickle``: the ``cloudpickle`` package the runtime pickles
functions and values with (``from runtime import cloudpickle``)."""

from cloudpickle import *  # noqa: F403 - the whole package, under Ray's path
from cloudpickle import dumps, loads

__all__ = ["dumps", "loads"]
