"""Ray RLlib's module path ``ray.rllib.algorithms``: the algorithms and their configs.

``from runtime.rllib.algorithms.ppo import PPOConfig`` works as Ray's does; the classes are
the ones of ``runtime.rllib`` (this package only re-exports them). Importing it does not
import torch; the algorithm names do, on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runtime.rllib._config import AlgorithmConfig

if TYPE_CHECKING:
    from runtime.rllib._algorithm import Algorithm
    from runtime.rllib.appo import APPO, IMPALA, APPOConfig, IMPALAConfig
    from runtime.rllib.cql import CQL, CQLConfig
    from runtime.rllib.dqn import DQN, DQNConfig
    from runtime.rllib.marwil import BC, MARWIL, BCConfig, MARWILConfig
    from runtime.rllib.ppo import PPO, PPOConfig
    from runtime.rllib.sac import SAC, SACConfig


def _lazy() -> dict[str, str]:
    from runtime import rllib

    return rllib._LAZY


def __getattr__(name: str) -> Any:
    module = _lazy().get(name) if name in __all__ else None
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "APPO",
    "BC",
    "CQL",
    "DQN",
    "IMPALA",
    "MARWIL",
    "PPO",
    "SAC",
    "APPOConfig",
    "Algorithm",
    "AlgorithmConfig",
    "BCConfig",
    "CQLConfig",
    "DQNConfig",
    "IMPALAConfig",
    "MARWILConfig",
    "PPOConfig",
    "SACConfig",
]
