"""Algorithm: the loop around an algorithm's ``training_step`` (results, checkpoints, weights).

A subclass (``PPO``, ``DQN``) defines ``setup()`` (its torch module and learner),
``training_step()`` (sample, then update; returns learner stats) and, when it needs them,
``get_extra_state``/``set_extra_state``. Everything else is here: building the env runners,
aggregating episode statistics, evaluation, saving and restoring, and the Tune trainable
shape (``step``/``save_checkpoint``/``load_checkpoint``/``cleanup``), so an algorithm class
is itself a Tune trainable: ``tune.run("PPO", config=PPOConfig()...to_dict())``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

import runtime
from runtime.rllib._config import AlgorithmConfig, scheduled
from runtime.rllib._env import check_spaces, resolve_env_creator, spaces_of
from runtime.rllib._env_runner import (
    CONNECTOR_STATES,
    EnvRunner,
    EnvRunnerGroup,
    PendingSample,
    callbacks_blob,
    connectors_blob,
)
from runtime.rllib._metrics import Logged, MetricsLogger, merge_metrics, nest
from runtime.rllib.callbacks.callbacks import make_callbacks, run_hooks

__all__ = ["Algorithm", "CheckpointRef", "SaveResult"]

logger = logging.getLogger(__name__)

STATE_FILE = "algorithm_state.pkl"
META_FILE = "rllib_checkpoint.json"


@dataclass
class CheckpointRef:
    """Where a checkpoint lives (``.path``), as Ray's ``Checkpoint``."""

    path: str

    def __fspath__(self) -> str:
        return self.path


@dataclass
class SaveResult:
    """What ``Algorithm.save`` returns: ``.checkpoint.path`` (as in Ray) and the last metrics.

    It is also path-like, so ``Algorithm.from_checkpoint(algo.save(d))`` works.
    """

    checkpoint: CheckpointRef
    metrics: dict[str, Any] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return self.checkpoint.path

    def __str__(self) -> str:
        return self.checkpoint.path


