"""AlgorithmConfig: the builder every algorithm's config extends (plain data, no torch).

A config is a bag of attributes set through builder methods that return ``self``
(``.environment(...)``, ``.env_runners(...)``, ``.training(...)``, ...), as in Ray RLlib.
``to_dict()`` gives a flat dict of those attributes (what Tune searches over) and
``from_dict()`` reads one back, so ``tune.run("PPO", config=PPOConfig().to_dict())`` and
``PPOConfig().build()`` build the same algorithm.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from runtime.rllib._algorithm import Algorithm

__all__ = ["AlgorithmConfig"]


class _NotProvided:
    """Marks a builder argument the caller left out (None is a meaningful value)."""

    def __repr__(self) -> str:
        return "NotProvided"


NotProvided: Any = _NotProvided()

#: Keys a dict may carry that are not config attributes (Tune adds its own bookkeeping).
_IGNORED_KEYS = frozenset({"__trial_index__", "env_runners", "_algo"})


class AlgorithmConfig:
    """Settings shared by all algorithms; subclasses add their ``training`` hyperparameters.

    Example::

        config = (PPOConfig()
                  .environment("CartPole-v1")
                  .env_runners(num_env_runners=2)
                  .training(lr=3e-4)
                  .debugging(seed=0))
        algo = config.build()
    """

    #: The algorithm class ``build()`` makes; set by each subclass.
    algo_class: ClassVar[type[Algorithm] | None] = None

    def __init__(self) -> None:
        # environment
        self.env: Any = None
        self.env_config: dict[str, Any] = {}
        # env runners (sampling actors)
        self.num_env_runners = 2
        self.num_envs_per_env_runner = 1
        self.rollout_fragment_length: int | str = "auto"
        self.num_cpus_per_env_runner: float = 0.0
        self.sample_timeout_s: float = 120.0
        self.explore = True
        self.sample_ahead = False
        # fault tolerance
        self.restart_failed_env_runners = True
        self.max_num_env_runner_restarts = 1000
        # training (common part; subclasses add theirs)
        self.lr = 5e-4
        self.gamma = 0.99
        self.train_batch_size = 4000
        self.grad_clip: float | None = 0.5
        self.model: dict[str, Any] = {"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"}
        # evaluation
        self.evaluation_interval: int | None = None
        self.evaluation_duration = 10
        self.evaluation_duration_unit = "episodes"
        # reporting
        self.metrics_num_episodes_for_smoothing = 100
        self.min_sample_timesteps_per_iteration = 0
        # debugging
        self.seed: int | None = None
        # resources (accepted for compatibility; the learner runs in the driver on CPU)
        self.num_gpus = 0
        self.num_cpus_for_main_process = 1
        self.framework_str = "torch"

    # --- builders -----------------------------------------------------------------------

    def environment(
        self, env: Any = NotProvided, *, env_config: dict[str, Any] | None = NotProvided
    ) -> AlgorithmConfig:
        """The environment: a gymnasium id, a registered name, or a class taking ``env_config``."""
        if env is not NotProvided:
            self.env = env
        if env_config is not NotProvided:
            self.env_config = dict(env_config or {})
        return self

    def env_runners(
        self,
        num_env_runners: int = NotProvided,
        num_envs_per_env_runner: int = NotProvided,
        rollout_fragment_length: int | str = NotProvided,
        *,
        num_cpus_per_env_runner: float = NotProvided,
        sample_timeout_s: float = NotProvided,
        explore: bool = NotProvided,
        sample_ahead: bool = NotProvided,
    ) -> AlgorithmConfig:
        """How sampling is spread: ``num_env_runners`` actors of ``num_envs_per_env_runner`` envs.

        ``num_env_runners=0`` samples in the driver. ``rollout_fragment_length="auto"``
        splits each iteration's batch evenly over the runners' envs.

        ``sample_ahead=True`` (not in Ray; off by default) overlaps sampling with learning:
        while the learner trains on batch k, the runners already sample batch k+1 with the
        weights from before that update, so every batch is one iteration stale. PPO then
        takes its importance ratio against the log-probs the runners recorded while acting
        (the behaviour policy), so the clipped objective stays correct for the stale batch.
        It needs remote runners (``num_env_runners >= 1``); with 0 it samples synchronously.
        """
        for name, value in (
            ("num_env_runners", num_env_runners),
            ("num_envs_per_env_runner", num_envs_per_env_runner),
            ("rollout_fragment_length", rollout_fragment_length),
            ("num_cpus_per_env_runner", num_cpus_per_env_runner),
            ("sample_timeout_s", sample_timeout_s),
            ("explore", explore),
            ("sample_ahead", sample_ahead),
        ):
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    def fault_tolerance(
        self,
        restart_failed_env_runners: bool = NotProvided,
        max_num_env_runner_restarts: int = NotProvided,
    ) -> AlgorithmConfig:
        """Whether a runner that died is replaced (and training goes on), and how often."""
        if restart_failed_env_runners is not NotProvided:
            self.restart_failed_env_runners = bool(restart_failed_env_runners)
        if max_num_env_runner_restarts is not NotProvided:
            self.max_num_env_runner_restarts = int(max_num_env_runner_restarts)
        return self

    def training(self, **kwargs: Any) -> AlgorithmConfig:
        """Set hyperparameters by name (``lr``, ``gamma``, ``train_batch_size``, ...).

        Raises:
            TypeError: a name this algorithm does not have (the message lists the known ones).
        """
        known = self._training_keys()
        for name, value in kwargs.items():
            if name not in known:
                raise TypeError(
                    f"{type(self).__name__}.training() got an unknown hyperparameter {name!r}; "
                    f"known: {', '.join(sorted(known))}"
                )
            setattr(self, name, {**self.model, **(value or {})} if name == "model" else value)
        return self

    def evaluation(
        self,
        evaluation_interval: int | None = NotProvided,
        evaluation_duration: int = NotProvided,
        evaluation_duration_unit: str = NotProvided,
    ) -> AlgorithmConfig:
        """Evaluate (greedy, ``explore=False``) every ``evaluation_interval`` iterations."""
        if evaluation_interval is not NotProvided:
            self.evaluation_interval = evaluation_interval
        if evaluation_duration is not NotProvided:
            self.evaluation_duration = evaluation_duration
        if evaluation_duration_unit is not NotProvided:
            self.evaluation_duration_unit = evaluation_duration_unit
        return self

    def reporting(
        self,
        metrics_num_episodes_for_smoothing: int = NotProvided,
        min_sample_timesteps_per_iteration: int = NotProvided,
    ) -> AlgorithmConfig:
        """How iterations report (Ray's settings and meanings).

        ``metrics_num_episodes_for_smoothing``: each runner contributes the mean of at most
        its last ``ceil(this / num_env_runners)`` episodes completed in the iteration (see
        ``Algorithm.train``). ``min_sample_timesteps_per_iteration``: ``train()`` repeats
        the training step until at least this many env steps were sampled in the iteration
        (Ray's default: 0 for PPO, 1000 for DQN).
        """
        if metrics_num_episodes_for_smoothing is not NotProvided:
            self.metrics_num_episodes_for_smoothing = int(metrics_num_episodes_for_smoothing)
        if min_sample_timesteps_per_iteration is not NotProvided:
            self.min_sample_timesteps_per_iteration = int(min_sample_timesteps_per_iteration)
        return self

    def debugging(self, seed: int | None = NotProvided, **_ignored: Any) -> AlgorithmConfig:
        """``seed``: same seed, one runner -> the same results, iteration for iteration."""
        if seed is not NotProvided:
            self.seed = seed
        return self

    def resources(
        self, num_gpus: int = NotProvided, num_cpus_for_main_process: int = NotProvided
    ) -> AlgorithmConfig:
        """Accepted for compatibility: the learner runs in the driver, on CPU."""
        if num_gpus is not NotProvided:
            self.num_gpus = num_gpus
        if num_cpus_for_main_process is not NotProvided:
            self.num_cpus_for_main_process = num_cpus_for_main_process
        return self

    def framework(self, framework: str = "torch", **_ignored: Any) -> AlgorithmConfig:
        """Only ``"torch"`` is supported."""
        if framework != "torch":
            raise ValueError(f"framework {framework!r} is not supported; use 'torch'")
        self.framework_str = framework
        return self

    def api_stack(self, **_ignored: Any) -> AlgorithmConfig:
        """Accepted for Ray compatibility; there is one stack here."""
        return self

    # --- dict form ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A flat dict of every setting (a deep copy); ``from_dict`` reads it back."""
        return {k: copy.deepcopy(v) for k, v in vars(self).items() if not k.startswith("_")}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> AlgorithmConfig:
        """A config of this class with the defaults, updated from ``config``."""
        return cls().update_from_dict(config)

    def update_from_dict(self, config: dict[str, Any]) -> AlgorithmConfig:
        """Set every key of ``config`` (unknown keys are a TypeError naming them)."""
        known = set(vars(self))
        unknown = sorted(k for k in config if k not in known and k not in _IGNORED_KEYS)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no setting(s) {', '.join(map(repr, unknown))}"
            )
        for key, value in config.items():
            if key in known:
                new = {**self.model, **(value or {})} if key == "model" else value
                setattr(self, key, copy.deepcopy(new))
        return self

    def copy(self) -> AlgorithmConfig:
        """An independent copy."""
        return copy.deepcopy(self)

    # --- checks and building ------------------------------------------------------------

    def _training_keys(self) -> set[str]:
        base = AlgorithmConfig()
        common = {"lr", "gamma", "train_batch_size", "grad_clip", "model"}
        return common | (set(vars(self)) - set(vars(base)))

    def validate(self) -> None:
        """Check the settings; a clear ValueError/TypeError before any work starts."""
        if self.env is None:
            raise ValueError(
                "no environment: call .environment('CartPole-v1') or .environment(MyEnvClass)"
            )
        if not (isinstance(self.env, str) or callable(self.env)):
            raise TypeError(
                f"env must be a gymnasium id, a registered name or an env class, "
                f"got {type(self.env).__name__}"
            )
        if not isinstance(self.env_config, dict):
            raise TypeError(f"env_config must be a dict, got {type(self.env_config).__name__}")
        _int_at_least("num_env_runners", self.num_env_runners, 0)
        _int_at_least("num_envs_per_env_runner", self.num_envs_per_env_runner, 1)
        _int_at_least("train_batch_size", self.train_batch_size, 1)
        rfl = self.rollout_fragment_length
        if rfl != "auto":
            _int_at_least("rollout_fragment_length", rfl, 1)
        if not isinstance(self.lr, int | float) or self.lr <= 0:
            raise ValueError(f"lr must be a number > 0, got {self.lr!r}")
        if not isinstance(self.gamma, int | float) or not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")
        if self.evaluation_interval is not None:
            _int_at_least("evaluation_interval", self.evaluation_interval, 1)
        _int_at_least("evaluation_duration", self.evaluation_duration, 1)
        if self.evaluation_duration_unit not in ("episodes", "timesteps"):
            raise ValueError(
                "evaluation_duration_unit must be 'episodes' or 'timesteps', "
                f"got {self.evaluation_duration_unit!r}"
            )
        _int_at_least(
            "metrics_num_episodes_for_smoothing", self.metrics_num_episodes_for_smoothing, 1
        )
        _int_at_least(
            "min_sample_timesteps_per_iteration", self.min_sample_timesteps_per_iteration, 0
        )
        if not isinstance(self.sample_ahead, bool):
            raise TypeError(f"sample_ahead must be a bool, got {self.sample_ahead!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int or None, got {type(self.seed).__name__}")
        hiddens = self.model.get("fcnet_hiddens", [])
        if not isinstance(hiddens, list | tuple) or not all(
            isinstance(h, int) and h > 0 for h in hiddens
        ):
            raise ValueError(f"model['fcnet_hiddens'] must be a list of ints > 0, got {hiddens!r}")
        if self.model.get("fcnet_activation", "tanh") not in ("tanh", "relu"):
            raise ValueError("model['fcnet_activation'] must be 'tanh' or 'relu'")

    def get_rollout_fragment_length(self) -> int:
        """Steps each env of each runner takes per sampling round."""
        if self.rollout_fragment_length != "auto":
            return int(self.rollout_fragment_length)
        envs = max(1, self.num_env_runners) * self.num_envs_per_env_runner
        return max(1, -(-int(self.train_batch_size) // envs))

    def build(self, env: Any = None, **_ignored: Any) -> Algorithm:
        """The algorithm, with its env runners started (``runtime.init`` must have run)."""
        if env is not None:
            self.environment(env)
        if self.algo_class is None:
            raise TypeError(f"{type(self).__name__} has no algorithm class to build")
        return self.algo_class(config=self)

    build_algo = build

    def as_trainable(self) -> type:
        """The Tune trainable for this config: the algorithm class with these defaults.

        ``tune.Tuner(PPOConfig().environment("CartPole-v1"), param_space={"lr": ...})``
        runs trials of this algorithm, each on this config updated with the trial's values.
        """
        if self.algo_class is None:
            raise TypeError(f"{type(self).__name__} has no algorithm class")
        base = self.to_dict()
        algo: type = self.algo_class
        return type(
            algo.__name__,
            (algo,),
            {"_default_config_dict": base, "__module__": algo.__module__},
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(env={self.env!r}, num_env_runners={self.num_env_runners})"


def _int_at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
