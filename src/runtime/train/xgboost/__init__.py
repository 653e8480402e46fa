"""runtime.train.xgboost: distributed XGBoost (needs the ``xgboost`` extra).

- :class:`XGBoostTrainer`: label column + params + datasets, or your own loop.
- :class:`XGBoostConfig`: the collective's timeout and retries.
- :class:`RayTrainReportCallback`: report and checkpoint from your own ``xgboost.train``.

xgboost itself is imported only in the ranks (and by ``get_model``).
"""

from runtime.train.xgboost._trainer import RayTrainReportCallback, XGBoostConfig, XGBoostTrainer

__all__ = ["RayTrainReportCallback", "XGBoostConfig", "XGBoostTrainer"]
