"""runtime.rllib: reinforcement learning with parallel env-runner actors (PPO, DQN, SAC).

Readable like CleanRL, scaling like RLlib: each algorithm is one file read top to bottom
(``ppo.py``, ``dqn.py``, ``sac.py``: config, model, loss, update); the env runners (actors
stepping a gymnasium vector env and returning batches through the object store), the replay
buffer and the torch learner are shared modules. An algorithm class is also a Tune trainable, so
``tune.run("PPO", config=PPOConfig().environment("CartPole-v1").to_dict())`` works.

torch is imported on first use of an algorithm name (``PPO``, ``PPOConfig``, ...), not by
``import runtime.rllib``, so env-runner actors start without waiting for it.

Example::

    import runtime
    from runtime.rllib import PPOConfig

    runtime.init(num_cpus=2)
    algo = (PPOConfig().environment("CartPole-v1")
            .env_runners(num_env_runners=2).debugging(seed=0).build())
    for _ in range(15):
        result = algo.train()
    print(result["env_runners"]["episode_return_mean"])
    path = algo.save("/tmp/ppo").checkpoint.path
    algo.stop()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runtime.rllib._config import AlgorithmConfig
from runtime.rllib._env import UnsupportedSpaceError, register_env

if TYPE_CHECKING:
    from runtime.rllib._algorithm import Algorithm, CheckpointRef, SaveResult
    from runtime.rllib.appo import APPO, IMPALA, APPOConfig, IMPALAConfig
    from runtime.rllib.cql import CQL, CQLConfig
    from runtime.rllib.dqn import DQN, DQNConfig
    from runtime.rllib.marwil import BC, MARWIL, BCConfig, MARWILConfig
    from runtime.rllib.ppo import PPO, PPOConfig
    from runtime.rllib.sac import SAC, SACConfig

#: Where each lazily imported public name lives.
_LAZY = {
    "Algorithm": "runtime.rllib._algorithm",
    "CheckpointRef": "runtime.rllib._algorithm",
    "SaveResult": "runtime.rllib._algorithm",
    "APPO": "runtime.rllib.appo",
    "APPOConfig": "runtime.rllib.appo",
    "IMPALA": "runtime.rllib.appo",
    "IMPALAConfig": "runtime.rllib.appo",
    "BC": "runtime.rllib.marwil",
    "CQL": "runtime.rllib.cql",
    "CQLConfig": "runtime.rllib.cql",
    "BCConfig": "runtime.rllib.marwil",
    "MARWIL": "runtime.rllib.marwil",
    "MARWILConfig": "runtime.rllib.marwil",
    "DQN": "runtime.rllib.dqn",
    "DQNConfig": "runtime.rllib.dqn",
    "PPO": "runtime.rllib.ppo",
    "PPOConfig": "runtime.rllib.ppo",
    "SAC": "runtime.rllib.sac",
    "SACConfig": "runtime.rllib.sac",
}

#: Algorithm names Tune and the CLI accept (``tune.run("PPO")``): name -> "module:class"
#: (``runtime.libs.trainable`` registers the same names, so Tune needs no import of this).
ALGORITHMS = {
    "PPO": "runtime.rllib.ppo:PPO",
    "DQN": "runtime.rllib.dqn:DQN",
    "SAC": "runtime.rllib.sac:SAC",
    "APPO": "runtime.rllib.appo:APPO",
    "IMPALA": "runtime.rllib.appo:IMPALA",
    "BC": "runtime.rllib.marwil:BC",
    "MARWIL": "runtime.rllib.marwil:MARWIL",
    "CQL": "runtime.rllib.cql:CQL",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime.rllib' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def get_algorithm_class(name: str) -> type[Algorithm]:
    """The algorithm class registered as ``name`` ("PPO", "DQN" or "SAC", any case)."""
    target = ALGORITHMS.get(name.upper()) if isinstance(name, str) else None
    if target is None:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}")
    module, _, attr = target.partition(":")
    cls: type[Algorithm] = getattr(importlib.import_module(module), attr)
    return cls


__all__ = [
    "ALGORITHMS",
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
    "CheckpointRef",
    "DQNConfig",
    "IMPALAConfig",
    "MARWILConfig",
    "PPOConfig",
    "SACConfig",
    "SaveResult",
    "UnsupportedSpaceError",
    "get_algorithm_class",
    "register_env",
]
