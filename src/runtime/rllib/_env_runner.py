"""Env runners: actors that step a vector env with the latest weights and return batches.

Each iteration the algorithm puts its weights in the object store once and passes that one
ref to every runner's ``sample`` call (the runtime resolves it before the call runs), and
each runner returns its batch of numpy arrays through the object store. A runner that died
(its actor or node is gone, or it did not answer in ``sample_timeout_s``) is replaced by a
new actor when ``restart_failed_env_runners`` is on, and the iteration goes on with the
batches of the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import runtime
from runtime.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    GetTimeoutError,
    NodeDiedError,
)

__all__ = [
    "CONNECTOR_STATES",
    "EnvRunner",
    "EnvRunnerGroup",
    "PendingSample",
    "callbacks_blob",
    "connectors_blob",
]

logger = logging.getLogger(__name__)

#: Failures that mean "this runner is gone", as opposed to an error raised by the env itself.
RUNNER_FAILURES = (ActorDiedError, ActorUnavailableError, NodeDiedError, GetTimeoutError)


class EnvRunner:
    """Steps ``num_envs`` copies of the env with a numpy copy of the policy.

    ``actor_ctor()`` builds the policy (a ``_numpy_policy`` class: torch-free, so a runner
    never imports torch); it has ``set_weights(weights)`` and ``act(obs, explore, rng,
    **act_kwargs) -> (actions, extras)``. Sampling randomness comes from this runner's own
    numpy generator, seeded from the config's seed and the runner's index, so a seeded run on
    one runner repeats exactly.
    """

    def __init__(
        self,
        env_creator: Callable[[dict[str, Any]], Any] | bytes,
        env_config: dict[str, Any],
        num_envs: int,
        actor_ctor: Callable[[], Any] | bytes,
        *,
        seed: int | None,
        worker_index: int,
        callbacks: bytes | None = None,
        connectors: bytes | None = None,
    ):
        import pickle

        from runtime.rllib._env import make_vector_env
        from runtime.rllib._metrics import MetricsLogger
        from runtime.rllib.callbacks.callbacks import make_callbacks

        # Remote runners get the creators pickled, so that unpickling them (which imports
        # gymnasium, and whatever a user's env needs) happens here, off the node's event loop.
        if isinstance(env_creator, bytes):
            env_creator = pickle.loads(env_creator)
        if isinstance(actor_ctor, bytes):
            actor_ctor = pickle.loads(actor_ctor)
        assert callable(env_creator) and callable(actor_ctor)
        self.env = make_vector_env(env_creator, env_config, num_envs)
        # Connector pipelines (see runtime.rllib.connectors): FlattenObservations becomes a
        # wrapper of every env; the others run on the batched observations and actions.
        self.env_to_module: list[Any] = []
        self.module_to_env: list[Any] = []
        if connectors:
            from runtime.rllib.connectors.connector_v2 import build_pipeline, flatten_wrapped

            to_module, to_env = pickle.loads(connectors)
            self.env_to_module = build_pipeline(to_module, self.env)
            self.module_to_env = build_pipeline(to_env, self.env)
            if any(getattr(c, "env_wrapper", False) for c in self.env_to_module):
                self.env.close()
                self.env = make_vector_env(flatten_wrapped(env_creator), env_config, num_envs)
                self.env_to_module = [
                    c for c in self.env_to_module if not getattr(c, "env_wrapper", False)
                ]
            space = self.env.single_observation_space
            for connector in self.env_to_module:
                space = connector.recompute_output_observation_space(space)
        self.num_envs = num_envs
        self.module = actor_ctor()
        # A recurrent policy (use_lstm): each env's state, zeroed when its episode starts.
        self.rnn_state: dict[str, np.ndarray] | None = (
            self.module.initial_state(num_envs)
            if getattr(self.module, "is_recurrent", False)
            else None
        )
        self.seed = seed
        self.worker_index = worker_index
        if seed is None:
            self.rng = np.random.default_rng()
            self.obs, _ = self.env.reset()
        else:
            self.rng = np.random.default_rng([seed, worker_index])
            base = seed * 10_007 + worker_index * 101
            self.obs, _ = self.env.reset(seed=[base + i for i in range(num_envs)])
        self.action_space = self.env.single_action_space
        self.ep_return = np.zeros(num_envs, dtype=np.float64)
        self.ep_len = np.zeros(num_envs, dtype=np.int64)
        self.starts = np.ones(num_envs, dtype=bool)  # which env's obs begins an episode
        # Callbacks (their own instances in this runner) and the episodes they are shown,
        # recorded only when there are callbacks.
        self.callbacks = make_callbacks(*pickle.loads(callbacks)) if callbacks else []
        self.metrics = MetricsLogger()
        self.episodes: list[Any] = []
        if self.callbacks:
            self._hooks("on_environment_created", env=self.env, env_context=dict(env_config))
            self._start_episodes(range(num_envs), self.obs, {})

    def _hooks(self, hook: str, **kwargs: Any) -> None:
        from runtime.rllib.callbacks.callbacks import run_hooks

        run_hooks(self.callbacks, hook, env_runner=self, metrics_logger=self.metrics, **kwargs)

    def _start_episodes(self, indices: Any, obs: Any, infos: dict[str, Any]) -> None:
        from runtime.rllib.env.single_agent_episode import SingleAgentEpisode

        if not self.episodes:
            self.episodes = [None] * self.num_envs
        for i in indices:
            episode = SingleAgentEpisode(obs[i], _env_info(infos, i))
            self.episodes[i] = episode
            self._hooks("on_episode_created", episode=episode, env_index=int(i))
            self._hooks(
                "on_episode_start",
                episode=episode,
                env=self.env,
                env_index=int(i),
                rl_module=self.module,
            )

    def ping(self) -> bool:
        return True

    def has_imported(self, module: str) -> bool:
        """Whether ``module`` is imported in this runner's process (runners never need torch)."""
        import sys

        return module in sys.modules

    def set_weights(self, weights: dict[str, Any] | None) -> None:
        if weights is not None:
            if CONNECTOR_STATES in weights:
                weights = dict(weights)
                for connector, state in zip(
                    self.env_to_module, weights.pop(CONNECTOR_STATES), strict=True
                ):
                    connector.set_state(state)
            self.module.set_weights(weights)

    def _to_module(self, obs: Any, starts: np.ndarray, update: bool = True) -> Any:
        for connector in self.env_to_module:
            obs = connector.transform_observations(obs, starts, update=update)
        return obs

    def _env_actions(self, actions: np.ndarray) -> np.ndarray:
        from gymnasium import spaces

        for connector in self.module_to_env:
            actions = connector.transform_actions(actions)
        if isinstance(self.action_space, spaces.Box):
            return np.clip(actions, self.action_space.low, self.action_space.high)
        return actions

    def sample(
        self,
        weights: dict[str, Any] | None,
        num_steps: int,
        explore: bool = True,
        act_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Take ``num_steps`` steps in every env; arrays are ``[num_steps, num_envs, ...]``.

        ``next_obs`` is the true next observation (the last one of an episode that ended,
        not the first one of the next), so a learner can bootstrap truncated episodes.
        """
        self.set_weights(weights)
        kwargs = act_kwargs or {}
        cols: dict[str, list[Any]] = {
            k: [] for k in ("obs", "actions", "rewards", "terminateds", "truncateds", "next_obs")
        }
        extras: dict[str, list[Any]] = {}
        returns: list[float] = []
        lengths: list[int] = []
        finished: list[Any] = []
        for _ in range(num_steps):
            obs = self._to_module(self.obs, self.starts)
            if self.rnn_state is None:
                actions, extra = self.module.act(obs, explore, self.rng, **kwargs)
            else:
                actions, extra = self._act_recurrent(obs, explore, kwargs, extras)
            next_obs, rewards, terms, truncs, infos = self.env.step(self._env_actions(actions))
            done = np.logical_or(terms, truncs)
            real_next = np.array(next_obs, copy=True)
            if done.any():
                final = infos["final_obs"]
                for i in np.flatnonzero(done):
                    real_next[i] = final[i]
            self.starts = done
            cols["obs"].append(obs)
            cols["actions"].append(actions)
            cols["rewards"].append(np.asarray(rewards, dtype=np.float32))
            cols["terminateds"].append(np.asarray(terms, dtype=bool))
            cols["truncateds"].append(np.asarray(truncs, dtype=bool))
            cols["next_obs"].append(
                self._to_module(real_next, np.zeros_like(done), update=False)
                if self.env_to_module
                else real_next
            )
            for k, v in extra.items():
                extras.setdefault(k, []).append(v)
            self.ep_return += rewards
            self.ep_len += 1
            if self.callbacks:
                finished += self._episode_steps(actions, rewards, terms, truncs, real_next, infos)
            for i in np.flatnonzero(done):
                returns.append(float(self.ep_return[i]))
                lengths.append(int(self.ep_len[i]))
                self.ep_return[i] = 0.0
                self.ep_len[i] = 0
            if self.callbacks and done.any():
                self._start_episodes(np.flatnonzero(done), next_obs, infos)
            self.obs = next_obs
        batch: dict[str, Any] = {k: np.stack(v) for k, v in {**cols, **extras}.items()}
        batch["episode_returns"] = returns
        batch["episode_lens"] = lengths
        batch["env_steps"] = num_steps * self.num_envs
        if self.callbacks:
            self._hooks("on_sample_end", samples=finished)
            batch["metrics"] = self.metrics.drain()
        if self.env_to_module:
            batch["connector_deltas"] = [c.pop_delta() for c in self.env_to_module]
        return batch

    def _act_recurrent(
        self, obs: Any, explore: bool, kwargs: dict[str, Any], extras: dict[str, list[Any]]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Act with the recurrent state; record the state each step began from, and where
        episodes began (``state_in_h``/``state_in_c``, ``starts``: the learner's sequences
        start from these)."""
        assert self.rnn_state is not None
        keep = ~self.starts[:, None]
        state = {k: np.where(keep, v, 0.0).astype(np.float32) for k, v in self.rnn_state.items()}
        actions, extra = self.module.act(obs, explore, self.rng, state=state, **kwargs)
        extra = dict(extra)
        self.rnn_state = extra.pop("state_out")
        for k, v in state.items():
            extras.setdefault(f"state_in_{k}", []).append(v)
        extras.setdefault("starts", []).append(np.array(self.starts, dtype=bool))
        return actions, extra

    def _episode_steps(  # noqa: PLR0917 -- one step's columns, as env.step returns them
        self,
        actions: np.ndarray,
        rewards: Any,
        terms: Any,
        truncs: Any,
        real_next: np.ndarray,
        infos: dict[str, Any],
    ) -> list[Any]:
        """Record one step in every env's episode; run the step/end hooks; the ended ones."""
        ended = []
        for i, episode in enumerate(self.episodes):
            episode.add_env_step(
                real_next[i],
                actions[i],
                float(rewards[i]),
                terminated=bool(terms[i]),
                truncated=bool(truncs[i]),
                info=_env_info(infos, i),
            )
            hook = "on_episode_end" if episode.is_done else "on_episode_step"
            self._hooks(hook, episode=episode, env=self.env, env_index=i, rl_module=self.module)
            if episode.is_done:
                ended.append(episode)
        return ended

    def sample_episodes(
        self,
        weights: dict[str, Any] | None,
        num_episodes: int,
        explore: bool = False,
        act_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run whole episodes from fresh resets (evaluation); returns their returns and lengths."""
        self.set_weights(weights)
        if self.seed is None:
            self.obs, _ = self.env.reset()
        else:
            base = self.seed * 10_007 + self.worker_index * 101
            self.obs, _ = self.env.reset(seed=[base + i for i in range(self.num_envs)])
        self.ep_return[:] = 0.0
        self.ep_len[:] = 0
        self.starts[:] = True
        if self.callbacks:
            self._start_episodes(range(self.num_envs), self.obs, {})
        returns: list[float] = []
        lengths: list[int] = []
        metrics = []
        while len(returns) < num_episodes:
            out = self.sample(None, 1, explore, act_kwargs)
            returns += out["episode_returns"]
            lengths += out["episode_lens"]
            metrics.append(out.get("metrics", {}))
        return {
            "episode_returns": returns[:num_episodes],
            "episode_lens": lengths[:num_episodes],
            "metrics": metrics,
        }

    def evaluate(
        self,
        weights: dict[str, Any] | None,
        duration: int,
        unit: str,
        explore: bool = False,
        act_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``duration`` episodes, or ``duration`` steps, from a fresh (seeded) reset."""
        if unit == "episodes":
            return self.sample_episodes(weights, duration, explore, act_kwargs)
        self.sample_episodes(weights, 0, explore)  # a fresh, seeded reset
        out = self.sample(None, -(-duration // self.num_envs), explore, act_kwargs)
        return {
            "episode_returns": out["episode_returns"],
            "episode_lens": out["episode_lens"],
            "metrics": [out.get("metrics", {})],
        }

    def stop(self) -> None:
        self.env.close()


def _env_info(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Env ``i``'s info dict out of a vector env's (keys with their ``_key`` masks)."""
    out = {}
    for key, value in infos.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        mask = infos.get("_" + key)
        if mask is None or mask[i]:
            out[key] = value[i]
    return out


@dataclass
class PendingSample:
    """A sampling round in flight: what each runner was asked, and the refs to its batches."""

    weights_ref: Any
    num_steps: int
    explore: bool
    kw: dict[str, Any] | None
    refs: list[Any]
    batches: list[dict[str, Any]] | None = None


#: The key under which the driver's connector states travel with the weights.
CONNECTOR_STATES = "__connectors__"


def connectors_blob(config: Any) -> bytes | None:
    """The configured connector factories, pickled for the runners (None when none)."""
    if config.env_to_module_connector is None and config.module_to_env_connector is None:
        return None
    import cloudpickle

    blob: bytes = cloudpickle.dumps(
        (config.env_to_module_connector, config.module_to_env_connector)
    )
    return blob


def callbacks_blob(config: Any) -> bytes | None:
    """The configured callbacks, pickled for the runners (None when there are none)."""
    if not (config.callbacks_class or config.callbacks_functions):
        return None
    import cloudpickle

    blob: bytes = cloudpickle.dumps((config.callbacks_class, config.callbacks_functions))
    return blob


class EnvRunnerGroup:
    """The algorithm's runners: ``num_env_runners`` actors, or one local runner when it is 0."""

    def __init__(
        self,
        config: Any,
        env_creator: Callable[[dict[str, Any]], Any],
        actor_ctor: Callable[[], Any],
        runner_cls: type | None = None,
        runner_kwargs: dict[str, Any] | None = None,
    ):
        self.config = config
        #: The runner class (``EnvRunner``, or ``MultiAgentEnvRunner`` for a multi-agent env)
        #: and extra keyword arguments every runner gets.
        self.runner_cls: type = runner_cls or EnvRunner
        self.runner_kwargs = dict(runner_kwargs or {})
        self.env_creator = env_creator
        self.actor_ctor = actor_ctor
        self.num_restarts = 0
        self.local: Any = None
        self.runners: list[Any] = []
        #: Called with the 1-based indices of runners replaced in a round.
        self.on_recreated: Callable[[list[int]], None] | None = None
        self.callbacks_blob = callbacks_blob(config)
        self.connectors_blob = connectors_blob(config)
        if config.num_env_runners == 0:
            self.local = self._local_runner(0)
        else:
            import cloudpickle

            self._remote_cls: Any = runtime.remote(self.runner_cls)
            self._blobs = (cloudpickle.dumps(env_creator), cloudpickle.dumps(actor_ctor))
            self.runners = [self._start(i + 1) for i in range(config.num_env_runners)]
            # Wait until every runner is up, so a bad env fails build() rather than train().
            runtime.get([r.ping.remote() for r in self.runners], timeout=config.sample_timeout_s)

    def _local_runner(self, index: int) -> Any:
        c = self.config
        return self.runner_cls(
            self.env_creator,
            c.env_config,
            c.num_envs_per_env_runner,
            self.actor_ctor,
            seed=c.seed,
            worker_index=index,
            callbacks=self.callbacks_blob,
            connectors=self.connectors_blob,
            **self.runner_kwargs,
        )

    def _start(self, index: int) -> Any:
        c = self.config
        seed = None if c.seed is None else c.seed + 7919 * self.num_restarts
        return self._remote_cls.options(num_cpus=c.num_cpus_per_env_runner).remote(
            self._blobs[0],
            c.env_config,
            c.num_envs_per_env_runner,
            self._blobs[1],
            seed=seed,
            worker_index=index,
            callbacks=self.callbacks_blob,
            connectors=self.connectors_blob,
            **self.runner_kwargs,
        )

    def num_healthy(self) -> int:
        return 1 if self.local is not None else len(self.runners)

    def sample(
        self,
        weights: dict[str, Any],
        num_steps: int,
        explore: bool = True,
        act_kwargs: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """One round: every runner samples ``num_steps`` per env with ``weights``.

        The weights are put in the object store once and the same ref goes to every runner.
        Runners that failed are replaced; the round returns the batches of the others (and
        samples again if none survived).
        """
        return self.collect(self.start_sample(weights, num_steps, explore, act_kwargs))

    def start_sample(
        self,
        weights: dict[str, Any],
        num_steps: int,
        explore: bool = True,
        act_kwargs: dict[str, Any] | None = None,
    ) -> PendingSample:
        """Start a round on every runner without waiting for it; ``collect`` gets the batches.

        With no remote runners the local runner samples right here (there is nothing to
        overlap with).
        """
        if self.local is not None:
            self.local.set_weights(weights)
            batch = self.local.sample(None, num_steps, explore, act_kwargs)
            return PendingSample(None, num_steps, explore, act_kwargs, [], [batch])
        pending = PendingSample(runtime.put(weights), num_steps, explore, act_kwargs, [])
        self._launch(pending)
        return pending

    def _launch(self, pending: PendingSample) -> None:
        pending.refs = [
            r.sample.remote(pending.weights_ref, pending.num_steps, pending.explore, pending.kw)
            for r in self.runners
        ]

    def collect(self, pending: PendingSample) -> list[dict[str, Any]]:
        """The batches of a round ``start_sample`` began (replacing runners that failed)."""
        if pending.batches is not None:
            return pending.batches
        for _attempt in range(3):
            batches: list[dict[str, Any]] = []
            failed: list[tuple[int, BaseException]] = []
            for index, ref in enumerate(pending.refs):
                try:
                    batches.append(runtime.get(ref, timeout=self.config.sample_timeout_s))
                except RUNNER_FAILURES as exc:
                    failed.append((index, exc))
            for index, error in failed:
                self._replace(index, error)
            if failed and self.on_recreated is not None:
                self.on_recreated([index + 1 for index, _ in failed])
            if batches:
                return batches
            self._launch(pending)
        raise RuntimeError("every env runner failed three sampling rounds in a row")

    def _replace(self, index: int, exc: BaseException) -> None:
        c = self.config
        if not c.restart_failed_env_runners:
            raise RuntimeError(
                f"env runner {index + 1} failed ({type(exc).__name__}: {exc}); set "
                ".fault_tolerance(restart_failed_env_runners=True) to replace it and go on"
            ) from exc
        if self.num_restarts >= c.max_num_env_runner_restarts:
            raise RuntimeError(
                f"env runner {index + 1} failed ({exc}) and the {c.max_num_env_runner_restarts} "
                "allowed restarts (max_num_env_runner_restarts) are used up"
            ) from exc
        logger.warning("env runner %d failed (%s); starting a new one", index + 1, exc)
        try:
            runtime.kill(self.runners[index], no_restart=True)
        except Exception:
            logger.debug("killing the failed runner", exc_info=True)
        self.num_restarts += 1
        self.runners[index] = self._start(index + 1)

    def foreach_runner(self, method: str, *args: Any) -> list[Any]:
        """Call ``method`` on every runner (or the local one) and wait for the results."""
        if self.local is not None:
            return [getattr(self.local, method)(*args)]
        refs = [getattr(r, method).remote(*args) for r in self.runners]
        return list(runtime.get(refs, timeout=self.config.sample_timeout_s))

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop()
        for runner in self.runners:
            try:
                runtime.kill(runner, no_restart=True)
            except Exception:
                logger.debug("killing a runner at stop", exc_info=True)
        self.runners = []
