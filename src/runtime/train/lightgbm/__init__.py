"""runtime.train.lightgbm: distributed LightGBM (needs the ``lightgbm`` extra).

- :class:`LightGBMTrainer`: label column + params + datasets, or your own loop.
- :class:`LightGBMConfig`: the network's timeout and tree learner.
- :func:`network_params`: the parameters that join this rank (for your own loop).

lightgbm itself is imported only in the ranks (and by ``get_model``).
"""

from runtime.train.lightgbm._trainer import LightGBMConfig, LightGBMTrainer, network_params

__all__ = ["LightGBMConfig", "LightGBMTrainer", "network_params"]