class Algorithm:
    """Base of PPO and DQN: ``train()`` runs one iteration and returns its result dict."""

    #: The config class ``get_default_config`` makes; set by each subclass.
    config_class: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    #: Whether the algorithm handles Box (continuous) action spaces.
    supports_box_actions: ClassVar[bool] = False
    #: Defaults bound by ``AlgorithmConfig.as_trainable`` (a Tuner given a config object).
    _default_config_dict: ClassVar[dict[str, Any] | None] = None

    @classmethod
    def get_default_config(cls) -> AlgorithmConfig:
        """A fresh config of this algorithm with its defaults."""
        config = cls.config_class()
        if cls._default_config_dict is not None:
            config.update_from_dict(cls._default_config_dict)
        return config

    def __init__(self, config: AlgorithmConfig | dict[str, Any] | None = None, **_kwargs: Any):
        if config is None or isinstance(config, dict):
            config = self.get_default_config().update_from_dict(dict(config or {}))
        elif isinstance(config, AlgorithmConfig):
            config = config.copy()
        else:
            raise TypeError(f"config must be an AlgorithmConfig or a dict, got {config!r}")
        config.validate()
        self.config = config
        self.env_creator = resolve_env_creator(config.env)
        #: Multi-agent: module id -> (observation space, action space); None otherwise.
        self.module_specs: dict[str, tuple[Any, Any]] | None = self._module_specs()
        self.is_multi_agent = self.module_specs is not None
        if self.module_specs is not None:
            self._check_multi_agent_support()
            first = self.module_specs.get("default_policy", next(iter(self.module_specs.values())))
            env_spaces = first
        else:
            env_spaces = spaces_of(self.env_creator, config.env_config)
        #: The env's own observation space; ``observation_space`` is what the module sees
        #: (after the env-to-module connectors).
        self.env_observation_space, self.action_space = env_spaces
        self.env_to_module, self.module_to_env = self._build_connectors()
        # The connectors the runners run on batches (FlattenObservations is an env wrapper
        # there): their states and deltas travel between driver and runners, in this order.
        self._runner_connectors = [
            x for x in self.env_to_module if not getattr(x, "env_wrapper", False)
        ]
        self.observation_space = self.env_observation_space
        for connector in self.env_to_module:
            self.observation_space = connector.recompute_output_observation_space(
                self.observation_space
            )
        for obs_space, act_space in (self.module_specs or {"": env_spaces}).values():
            check_spaces(
                self.observation_space if self.module_specs is None else obs_space,
                act_space,
                type(self).__name__,
                box_actions=self.supports_box_actions,
            )
        self.iteration = 0
        self.num_env_steps_sampled_lifetime = 0
        self.num_env_steps_trained_lifetime = 0
        self.num_episodes_lifetime = 0
        self._time_total = 0.0
        # Per-runner episode stats of this iteration's sampling rounds (see _episode_stats).
        self._runner_stats: list[tuple[float, float, float, float]] = []
        self._pending: PendingSample | None = None  # sample_ahead's round in flight
        self._rng = np.random.default_rng(config.seed)
        self._eval_runner: Any = None
        self._eval_actors: list[Any] = []
        self._action_generator: Any = None
        self.module: Any = None
        self.learner: Any = None
        self.actor_ctor: Callable[[], Any] = _no_actor
        self.callbacks = make_callbacks(config.callbacks_class, config.callbacks_functions)
        self.metrics = MetricsLogger()  # what driver-side callbacks log
        self._runner_metrics: list[Logged] = []  # what runner-side callbacks logged
        self.modules: dict[str, Any] = {}
        self._ma_returns: dict[str, dict[str, list[float]]] = {}
        self._recorded: dict[tuple[int, int], tuple[int, int]] = {}  # (runner, env) -> (ep, t)
        self.setup()
        self.env_runner_group = EnvRunnerGroup(
            config, self.env_creator, self.actor_ctor, *self._runner_class()
        )
        self.env_runner_group.on_recreated = self._runners_recreated
        if config.evaluation_num_env_runners:
            self._eval_actors = self._start_eval_actors(config.evaluation_num_env_runners)
        run_hooks(self.callbacks, "on_algorithm_init", algorithm=self, metrics_logger=self.metrics)

    def _module_specs(self) -> dict[str, tuple[Any, Any]] | None:
        """Per-module spaces when the env is a ``MultiAgentEnv`` (None for a gymnasium env)."""
        from runtime.rllib._multi_agent import module_specs
        from runtime.rllib.env.multi_agent_env import MultiAgentEnv

        env = self.env_creator(dict(self.config.env_config))
        try:
            if isinstance(env, MultiAgentEnv):
                return module_specs(self.config, env)
        finally:
            env.close()
        if self.config.is_multi_agent:
            raise ValueError(
                "multi_agent(policies=...) needs a MultiAgentEnv (runtime.rllib.env."
                f"multi_agent_env), got {type(env).__name__}"
            )
        return None

    def _check_multi_agent_support(self) -> None:
        from runtime.rllib.callbacks.callbacks import RUNNER_HOOKS, RLlibCallback

        c = self.config
        if type(self).build_module is Algorithm.build_module:
            raise NotImplementedError(
                f"{type(self).__name__} does not support multi-agent envs here; PPO does"
            )
        if c.env_to_module_connector is not None or c.module_to_env_connector is not None:
            raise NotImplementedError("connectors are not supported with multi-agent envs")
        if c.model.get("use_lstm"):
            raise NotImplementedError(
                "model_config use_lstm is not supported with multi-agent envs"
            )
        if c.num_learners:
            raise NotImplementedError("num_learners > 0 is not supported with multi-agent envs")
        classes = (
            c.callbacks_class
            if isinstance(c.callbacks_class, list | tuple)
            else [c.callbacks_class]
        )
        overridden = any(
            cls is not None and getattr(cls, hook) is not getattr(RLlibCallback, hook)
            for cls in classes
            for hook in RUNNER_HOOKS
        )
        if overridden or any(hook in c.callbacks_functions for hook in RUNNER_HOOKS):
            raise NotImplementedError(
                "env-runner callback hooks (on_episode_*, ...) are not supported with "
                "multi-agent envs; the driver hooks are"
            )

    def _runner_class(self) -> tuple[type, dict[str, Any]]:
        """The env runner class and its extra arguments (multi-agent: the mapping function)."""
        if not self.is_multi_agent:
            return EnvRunner, {}
        import cloudpickle

        from runtime.rllib._multi_agent import MultiAgentEnvRunner

        return MultiAgentEnvRunner, {"mapping_fn": cloudpickle.dumps(self.config.policy_mapping_fn)}

    def modules_to_train(self) -> list[str]:
        """The module ids ``policies_to_train`` selects (all of them by default)."""
        which = self.config.policies_to_train
        ids = list(self.modules) if self.modules else ["default_policy"]
        if which is None:
            return ids
        if callable(which):
            return [mid for mid in ids if which(mid, None)]
        return [mid for mid in ids if mid in set(which)]

    def _build_connectors(self) -> tuple[list[Any], list[Any]]:
        """The driver's copies of the connector pipelines (their factories get a 1-env env)."""
        c = self.config
        if c.env_to_module_connector is None and c.module_to_env_connector is None:
            return [], []
        from runtime.rllib._env import make_vector_env
        from runtime.rllib.connectors.connector_v2 import build_pipeline

        env = make_vector_env(self.env_creator, c.env_config, 1)
        try:
            to_module = build_pipeline(c.env_to_module_connector, env)
            to_env = build_pipeline(c.module_to_env_connector, env)
        finally:
            env.close()
        if any(getattr(x, "env_wrapper", False) for x in to_module[1:]):
            raise ValueError("FlattenObservations must be the first env-to-module connector")
        return to_module, to_env

    def _runners_recreated(self, indices: list[int]) -> None:
        run_hooks(
            self.callbacks,
            "on_env_runners_recreated",
            algorithm=self,
            env_runner_group=self.env_runner_group,
            env_runner_indices=indices,
            is_evaluation=False,
        )

    def _start_eval_actors(self, n: int) -> list[Any]:
        import cloudpickle

        runner_cls, runner_kwargs = self._runner_class()
        cls: Any = runtime.remote(runner_cls)
        blobs = cloudpickle.dumps(self.env_creator), cloudpickle.dumps(self.actor_ctor)
        env_config = {
            **self.config.env_config,
            **self.config.evaluation_config.get("env_config", {}),
        }
        actors = [
            cls.options(num_cpus=self.config.num_cpus_per_env_runner).remote(
                blobs[0],
                env_config,
                1,
                blobs[1],
                seed=self.config.seed,
                worker_index=1000 + i,
                callbacks=callbacks_blob(self.config),
                connectors=connectors_blob(self.config),
                **runner_kwargs,
            )
            for i in range(n)
        ]
        runtime.get([a.ping.remote() for a in actors], timeout=self.config.sample_timeout_s)
        return actors

    # --- what a subclass defines --------------------------------------------------------

    def setup(self) -> None:
        """Build ``self.module`` (the torch policy), ``self.learner`` and ``self.actor_ctor``.

        ``actor_ctor`` is a picklable zero-argument callable (a ``functools.partial`` of a
        ``_numpy_policy`` class) that each env runner calls to build its torch-free policy;
        it gets the module's weights with every sampling round. By default from
        ``build_module``: once, or once per module of a multi-agent setup (then
        ``self.modules`` holds them, and ``self.learner`` is their ``ModuleLearners``).
        """
        if self.module_specs is None:
            self.module, self.actor_ctor, self.learner = self.build_module(
                self.observation_space, self.action_space
            )
            return
        from runtime.rllib._multi_agent import ModuleLearners, MultiModuleActor

        ctors, learners = {}, {}
        for mid, (obs_space, act_space) in self.module_specs.items():
            self.modules[mid], ctors[mid], learners[mid] = self.build_module(obs_space, act_space)
        self.module = self.modules.get("default_policy", next(iter(self.modules.values())))
        self.actor_ctor = MultiModuleActor(ctors)
        self.learner = ModuleLearners(learners)

    def build_module(self, observation_space: Any, action_space: Any) -> tuple[Any, Any, Any]:
        """(torch module, runners' policy constructor, learner) for these spaces."""
        raise NotImplementedError

    def training_step(self) -> dict[str, Any]:
        """Sample, update, and return the learner's stats; subclasses override."""
        raise NotImplementedError

    def current_lr(self) -> float:
        """The learning rate now: ``lr``, or its schedule's value at the sampled env steps."""
        return scheduled(self.config.lr, self.num_env_steps_sampled_lifetime)

    def act_kwargs(self) -> dict[str, Any]:
        """Extra arguments for the module's ``act`` (DQN passes its epsilon)."""
        return {}

    def runner_weights(self) -> dict[str, Any]:
        """What the env runners' policy needs of the weights (SAC leaves out its critics)."""
        return self.get_weights()

    def _runner_payload(self) -> dict[str, Any]:
        """``runner_weights()``, with the connectors' merged state when there is any."""
        weights = self.runner_weights()
        if self._runner_connectors:
            states = [c.get_state() for c in self._runner_connectors]
            weights = {**weights, CONNECTOR_STATES: states}
        return weights

    def get_extra_state(self) -> dict[str, Any]:
        return {}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        del state

    # --- sampling, shared by the algorithms ---------------------------------------------

    def sample(self, num_steps_per_env: int) -> list[dict[str, Any]]:
        """One round on every runner with the current weights (broadcast once).

        With ``sample_ahead`` the round returned is the one started at the previous call
        (sampled with the weights of then), and the next round starts right away with the
        current weights, so the runners sample while the caller trains.
        """
        group, c = self.env_runner_group, self.config
        args = (num_steps_per_env, c.explore, self.act_kwargs())
        if c.sample_ahead and group.local is None:
            if self._pending is None:
                self._pending = group.start_sample(self._runner_payload(), *args)
            batches = group.collect(self._pending)
            self._pending = group.start_sample(self._runner_payload(), *args)
        else:
            batches = group.sample(self._runner_payload(), *args)
        self.account(batches)
        if self.config.output:
            self.record(batches)
        return batches

    def record(self, batches: list[dict[str, Any]]) -> None:
        """Write the batches' transitions to ``config.output`` as Parquet (``runtime.data``).

        One row per transition: ``eps_id`` (the runner, env and episode; an episode cut by
        the end of a round continues under the same id), ``t``, ``obs``, ``actions``,
        ``rewards``, ``terminateds``, ``truncateds``, ``next_obs``, ``action_logp``.
        """
        from runtime import data

        rows: list[dict[str, Any]] = []
        for r, b in enumerate(batches):
            steps, envs = b["rewards"].shape
            for n in range(envs):
                key = (r, n)
                episode, t = self._recorded.get(key, (0, 0))
                for i in range(steps):
                    rows.append(
                        {
                            "eps_id": f"{id(self)}-{r}-{n}-{episode}",
                            "t": t,
                            "obs": np.asarray(b["obs"][i, n], np.float32).reshape(-1).tolist(),
                            "actions": np.asarray(b["actions"][i, n]).tolist(),
                            "rewards": float(b["rewards"][i, n]),
                            "terminateds": bool(b["terminateds"][i, n]),
                            "truncateds": bool(b["truncateds"][i, n]),
                            "next_obs": np.asarray(b["next_obs"][i, n], np.float32)
                            .reshape(-1)
                            .tolist(),
                            "action_logp": float(b["action_logp"][i, n])
                            if "action_logp" in b
                            else 0.0,
                        }
                    )
                    t += 1
                    if b["terminateds"][i, n] or b["truncateds"][i, n]:
                        episode, t = episode + 1, 0
                self._recorded[key] = (episode, t)
        if rows:
            data.from_items(rows).write_parquet(str(self.config.output))

    def account(self, batches: list[dict[str, Any]]) -> None:
        """Count the batches' env steps and episodes, and keep their episode figures,
        connector statistics and custom metrics for this iteration's result."""
        c = self.config
        window = -(-c.metrics_num_episodes_for_smoothing // max(1, c.num_env_runners))
        for batch in batches:
            if "metrics" in batch:
                self._runner_metrics.append(batch["metrics"])
            for kind in ("agent_episode_returns", "module_episode_returns"):
                for key, values in batch.get(kind, {}).items():
                    self._ma_returns.setdefault(kind, {}).setdefault(key, []).extend(values)
            for connector, delta in zip(
                self._runner_connectors, batch.get("connector_deltas", []), strict=False
            ):
                connector.merge_delta(delta)
            self.num_env_steps_sampled_lifetime += int(batch["env_steps"])
            self.num_episodes_lifetime += len(batch["episode_returns"])
            stats = runner_episode_stats(batch["episode_returns"], batch["episode_lens"], window)
            if stats is not None:
                self._runner_stats.append(stats)

    # --- the public API -----------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Run one iteration; the result has Ray's keys (nested, and flat ``a/b`` aliases).

        An iteration runs the training step at least once, and again until
        ``min_sample_timesteps_per_iteration`` env steps were sampled in it (as Ray's).
        """
        start = time.perf_counter()
        episodes_before = self.num_episodes_lifetime
        steps_before = self.num_env_steps_sampled_lifetime
        self._runner_stats = []
        self._runner_metrics = []
        self._ma_returns = {}
        interval = self.config.evaluation_interval
        will_evaluate = interval is not None and (self.iteration + 1) % interval == 0
        # In parallel: the evaluation actors run their episodes (with the weights of before
        # this iteration, as Ray's) while the training steps run.
        pending = (
            self._start_evaluation()
            if will_evaluate and self.config.evaluation_parallel_to_training
            else None
        )
        steps = [self.training_step()]
        while (
            self.num_env_steps_sampled_lifetime - steps_before
            < self.config.min_sample_timesteps_per_iteration
        ):
            steps.append(self.training_step())
        if self.is_multi_agent:
            learners = {
                mid: _merge_step_stats([step[mid] for step in steps if mid in step])
                for mid in self.modules
                if any(mid in step for step in steps)
            }
        else:
            learners = {"default_policy": _merge_step_stats(steps)}
        self.iteration += 1
        elapsed = time.perf_counter() - start
        self._time_total += elapsed
        runners = self._episode_stats()
        runners["num_episodes"] = self.num_episodes_lifetime - episodes_before
        runners["num_env_steps_sampled"] = self.num_env_steps_sampled_lifetime - steps_before
        runners["num_env_steps_sampled_lifetime"] = self.num_env_steps_sampled_lifetime
        runners.update(nest(merge_metrics(self._runner_metrics)))
        for kind, by_key in self._ma_returns.items():
            runners[f"{kind}_mean"] = {k: float(np.mean(v)) for k, v in by_key.items()}
        result: dict[str, Any] = {
            "training_iteration": self.iteration,
            "env_runners": runners,
            "learners": learners,
            "num_env_steps_sampled_lifetime": self.num_env_steps_sampled_lifetime,
            "num_env_steps_trained_lifetime": self.num_env_steps_trained_lifetime,
            "num_episodes_lifetime": self.num_episodes_lifetime,
            "num_healthy_workers": self.env_runner_group.num_healthy(),
            "num_env_runner_restarts": self.env_runner_group.num_restarts,
            "time_this_iter_s": elapsed,
            "time_total_s": self._time_total,
        }
        if will_evaluate:
            result["evaluation"] = (
                self._finish_evaluation(pending) if pending is not None else self.evaluate()
            )
        run_hooks(
            self.callbacks,
            "on_train_result",
            algorithm=self,
            metrics_logger=self.metrics,
            result=result,
        )
        result.update(nest(merge_metrics([self.metrics.drain()])))
        for key, value in list(result.items()):
            if isinstance(value, dict):
                result.update(_flatten(value, key + "/"))
        return result

    def _episode_stats(self) -> dict[str, Any]:
        return merge_runner_episode_stats(self._runner_stats)

    def evaluate(self) -> dict[str, Any]:
        """Evaluation episodes (greedy unless ``evaluation_config`` says ``explore=True``).

        In the driver, or split over the ``evaluation_num_env_runners`` actors (episodes or
        timesteps divided as evenly as they go). Returns ``{"env_runners": {...}}``.
        """
        return self._finish_evaluation(self._start_evaluation())

    def _start_evaluation(self) -> tuple[str, Any]:
        """Run (in the driver) or start (on the evaluation actors) an evaluation."""
        c = self.config
        run_hooks(self.callbacks, "on_evaluate_start", algorithm=self, metrics_logger=self.metrics)
        explore = bool(c.evaluation_config.get("explore", False))
        kwargs = self.act_kwargs()
        weights = self._runner_payload()
        if self._eval_actors:
            n = len(self._eval_actors)
            shares = [
                c.evaluation_duration // n + (i < c.evaluation_duration % n) for i in range(n)
            ]
            ref = runtime.put(weights)
            refs = [
                a.evaluate.remote(ref, share, c.evaluation_duration_unit, explore, kwargs)
                for a, share in zip(self._eval_actors, shares, strict=True)
                if share
            ]
            return "remote", refs
        # In the driver.
        if self._eval_runner is None:
            env_config = {**c.env_config, **c.evaluation_config.get("env_config", {})}
            runner_cls, runner_kwargs = self._runner_class()
            self._eval_runner = runner_cls(
                self.env_creator,
                env_config,
                1,
                self.actor_ctor,
                seed=c.seed,
                worker_index=0,
                callbacks=callbacks_blob(c),
                connectors=connectors_blob(c),
                **runner_kwargs,
            )
        out = self._eval_runner.evaluate(
            weights, c.evaluation_duration, c.evaluation_duration_unit, explore, kwargs
        )
        return "local", out

    def _finish_evaluation(self, pending: tuple[str, Any]) -> dict[str, Any]:
        """The evaluation result of ``_start_evaluation`` (waiting for the actors' episodes)."""
        kind, out = pending
        if kind == "remote":
            outs = runtime.get(out, timeout=self.config.sample_timeout_s)
            out = {
                "episode_returns": [r for o in outs for r in o["episode_returns"]],
                "episode_lens": [x for o in outs for x in o["episode_lens"]],
                "metrics": [m for o in outs for m in o.get("metrics", [])],
            }
        returns = out["episode_returns"] or [float("nan")]
        lens = out["episode_lens"] or [0]
        result: dict[str, Any] = {
            "env_runners": {
                "episode_return_mean": float(np.mean(returns)),
                "episode_return_min": float(np.min(returns)),
                "episode_return_max": float(np.max(returns)),
                "episode_len_mean": float(np.mean(lens)),
                "num_episodes": len(out["episode_returns"]),
                **nest(merge_metrics(out.get("metrics", []))),
            }
        }
        run_hooks(
            self.callbacks,
            "on_evaluate_end",
            algorithm=self,
            metrics_logger=self.metrics,
            evaluation_metrics=result,
        )
        return result

    def compute_single_action(
        self,
        observation: Any,
        state: dict[str, Any] | None = None,
        *,
        explore: bool | None = None,
        policy_id: str = "default_policy",
    ) -> Any:
        """The action for one observation (``explore=False``: the greedy/mean action).

        Box actions are clipped to the space's bounds (what the env runners step with).
        A recurrent module (``use_lstm``) needs ``state``: start an episode from
        ``algo.get_module().get_initial_state()`` and pass each call's new state to the
        next; the call then returns ``(action, state_out, {})``, as Ray's did.
        """
        if self._action_generator is None:
            self._action_generator = np.random.default_rng(self.config.seed)
        explore = self.config.explore if explore is None else bool(explore)
        space, action_space, module = self.env_observation_space, self.action_space, self.module
        if self.module_specs is not None:  # multi-agent: the module policy_id names
            module = self.get_module(policy_id)
            space, action_space = self.module_specs[policy_id]
        from gymnasium import spaces

        if isinstance(space, spaces.Box | spaces.Discrete):
            observation = np.asarray(observation, space.dtype)
        if not space.contains(observation):
            raise ValueError(
                f"observation {observation!r} is not in the env's observation space {space}"
            )
        batch = _batch_of_one(observation)
        for connector in self.env_to_module:  # a fresh episode's view, statistics unchanged
            batch = connector.transform_observations(batch, np.ones(1, bool), update=False)
        kwargs = self.act_kwargs()
        recurrent = getattr(module, "recurrent", False)
        if recurrent:
            if state is None:
                raise ValueError(
                    "the module is recurrent (use_lstm): pass state= (for a new episode, "
                    "algo.get_module().get_initial_state())"
                )
            kwargs["state"] = {k: np.asarray(v, np.float32)[None] for k, v in state.items()}
        elif state is not None:
            raise ValueError("state= is only for recurrent modules (use_lstm)")
        actions, extras = module.act(batch, explore, self._action_generator, **kwargs)
        for connector in self.module_to_env:
            actions = connector.transform_actions(actions)
        action = actions[0]

        if isinstance(action_space, spaces.Box):
            action = np.clip(action, action_space.low, action_space.high)
        else:
            action = int(action)
        if recurrent:
            return action, {k: v[0] for k, v in extras["state_out"].items()}, {}
        return action

    def get_module(self, module_id: str = "default_policy") -> Any:
        """The torch module being trained (Ray's ``RLModule``; one module, "default_policy").

        It has ``forward_inference({"obs": batch})`` (and ``forward_exploration``) giving
        ``action_dist_inputs`` as Ray's default modules do.
        """
        if self.modules:
            if module_id not in self.modules:
                raise KeyError(f"no module {module_id!r}; modules: {sorted(self.modules)}")
            return self.modules[module_id]
        if module_id != "default_policy":
            raise KeyError(f"no module {module_id!r}; the one module is 'default_policy'")
        return self.module

    def get_weights(self) -> dict[str, np.ndarray]:
        """The policy module's weights, as numpy arrays."""
        weights: dict[str, np.ndarray] = self.learner.get_weights()
        return weights

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Replace the policy's weights; runners get them with the next sampling round."""
        self.learner.set_weights(weights)
        self._pending = None

    # --- checkpoints --------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything ``restore`` needs: learner (weights, optimizer), counters, RNG."""
        return {
            "learner": self.learner.get_state(),
            "iteration": self.iteration,
            "num_env_steps_sampled_lifetime": self.num_env_steps_sampled_lifetime,
            "num_env_steps_trained_lifetime": self.num_env_steps_trained_lifetime,
            "num_episodes_lifetime": self.num_episodes_lifetime,
            "time_total_s": self._time_total,
            "rng": self._rng.bit_generator.state,
            "extra": self.get_extra_state(),
            "connectors": [c.get_state() for c in self.env_to_module],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.learner.set_state(state["learner"])
        # This algorithm's config decides the lr, not the checkpoint's (a PBT trial that
        # cloned another trial's checkpoint keeps its own, explored lr).
        if getattr(self.config, "lr", None) is not None:
            self.learner.set_lr(self.current_lr())
        self.iteration = int(state["iteration"])
        self.num_env_steps_sampled_lifetime = int(state["num_env_steps_sampled_lifetime"])
        self.num_env_steps_trained_lifetime = int(state["num_env_steps_trained_lifetime"])
        self.num_episodes_lifetime = int(state["num_episodes_lifetime"])
        self._time_total = float(state["time_total_s"])
        self._pending = None  # a round in flight was sampled with the weights replaced here
        self._rng.bit_generator.state = state["rng"]
        self.set_extra_state(state.get("extra", {}))
        for connector, connector_state in zip(
            self.env_to_module, state.get("connectors", []), strict=False
        ):
            connector.set_state(connector_state)

    def save(self, checkpoint_dir: str | os.PathLike[str] | None = None) -> SaveResult:
        """Write a checkpoint directory (a new temp dir when none is given)."""
        path = os.fspath(checkpoint_dir) if checkpoint_dir else tempfile.mkdtemp(prefix="rllib-")
        self.save_to_path(path)
        metrics = {"training_iteration": self.iteration}
        return SaveResult(CheckpointRef(os.path.abspath(path)), metrics)

    def save_to_path(self, path: str | os.PathLike[str]) -> str:
        """Write the checkpoint into ``path``; returns it."""
        import cloudpickle

        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        blob = {
            "algorithm_class": _class_path(type(self)),
            "config": self.config.to_dict(),
            "state": self.get_state(),
        }
        tmp = os.path.join(path, STATE_FILE + ".tmp")
        with open(tmp, "wb") as f:
            cloudpickle.dump(blob, f)
        os.replace(tmp, os.path.join(path, STATE_FILE))
        with open(os.path.join(path, META_FILE), "w") as f:
            json.dump(
                {
                    "type": "Algorithm",
                    "algorithm_class": blob["algorithm_class"],
                    "training_iteration": self.iteration,
                    "format": "runtime.rllib/1",
                },
                f,
            )
        return path

    @staticmethod
    def _read_checkpoint(path: Any) -> dict[str, Any]:
        path = os.fspath(getattr(path, "path", path))
        file = os.path.join(path, STATE_FILE)
        if not os.path.exists(file):
            raise FileNotFoundError(
                f"{path!r} is not an rllib checkpoint (no {STATE_FILE}); pass the directory "
                "that Algorithm.save returned"
            )
        with open(file, "rb") as f:
            blob: dict[str, Any] = pickle.load(f)
        return blob

    @classmethod
    def from_checkpoint(cls, path: Any, **overrides: Any) -> Algorithm:
        """A new algorithm (runners started) in the state saved at ``path``.

        ``overrides`` replace saved settings, e.g. ``num_env_runners=0`` to evaluate in
        this process without starting actors.
        """
        blob = cls._read_checkpoint(path)
        algo_cls = cls
        if cls is Algorithm or not issubclass(_load_class(blob["algorithm_class"]), cls):
            algo_cls = _load_class(blob["algorithm_class"])
        config = algo_cls.config_class.from_dict(blob["config"]).update_from_dict(overrides)
        algo = algo_cls(config=config)
        algo.set_state(blob["state"])
        run_hooks(algo.callbacks, "on_checkpoint_loaded", algorithm=algo)
        return algo

    def restore(self, path: Any) -> None:
        """Load the state saved at ``path`` into this algorithm (weights, optimizer, counters)."""
        state = path if isinstance(path, dict) else self._read_checkpoint(path)["state"]
        self.set_state(state)
        run_hooks(self.callbacks, "on_checkpoint_loaded", algorithm=self)

    def restore_from_path(self, path: Any) -> None:
        """Ray's name for ``restore``: load the checkpoint directory at ``path``."""
        self.restore(path)

    def stop(self) -> None:
        """Stop the env runners and learner actors (the actors are killed)."""
        stop_learners = getattr(getattr(self, "learner", None), "stop", None)
        if stop_learners is not None:
            stop_learners()
        group = getattr(self, "env_runner_group", None)
        if group is not None:
            group.stop()
        for runner in self._eval_actors:
            try:
                runtime.kill(runner, no_restart=True)
            except Exception:
                logger.debug("killing an evaluation runner at stop", exc_info=True)
        self._eval_actors = []
        if self._eval_runner is not None:
            self._eval_runner.stop()
            self._eval_runner = None

    # --- Tune's class-trainable shape ---------------------------------------------------

    def step(self) -> dict[str, Any]:
        """One Tune iteration (``train()``)."""
        return self.train()

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """Tune: write the checkpoint into the directory Tune gives."""
        self.save_to_path(checkpoint_dir)

    def load_checkpoint(self, checkpoint: Any) -> None:
        """Tune: restore from the directory ``save_checkpoint`` wrote."""
        self.restore(checkpoint)

    def cleanup(self) -> None:
        """Tune: the trial ended."""
        self.stop()

    def __enter__(self) -> Algorithm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(env={self.config.env!r}, iteration={self.iteration})"


def _batch_of_one(observation: Any) -> Any:
    """A batch of one observation (a Dict/Tuple one as a dict/tuple of batched arrays)."""
    if isinstance(observation, dict):
        return {k: _batch_of_one(v) for k, v in observation.items()}
    if isinstance(observation, tuple):
        return tuple(_batch_of_one(v) for v in observation)
    return np.asarray(observation)[None]


def _no_actor() -> Any:
    raise NotImplementedError("the algorithm's setup() must set actor_ctor")


def runner_episode_stats(
    returns: list[float], lens: list[int], window: int
) -> tuple[float, float, float, float] | None:
    """One runner's figures for one sampling round: (mean, min, max return, mean length).

    Ray RLlib 2.60's EnvRunner logs each episode it finishes into windows of ``window =
    ceil(metrics_num_episodes_for_smoothing / num_env_runners)`` values and reduces -- and
    thereby clears -- them at the end of every ``sample()`` call, so a runner's figure is
    over at most its last ``window`` episodes finished in that round. ``None``: it finished
    none (Ray's NaN, which the Algorithm's ``nanmean`` skips).
    """
    if not returns:
        return None
    returns, lens = returns[-window:], lens[-window:]
    return float(np.mean(returns)), min(returns), max(returns), float(np.mean(lens))


def merge_runner_episode_stats(
    stats: list[tuple[float, float, float, float]],
) -> dict[str, float]:
    """An iteration's ``env_runners`` episode figures from its runners' round figures.

    As Ray's Algorithm merges its runners' metrics: ``episode_return_mean`` is the mean of
    the per-runner (per-round) means -- not of the episodes, and nothing carries over from
    earlier iterations -- min and max are over the runners' windows, and every figure is
    NaN in an iteration where no runner finished an episode.
    """
    if not stats:
        nan = float("nan")
        return {
            "episode_return_mean": nan,
            "episode_return_min": nan,
            "episode_return_max": nan,
            "episode_len_mean": nan,
        }
    means, mins, maxs, lens = zip(*stats, strict=True)
    return {
        "episode_return_mean": float(np.mean(means)),
        "episode_return_min": float(np.min(mins)),
        "episode_return_max": float(np.max(maxs)),
        "episode_len_mean": float(np.mean(lens)),
    }


#: Learner stats that describe the state after the iteration (the last step's value is kept).
_LAST_VALUE_STATS = frozenset(
    {
        "epsilon",
        "replay_buffer_size",
        "num_target_updates",
        "curr_lr",
        "vf_explained_var",
        "curr_kl_coeff",
        "curr_entropy_coeff",
        "alpha_value",
    }
)


def _merge_step_stats(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """One iteration's learner stats from its training steps: means, counts summed."""
    if len(steps) == 1:
        return steps[0]
    out: dict[str, Any] = {}
    for key in {k for step in steps for k in step}:
        values = [step[key] for step in steps if key in step]
        if key in _LAST_VALUE_STATS:
            out[key] = values[-1]
        elif key.startswith("num_"):
            out[key] = sum(values)
        else:
            out[key] = float(np.mean(values))
    return out


def _flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[prefix + str(key)] = value
    return out


def _class_path(cls: type) -> str:
    """``module:qualname`` of the first importable class in ``cls``'s MRO."""
    for klass in cls.__mro__:
        try:
            module = importlib.import_module(klass.__module__)
        except ImportError:
            continue
        if getattr(module, klass.__qualname__, None) is klass:
            return f"{klass.__module__}:{klass.__qualname__}"
    raise TypeError(f"cannot find an importable class for {cls!r}")


def _load_class(path: str) -> type[Algorithm]:
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise TypeError(f"{path} is not an Algorithm class")
    return cls
