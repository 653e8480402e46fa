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

__all__ = ["EnvRunner", "EnvRunnerGroup", "PendingSample"]

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
    ):
        import pickle

        from runtime.rllib._env import make_vector_env

        # Remote runners get the creators pickled, so that unpickling them (which imports
        # gymnasium, and whatever a user's env needs) happens here, off the node's event loop.
        if isinstance(env_creator, bytes):
            env_creator = pickle.loads(env_creator)
        if isinstance(actor_ctor, bytes):
            actor_ctor = pickle.loads(actor_ctor)
        assert callable(env_creator) and callable(actor_ctor)
        self.env = make_vector_env(env_creator, env_config, num_envs)
        self.num_envs = num_envs
        self.module = actor_ctor()
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

    def ping(self) -> bool:
        return True

    def has_imported(self, module: str) -> bool:
        """Whether ``module`` is imported in this runner's process (runners never need torch)."""
        import sys

        return module in sys.modules

    def set_weights(self, weights: dict[str, Any] | None) -> None:
        if weights is not None:
            self.module.set_weights(weights)

    def _env_actions(self, actions: np.ndarray) -> np.ndarray:
        from gymnasium import spaces

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
        for _ in range(num_steps):
            actions, extra = self.module.act(self.obs, explore, self.rng, **kwargs)
            next_obs, rewards, terms, truncs, infos = self.env.step(self._env_actions(actions))
            done = np.logical_or(terms, truncs)
            real_next = np.array(next_obs, copy=True)
            if done.any():
                final = infos["final_obs"]
                for i in np.flatnonzero(done):
                    real_next[i] = final[i]
            cols["obs"].append(self.obs)
            cols["actions"].append(actions)
            cols["rewards"].append(np.asarray(rewards, dtype=np.float32))
            cols["terminateds"].append(np.asarray(terms, dtype=bool))
            cols["truncateds"].append(np.asarray(truncs, dtype=bool))
            cols["next_obs"].append(real_next)
            for k, v in extra.items():
                extras.setdefault(k, []).append(v)
            self.ep_return += rewards
            self.ep_len += 1
            for i in np.flatnonzero(done):
                returns.append(float(self.ep_return[i]))
                lengths.append(int(self.ep_len[i]))
                self.ep_return[i] = 0.0
                self.ep_len[i] = 0
            self.obs = next_obs
        batch: dict[str, Any] = {k: np.stack(v) for k, v in {**cols, **extras}.items()}
        batch["episode_returns"] = returns
        batch["episode_lens"] = lengths
        batch["env_steps"] = num_steps * self.num_envs
        return batch

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
        returns: list[float] = []
        lengths: list[int] = []
        while len(returns) < num_episodes:
            out = self.sample(None, 1, explore, act_kwargs)
            returns += out["episode_returns"]
            lengths += out["episode_lens"]
        return {"episode_returns": returns[:num_episodes], "episode_lens": lengths[:num_episodes]}

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
        return {"episode_returns": out["episode_returns"], "episode_lens": out["episode_lens"]}

    def stop(self) -> None:
        self.env.close()


@dataclass
class PendingSample:
    """A sampling round in flight: what each runner was asked, and the refs to its batches."""

    weights_ref: Any
    num_steps: int
    explore: bool
    kw: dict[str, Any] | None
    refs: list[Any]
    batches: list[dict[str, Any]] | None = None


class EnvRunnerGroup:
    """The algorithm's runners: ``num_env_runners`` actors, or one local runner when it is 0."""

    def __init__(
        self,
        config: Any,
        env_creator: Callable[[dict[str, Any]], Any],
        actor_ctor: Callable[[], Any],
    ):
        self.config = config
        self.env_creator = env_creator
        self.actor_ctor = actor_ctor
        self.num_restarts = 0
        self.local: EnvRunner | None = None
        self.runners: list[Any] = []
        if config.num_env_runners == 0:
            self.local = self._local_runner(0)
        else:
            import cloudpickle

            self._remote_cls = runtime.remote(EnvRunner)
            self._blobs = (cloudpickle.dumps(env_creator), cloudpickle.dumps(actor_ctor))
            self.runners = [self._start(i + 1) for i in range(config.num_env_runners)]
            # Wait until every runner is up, so a bad env fails build() rather than train().
            runtime.get([r.ping.remote() for r in self.runners], timeout=config.sample_timeout_s)

    def _local_runner(self, index: int) -> EnvRunner:
        c = self.config
        return EnvRunner(
            self.env_creator,
            c.env_config,
            c.num_envs_per_env_runner,
            self.actor_ctor,
            seed=c.seed,
            worker_index=index,
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
