"""Deployment options, checked when the deployment is declared: ``DeploymentConfig``.

A bad option raises ``ValueError``/``TypeError`` at ``@serve.deployment`` or ``.options()``
time, naming the option, before anything is deployed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, TypeVar

_T = TypeVar("_T")


def _from_dict(cls: type[_T], value: Any, what: str) -> _T | None:
    """``value`` as a ``cls`` (a dataclass): None and instances as they are; a dict of
    its fields, checked (an unknown key raises ``ValueError`` naming the known ones)."""
    if value is None or isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(value) - known
    if unknown:
        raise ValueError(f"unknown {what} keys {sorted(unknown)}; known: {sorted(known)}")
    return cls(**value)


#: Replica actor options the user may set (``ray_actor_options``), as in Ray.
_ACTOR_OPTIONS = frozenset(
    {"num_cpus", "num_gpus", "resources", "memory", "runtime_env", "scheduling_strategy"}
)


@dataclasses.dataclass(frozen=True)
class AutoscalingConfig:
    """How many replicas a deployment runs, from the requests it has ongoing and queued.

    The load is the requests ongoing on the replicas plus those queued in routers,
    averaged over the last ``look_back_period_s`` (0: the latest sample). The wanted count
    is ``ceil(current * (1 + (load / (current * target_ongoing_requests) - 1) * factor))``
    where ``factor`` is ``upscale_smoothing_factor`` (or ``upscaling_factor``) when growing
    and ``downscale_smoothing_factor`` (or ``downscaling_factor``) when shrinking, both
    defaulting to ``smoothing_factor`` (1: straight to ``ceil(load / target)``); it is
    clamped to ``[min_replicas, max_replicas]`` and applies after it has been wanted for
    ``upscale_delay_s`` / ``downscale_delay_s``. From zero replicas, one queued request
    starts a replica at once. ``metrics_interval_s``: how often the replicas' load is read.
    """

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 0.0
    downscale_delay_s: float = 2.0
    initial_replicas: int | None = None
    look_back_period_s: float = 0.0
    smoothing_factor: float = 1.0
    upscale_smoothing_factor: float | None = None
    downscale_smoothing_factor: float | None = None
    upscaling_factor: float | None = None
    downscaling_factor: float | None = None
    metrics_interval_s: float = 0.2
    target_num_ongoing_requests_per_replica: float | None = None  # Ray's older name

    def __post_init__(self) -> None:
        if self.target_num_ongoing_requests_per_replica is not None:
            object.__setattr__(
                self, "target_ongoing_requests", self.target_num_ongoing_requests_per_replica
            )
        for name in ("look_back_period_s",):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in (
            "smoothing_factor",
            "upscale_smoothing_factor",
            "downscale_smoothing_factor",
            "upscaling_factor",
            "downscaling_factor",
            "metrics_interval_s",
        ):
            value = getattr(self, name)
            if value is not None and (not _finite(value) or value <= 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
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
        return _from_dict(cls, value, "autoscaling_config")

    def desired(self, current: int, total_load: float) -> int:
        """The replica count this load asks for (before the delays apply)."""
        target = self.target_ongoing_requests
        if current <= 0 or total_load <= 0:
            want = 0 if total_load <= 0 else max(1, math.ceil(total_load / target))
        else:
            ratio = total_load / (current * target)
            if ratio >= 1:
                factor = _first(
                    self.upscale_smoothing_factor, self.upscaling_factor, self.smoothing_factor
                )
            else:
                factor = _first(
                    self.downscale_smoothing_factor,
                    self.downscaling_factor,
                    self.smoothing_factor,
                )
            # A small epsilon: 3 * (1 + (4/3 - 1)) must give 4, not 5 from a rounding error.
            want = math.ceil(current * (1 + (ratio - 1) * factor) - 1e-9)
        return max(self.min_replicas, min(self.max_replicas, want))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _first(*values: float | None) -> float:
    for v in values:
        if v is not None:
            return v
    raise AssertionError("smoothing_factor always has a value")


#: The log levels ``LoggingConfig.log_level`` takes (names, as in Ray, or their numbers).
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Strategies of a replica's placement group (``placement_group_strategy``).
PG_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """How a deployment's replicas log (Ray's ``ray.serve.schema.LoggingConfig``).

    Records of the ``runtime.serve`` and ``ray.serve`` loggers (and their children) emitted
    while a replica of the deployment runs its code go, at ``log_level`` and above, to a
    file ``replica_<app>_<deployment>_<id>.log`` in ``logs_dir`` (None: the node's stderr,
    which reaches the driver), as text or as one JSON object per line (``encoding``), with
    the application, deployment, replica and request id. ``enable_access_log``: one INFO
    line per HTTP request (method, path, status, milliseconds).
    ``additional_log_standard_attrs``: ``logging.LogRecord`` attributes added to each JSON
    record (``"name"``, ``"funcName"``, ``"lineno"``, ...).
    """

    encoding: str = "TEXT"
    log_level: str | int = "INFO"
    logs_dir: str | None = None
    enable_access_log: bool = True
    additional_log_standard_attrs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.encoding not in ("TEXT", "JSON"):
            raise ValueError(f"encoding must be 'TEXT' or 'JSON', got {self.encoding!r}")
        level = self.log_level
        if isinstance(level, str):
            if level.upper() not in _LEVELS:
                raise ValueError(f"log_level must be one of {_LEVELS}, got {level!r}")
            object.__setattr__(self, "log_level", level.upper())
        elif not isinstance(level, int) or isinstance(level, bool) or level < 0:
            raise ValueError(f"log_level must be a level name or number, got {level!r}")
        if self.logs_dir is not None and (not isinstance(self.logs_dir, str) or not self.logs_dir):
            raise ValueError(f"logs_dir must be a non-empty path or None, got {self.logs_dir!r}")
        if not isinstance(self.enable_access_log, bool):
            raise ValueError("enable_access_log must be a bool")
        attrs = self.additional_log_standard_attrs
        if isinstance(attrs, str) or not all(isinstance(a, str) for a in attrs):
            raise ValueError("additional_log_standard_attrs must be a list of attribute names")
        object.__setattr__(self, "additional_log_standard_attrs", tuple(attrs))

    @property
    def level(self) -> int:
        """``log_level`` as a number."""
        level = self.log_level
        return level if isinstance(level, int) else int(getattr(logging, level))

    @classmethod
    def parse(cls, value: LoggingConfig | dict[str, Any] | None) -> LoggingConfig | None:
        return _from_dict(cls, value, "logging_config")


def _check_bundles(bundles: Any, strategy: Any) -> None:
    if bundles is None:
        if strategy is not None:
            raise ValueError("placement_group_strategy needs placement_group_bundles")
        return
    if not isinstance(bundles, list | tuple) or not bundles:
        raise ValueError(f"placement_group_bundles must be a non-empty list, got {bundles!r}")
    for i, bundle in enumerate(bundles):
        if not isinstance(bundle, dict) or not bundle:
            raise ValueError(f"placement_group_bundles[{i}] must be a non-empty dict: {bundle!r}")
        for key, amount in bundle.items():
            if not isinstance(key, str) or not _finite(amount) or amount < 0:
                raise ValueError(
                    f"placement_group_bundles[{i}]: {key!r} must be a number >= 0, got {amount!r}"
                )
    if strategy is not None and strategy not in PG_STRATEGIES:
        raise ValueError(f"placement_group_strategy must be one of {PG_STRATEGIES}: {strategy!r}")


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
    #: Replicas are replaced only when this changes (None: when the code, the arguments or
    #: the actor options change).
    version: str | None = None
    #: At most this many replicas of the deployment on one node (None: no bound).
    max_replicas_per_node: int | None = None
    #: Each replica reserves these bundles in a placement group of its own and runs in the
    #: first; the others are for the tasks and actors it starts (None: no group).
    placement_group_bundles: tuple[dict[str, float], ...] | None = None
    placement_group_strategy: str | None = None  # PACK when bundles are given
    logging_config: LoggingConfig | None = None

    def __post_init__(self) -> None:
        _check_bundles(self.placement_group_bundles, self.placement_group_strategy)
        if self.placement_group_bundles is not None:
            object.__setattr__(
                self,
                "placement_group_bundles",
                tuple({k: float(v) for k, v in b.items()} for b in self.placement_group_bundles),
            )
            if self.max_replicas_per_node is not None or (
                "scheduling_strategy" in self.ray_actor_options
            ):
                raise ValueError(
                    "placement_group_bundles places each replica in its own group: drop "
                    "max_replicas_per_node and the scheduling_strategy of ray_actor_options"
                )
        m = self.max_replicas_per_node
        if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 1):
            raise ValueError(f"max_replicas_per_node must be an int >= 1, got {m!r}")
        if m is not None and "scheduling_strategy" in self.ray_actor_options:
            raise ValueError(
                "max_replicas_per_node places the replicas itself: drop the "
                "scheduling_strategy of ray_actor_options"
            )
        if self.version is not None and (not isinstance(self.version, str) or not self.version):
            raise ValueError(f"version must be a non-empty string, got {self.version!r}")
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
        if "logging_config" in changes:
            changes["logging_config"] = LoggingConfig.parse(changes["logging_config"])
        if "autoscaling_config" in changes:
            changes["autoscaling_config"] = AutoscalingConfig.parse(changes["autoscaling_config"])
        if changes.get("num_replicas") == "auto":
            changes["num_replicas"] = 1
            if changes.get("autoscaling_config") is None:
                changes["autoscaling_config"] = AutoscalingConfig(min_replicas=1, max_replicas=100)
        return dataclasses.replace(self, **changes)


#: The option names ``@serve.deployment`` and ``.options()`` accept besides ``name``.
CONFIG_OPTIONS = frozenset(f.name for f in dataclasses.fields(DeploymentConfig))
