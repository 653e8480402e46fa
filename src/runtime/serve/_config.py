"""Deployment options, checked when the deployment is declared: ``DeploymentConfig``.

A bad option raises ``ValueError``/``TypeError`` at ``@serve.deployment`` or ``.options()``
time, naming the option, before anything is deployed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

#: Replica actor options the user may set (``ray_actor_options``), as in Ray.
_ACTOR_OPTIONS = frozenset(
    {"num_cpus", "num_gpus", "resources", "memory", "runtime_env", "scheduling_strategy"}
)


@dataclasses.dataclass(frozen=True)
class AutoscalingConfig:
    """How many replicas a deployment runs, from the requests it has ongoing and queued.

    The target replica count is ``ceil(total_ongoing / target_ongoing_requests)``, clamped
    to ``[min_replicas, max_replicas]``; a higher count applies after it has been wanted for
    ``upscale_delay_s``, a lower one after ``downscale_delay_s``. From zero replicas, one
    queued request starts a replica at once.
    """

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 0.0
    downscale_delay_s: float = 2.0
    initial_replicas: int | None = None

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"min_replicas must be >= 0, got {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"max_replicas must be >= max(1, min_replicas), got {self.max_replicas}"
            )
        if not self.target_ongoing_requests > 0:
            raise ValueError("target_ongoing_requests must be > 0")
        if self.upscale_delay_s < 0 or self.downscale_delay_s < 0:
            raise ValueError("upscale_delay_s and downscale_delay_s must be >= 0")
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas must lie within [min_replicas, max_replicas]")

    @classmethod
    def parse(cls, value: AutoscalingConfig | dict[str, Any] | None) -> AutoscalingConfig | None:
        if value is None or isinstance(value, AutoscalingConfig):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"autoscaling_config must be a dict, got {type(value).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(
                f"unknown autoscaling_config keys {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**value)

    def desired(self, current: int, total_load: float) -> int:
        """The replica count this load asks for (before the delays apply)."""
        want = 0 if total_load <= 0 else math.ceil(total_load / self.target_ongoing_requests)
        if current == 0 and total_load > 0:
            want = max(want, 1)
        return max(self.min_replicas, min(self.max_replicas, want))


@dataclasses.dataclass(frozen=True)
class DeploymentConfig:
    """Every option of ``@serve.deployment``, validated."""

    num_replicas: int = 1
    max_ongoing_requests: int = 5
    max_queued_requests: int = 1000
    autoscaling_config: AutoscalingConfig | None = None
    ray_actor_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    user_config: Any = None
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0
    graceful_shutdown_timeout_s: float = 20.0
    graceful_shutdown_wait_loop_s: float = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.num_replicas, int) or self.num_replicas < 0:
            raise ValueError(f"num_replicas must be an int >= 0, got {self.num_replicas!r}")
        if not isinstance(self.max_ongoing_requests, int) or self.max_ongoing_requests < 1:
            raise ValueError(
                f"max_ongoing_requests must be an int >= 1, got {self.max_ongoing_requests!r}"
            )
        if not isinstance(self.max_queued_requests, int) or self.max_queued_requests < -1:
            raise ValueError("max_queued_requests must be an int >= 0, or -1 for no bound")
        if not isinstance(self.ray_actor_options, dict):
            raise TypeError("ray_actor_options must be a dict")
        unknown = set(self.ray_actor_options) - _ACTOR_OPTIONS
        if unknown:
            raise ValueError(
                f"unsupported ray_actor_options {sorted(unknown)}; "
                f"supported: {sorted(_ACTOR_OPTIONS)}"
            )
        for name in (
            "health_check_period_s",
            "health_check_timeout_s",
            "graceful_shutdown_timeout_s",
            "graceful_shutdown_wait_loop_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.health_check_period_s <= 0 or self.health_check_timeout_s <= 0:
            raise ValueError("health_check_period_s and health_check_timeout_s must be > 0")

    def initial_replicas(self) -> int:
        a = self.autoscaling_config
        if a is None:
            return self.num_replicas
        return a.initial_replicas if a.initial_replicas is not None else a.min_replicas

    def replace(self, **changes: Any) -> DeploymentConfig:
        if "autoscaling_config" in changes:
            changes["autoscaling_config"] = AutoscalingConfig.parse(changes["autoscaling_config"])
        if changes.get("num_replicas") == "auto":
            changes["num_replicas"] = 1
            if changes.get("autoscaling_config") is None:
                changes["autoscaling_config"] = AutoscalingConfig(min_replicas=1, max_replicas=100)
        return dataclasses.replace(self, **changes)


#: The option names ``@serve.deployment`` and ``.options()`` accept besides ``name``.
CONFIG_OPTIONS = frozenset(f.name for f in dataclasses.fields(DeploymentConfig))
