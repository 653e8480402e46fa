"""AlgorithmConfig: the builder every algorithm's config extends (plain data, no torch).

A config is a bag of attributes set through builder methods that return ``self``
(``.environment(...)``, ``.env_runners(...)``, ``.training(...)``, ...), as in Ray RLlib.
``to_dict()`` gives a flat dict of those attributes (what Tune searches over) and
``from_dict()`` reads one back, so ``tune.run("PPO", config=PPOConfig().to_dict())`` and
``PPOConfig().build()`` build the same algorithm.
"""

from __future__ import annotations

import copy
import itertools
import logging
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

#: Ray RLlib 2.60's options of each builder method. Those a builder here does not take are
#: refused by name with ``NotImplementedError`` (never silently dropped); a name that is not
#: Ray's either is a ``TypeError`` (a typo).
RAY_OPTIONS: dict[str, frozenset[str]] = {
    method: frozenset(names.split())
    for method, names in {
        "environment": "env env_config observation_space action_space render_env clip_rewards "
        "normalize_actions clip_actions disable_env_checking is_atari action_mask_key "
        "env_task_fn",
        "env_runners": "env_runner_cls num_env_runners create_local_env_runner "
        "create_env_on_local_worker num_envs_per_env_runner gym_env_vectorize_mode "
        "num_cpus_per_env_runner num_gpus_per_env_runner custom_resources_per_env_runner "
        "validate_env_runners_after_construction sample_timeout_s "
        "max_requests_in_flight_per_env_runner env_to_module_connector "
        "module_to_env_connector add_default_connectors_to_env_to_module_pipeline "
        "add_default_connectors_to_module_to_env_pipeline episode_lookback_horizon "
        "merge_env_runner_states broadcast_env_runner_states use_env_runner_state_server "
        "env_runner_state_server_max_concurrency compress_observations "
        "rollout_fragment_length batch_mode explore episodes_to_numpy "
        "use_worker_filter_stats update_worker_filter_stats exploration_config "
        "sample_collector remote_worker_envs remote_env_batch_wait_ms preprocessor_pref "
        "observation_filter enable_tf1_exec_eagerly sampler_perf_stats_ema_coef "
        "num_rollout_workers num_envs_per_worker validate_workers_after_construction "
        "ignore_worker_failures recreate_failed_workers restart_failed_sub_environments "
        "num_consecutive_worker_failures_tolerance worker_health_probe_timeout_s "
        "worker_restore_timeout_s synchronize_filter enable_connectors",
        "learners": "num_learners num_cpus_per_learner num_gpus_per_learner "
        "custom_resources_per_learner num_aggregator_actors_per_learner "
        "max_requests_in_flight_per_aggregator_actor local_gpu_idx "
        "max_requests_in_flight_per_learner learner_class learner_connector "
        "add_default_connectors_to_learner_pipeline learner_config_dict",
        "training": "gamma lr grad_clip grad_clip_by train_batch_size "
        "train_batch_size_per_learner num_epochs minibatch_size shuffle_batch_per_epoch model "
        "optimizer num_aggregator_actors_per_learner "
        "max_requests_in_flight_per_aggregator_actor num_sgd_iter "
        "max_requests_in_flight_per_sampler_worker learner_class learner_connector "
        "add_default_connectors_to_learner_pipeline learner_config_dict",
        "evaluation": "evaluation_interval evaluation_duration evaluation_duration_unit "
        "evaluation_auto_duration_min_env_steps_per_sample "
        "evaluation_auto_duration_max_env_steps_per_sample evaluation_sample_timeout_s "
        "evaluation_parallel_to_training evaluation_unhealthy_workers_timeout_s "
        "evaluation_error_after_n_consecutive_skips "
        "evaluation_force_reset_envs_before_iteration evaluation_config "
        "off_policy_estimation_methods ope_split_batch_by_episode evaluation_num_env_runners "
        "custom_evaluation_function offline_evaluation_interval num_offline_eval_runners "
        "offline_evaluation_type offline_eval_runner_class offline_loss_for_module_fn "
        "offline_eval_batch_size_per_runner dataset_num_iters_per_offline_eval_runner "
        "offline_eval_rl_module_inference_only num_cpus_per_offline_eval_runner "
        "num_gpus_per_offline_eval_runner custom_resources_per_offline_eval_runner "
        "offline_evaluation_timeout_s max_requests_in_flight_per_offline_eval_runner "
        "broadcast_offline_eval_runner_states validate_offline_eval_runners_after_construction "
        "restart_failed_offline_eval_runners ignore_offline_eval_runner_failures "
        "max_num_offline_eval_runner_restarts offline_eval_runner_health_probe_timeout_s "
        "offline_eval_runner_restore_timeout_s always_attach_evaluation_results "
        "evaluation_num_workers",
        "reporting": "keep_per_episode_custom_metrics metrics_episode_collection_timeout_s "
        "metrics_num_episodes_for_smoothing min_time_s_per_iteration "
        "min_train_timesteps_per_iteration min_sample_timesteps_per_iteration log_gradients "
        "custom_stats_cls_lookup",
        "debugging": "log_level log_sys_usage fake_sampler seed",
        "fault_tolerance": "restart_failed_env_runners ignore_env_runner_failures "
        "max_num_env_runner_restarts delay_between_env_runner_restarts_s "
        "restart_failed_sub_environments num_consecutive_env_runner_failures_tolerance "
        "env_runner_health_probe_timeout_s env_runner_restore_timeout_s "
        "recreate_failed_env_runners ignore_worker_failures recreate_failed_workers "
        "max_num_worker_restarts delay_between_worker_restarts_s "
        "num_consecutive_worker_failures_tolerance worker_health_probe_timeout_s "
        "worker_restore_timeout_s",
        "resources": "num_cpus_for_main_process custom_resources_for_main_process num_gpus "
        "_fake_gpus placement_strategy num_cpus_per_worker num_gpus_per_worker "
        "custom_resources_per_worker num_learner_workers num_cpus_per_learner_worker "
        "num_gpus_per_learner_worker local_gpu_idx num_cpus_for_local_worker",
        "framework": "framework eager_tracing eager_max_retraces tf_session_args "
        "local_tf_session_args torch_compile_learner torch_compile_learner_what_to_compile "
        "torch_compile_learner_dynamo_mode torch_compile_learner_dynamo_backend "
        "torch_compile_worker torch_compile_worker_dynamo_backend "
        "torch_compile_worker_dynamo_mode torch_ddp_kwargs torch_skip_nan_gradients",
        "rl_module": "model_config rl_module_spec algorithm_config_overrides_per_module "
        "model_config_dict _enable_rl_module_api",
        "multi_agent": "policies policy_map_capacity policy_mapping_fn policies_to_train "
        "policy_states_are_swappable observation_fn count_steps_by "
        "algorithm_config_overrides_per_module replay_mode policy_map_cache",
        "offline_data": "input_ offline_data_class input_read_method input_read_method_kwargs "
        "input_read_schema input_read_episodes input_read_sample_batches input_read_batch_size "
        "input_filesystem input_filesystem_kwargs input_compress_columns materialize_data "
        "materialize_mapped_data map_batches_kwargs iter_batches_kwargs "
        "ignore_final_observation prelearner_class prelearner_buffer_class "
        "prelearner_buffer_kwargs prelearner_module_synch_period "
        "prelearner_use_recorded_module_states dataset_num_iters_per_learner input_config "
        "actions_in_input_normalized postprocess_inputs shuffle_buffer_size output "
        "output_config output_compress_columns output_max_file_size output_max_rows_per_file "
        "output_write_remaining_data output_write_method output_write_method_kwargs "
        "output_filesystem output_filesystem_kwargs output_write_episodes offline_sampling",
        "checkpointing": "export_native_model_files checkpoint_trainable_policies_only",
        "callbacks": "callbacks_class on_algorithm_init on_train_result on_evaluate_start "
        "on_evaluate_end on_evaluate_offline_start on_evaluate_offline_end "
        "on_env_runners_recreated on_offline_eval_runners_recreated on_checkpoint_loaded "
        "on_environment_created on_episode_created on_episode_start on_episode_step "
        "on_episode_end on_sample_end",
    }.items()
}

#: The ``model_config`` keys the default modules here build from (``conv_filters``: PPO,
#: APPO, IMPALA; the ``lstm`` ones: PPO; ``vf_share_layers``: the PPO family). Ray's other
#: model keys (``lstm_use_prev_action=True``, ...) are refused by name.
MODEL_KEYS = frozenset(
    {
        "fcnet_hiddens",
        "fcnet_activation",
        "vf_share_layers",
        "conv_filters",
        "use_lstm",
        "lstm_cell_size",
        "max_seq_len",
        "lstm_use_prev_action",
        "lstm_use_prev_reward",
    }
)


def refuse(owner: str, method: str, options: dict[str, Any], ray_names: frozenset[str]) -> None:
    """Raise for the first of ``options``: NotImplementedError if it is Ray's, else TypeError."""
    for name in options:
        if name in ray_names:
            raise NotImplementedError(
                f"{owner}.{method}({name}=...) is a Ray RLlib option that runtime.rllib does "
                "not implement; leave it out (see docs/rllib.md, 'Limits')"
            )
        raise TypeError(f"{owner}.{method}() got an unexpected keyword argument {name!r}")


def scheduled(value: Any, timestep: int) -> float:
    """A hyperparameter at ``timestep``: a number, or Ray's schedule ``[[t0, v0], [t1, v1], ...]``.

    A schedule interpolates linearly between its points and holds its last value after
    the last one (Ray's piecewise-linear ``lr`` / ``entropy_coeff`` schedules).
    """
    if not isinstance(value, list | tuple):
        return float(value)
    points = [(int(t), float(v)) for t, v in value]
    if timestep <= points[0][0]:
        return points[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if timestep < t1:
            return v0 + (v1 - v0) * (timestep - t0) / max(1, t1 - t0)
    return points[-1][1]


def check_schedule(name: str, value: Any, *, low: float = 0.0, strict: bool = True) -> None:
    """A number (> low, or >= low if not strict) or a schedule whose first timestep is 0."""

    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        return v > low if strict else v >= low

    if isinstance(value, list | tuple):
        pairs = [p for p in value if isinstance(p, list | tuple) and len(p) == 2]
        if (
            not value
            or len(pairs) != len(value)
            or pairs[0][0] != 0
            or not all(ok(v) for _, v in pairs)
            or any(b[0] <= a[0] for a, b in itertools.pairwise(pairs))
        ):
            raise ValueError(
                f"{name} as a schedule must be [[0, v0], [t1, v1], ...] with increasing "
                f"timesteps and values {'>' if strict else '>='} {low}, got {value!r}"
            )
        return
    if not ok(value):
        raise ValueError(
            f"{name} must be a number {'>' if strict else '>='} {low} or a schedule, got {value!r}"
        )


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
    #: Whether the algorithm trains recurrent modules (``model_config["use_lstm"]``).
    supports_lstm: ClassVar[bool] = False
    #: Whether ``model_config["vf_share_layers"]=True`` builds (PPO's ``ActorCritic``).
    supports_vf_share_layers: ClassVar[bool] = False
    #: Whether the algorithm runs data-parallel learner actors (``num_learners > 0``).
    supports_learners: ClassVar[bool] = False
    #: Whether ``offline_data(dataset_num_iters_per_learner=...)`` means something to it.
    uses_dataset_num_iters: ClassVar[bool] = False

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
        self.max_requests_in_flight_per_env_runner = 2
        # fault tolerance
        self.restart_failed_env_runners = True
        self.max_num_env_runner_restarts = 1000
        # training (common part; subclasses add theirs)
        self.lr = 5e-4
        self.gamma = 0.99
        self.train_batch_size = 4000
        self.grad_clip: float | None = 0.5
        self.model: dict[str, Any] = {"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"}
        # offline data: where sampled transitions are recorded, and what BC/MARWIL read
        self.output: str | None = None
        self.input_: Any = None
        # multi-agent (None: one module, unless the env is a MultiAgentEnv)
        self.policies: dict[str, Any] | None = None
        self.policy_mapping_fn: Any = None
        self.policies_to_train: Any = None
        # connectors (callables env -> connector(s), or None)
        self.env_to_module_connector: Any = None
        self.module_to_env_connector: Any = None
        # learners (one, in the driver)
        self.num_learners = 0
        self.dataset_num_iters_per_learner: int | None = None
        self.num_cpus_per_learner: float | str = "auto"
        self.num_gpus_per_learner: float = 0
        # evaluation
        self.evaluation_interval: int | None = None
        self.evaluation_duration = 10
        self.evaluation_duration_unit = "episodes"
        self.evaluation_num_env_runners = 0
        self.evaluation_parallel_to_training = False
        self.evaluation_config: dict[str, Any] = {}
        # callbacks: RLlibCallback subclass(es), and hook functions by name
        self.callbacks_class: Any = None
        self.callbacks_functions: dict[str, Any] = {}
        # reporting
        self.metrics_num_episodes_for_smoothing = 100
        self.min_sample_timesteps_per_iteration = 0
        # debugging
        self.seed: int | None = None
        self.log_level = "WARNING"
        # resources (accepted for compatibility; the learner runs in the driver on CPU)
        self.num_gpus = 0
        self.num_cpus_for_main_process = 1
        self.framework_str = "torch"

    # --- builders -----------------------------------------------------------------------

    def _refuse(self, method: str, options: dict[str, Any]) -> None:
        refuse(type(self).__name__, method, options, RAY_OPTIONS[method])

    def environment(
        self,
        env: Any = NotProvided,
        *,
        env_config: dict[str, Any] | None = NotProvided,
        disable_env_checking: bool = NotProvided,
        **unsupported: Any,
    ) -> AlgorithmConfig:
        """The environment: a gymnasium id, a registered name, or a class taking ``env_config``.

        ``disable_env_checking`` is accepted (no env checker runs here); Ray's other
        options raise ``NotImplementedError`` naming them.
        """
        self._refuse("environment", unsupported)
        if env is not NotProvided:
            self.env = env
        if env_config is not NotProvided:
            self.env_config = dict(env_config or {})
        del disable_env_checking
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
        max_requests_in_flight_per_env_runner: int = NotProvided,
        env_to_module_connector: Any = NotProvided,
        module_to_env_connector: Any = NotProvided,
        **unsupported: Any,
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

        ``max_requests_in_flight_per_env_runner``: sampling calls kept queued per runner by
        the asynchronous algorithms (APPO, IMPALA; default 2); the synchronous ones make
        one call per runner and round whatever it says.

        ``env_to_module_connector`` / ``module_to_env_connector``: a callable ``env ->
        connector`` (or a list of connectors), as in Ray, with connectors from
        ``runtime.rllib.connectors`` (``env`` is a one-env gymnasium vector env in the
        driver, the runner's vector env in a runner). Ray's other options raise
        ``NotImplementedError`` naming them.
        """
        self._refuse("env_runners", unsupported)
        for name, value in (
            ("num_env_runners", num_env_runners),
            ("num_envs_per_env_runner", num_envs_per_env_runner),
            ("rollout_fragment_length", rollout_fragment_length),
            ("num_cpus_per_env_runner", num_cpus_per_env_runner),
            ("sample_timeout_s", sample_timeout_s),
            ("explore", explore),
            ("sample_ahead", sample_ahead),
            ("max_requests_in_flight_per_env_runner", max_requests_in_flight_per_env_runner),
            ("env_to_module_connector", env_to_module_connector),
            ("module_to_env_connector", module_to_env_connector),
        ):
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    def learners(
        self,
        num_learners: int = NotProvided,
        num_cpus_per_learner: float | str = NotProvided,
        num_gpus_per_learner: float = NotProvided,
        **unsupported: Any,
    ) -> AlgorithmConfig:
        """Where the learner runs.

        ``num_learners=0`` (Ray's default): one learner in the driver, on CPU.
        ``num_learners=N`` (PPO): N learner actors (``num_cpus_per_learner`` each, "auto" =
        1; ``num_gpus_per_learner`` GPUs each) split every train batch and average their
        gradients before each step, over nccl when every learner has a whole GPU, gloo
        otherwise (``_learner_group``); ``minibatch_size`` stays the size of the whole
        minibatch, split among them. A learner with a GPU keeps its module there.
        ``num_gpus_per_learner > 0`` with ``num_learners=0`` (Ray: the driver's learner on a
        GPU) and Ray's other options raise ``NotImplementedError`` naming them; a cluster
        with too few GPUs raises ``InfeasibleError`` at ``build()``.
        """
        self._refuse("learners", unsupported)
        if num_learners is not NotProvided:
            if not isinstance(num_learners, int) or isinstance(num_learners, bool):
                raise TypeError(f"num_learners must be an int, got {num_learners!r}")
            if num_learners and not type(self).supports_learners:
                raise NotImplementedError(
                    f"{type(self).__name__}.learners(num_learners={num_learners!r}): "
                    "learner actors are implemented for PPO; here only num_learners=0 works"
                )
            self.num_learners = num_learners
        if num_gpus_per_learner is not NotProvided:
            gpus = num_gpus_per_learner
            if not isinstance(gpus, int | float) or isinstance(gpus, bool):
                raise TypeError(f"num_gpus_per_learner must be a number, got {gpus!r}")
            if not 0 <= gpus < float("inf") or (gpus > 1 and gpus != int(gpus)):
                raise ValueError(
                    "num_gpus_per_learner must be 0, a fraction of one GPU or a whole number "
                    f"of GPUs, got {gpus!r}"
                )
            self.num_gpus_per_learner = gpus
        if num_cpus_per_learner is not NotProvided:
            self.num_cpus_per_learner = num_cpus_per_learner
        return self

    def fault_tolerance(
        self,
        restart_failed_env_runners: bool = NotProvided,
        max_num_env_runner_restarts: int = NotProvided,
        **unsupported: Any,
    ) -> AlgorithmConfig:
        """Whether a runner that died is replaced (and training goes on), and how often."""
        self._refuse("fault_tolerance", unsupported)
        if restart_failed_env_runners is not NotProvided:
            self.restart_failed_env_runners = bool(restart_failed_env_runners)
        if max_num_env_runner_restarts is not NotProvided:
            self.max_num_env_runner_restarts = int(max_num_env_runner_restarts)
        return self

    #: Ray's ``training()`` options of this algorithm that it does not implement (a subclass
    #: lists its own); ``training()`` refuses them by name with ``NotImplementedError``.
    ray_training_options: ClassVar[frozenset[str]] = frozenset()

    def training(self, **kwargs: Any) -> AlgorithmConfig:
        """Set hyperparameters by name (``lr``, ``gamma``, ``train_batch_size``, ...).

        ``lr`` (and PPO's ``entropy_coeff``) also take Ray's schedule form, a list of
        ``[timestep, value]`` pairs interpolated linearly over sampled env steps.
        ``train_batch_size_per_learner`` is ``train_batch_size`` (there is one learner).

        Raises:
            NotImplementedError: one of Ray's options for this algorithm that is not
                implemented here.
            TypeError: a name neither this algorithm nor Ray's has (the message lists the
                known ones).
        """
        known = self._training_keys()
        for given, value in kwargs.items():
            name = "train_batch_size" if given == "train_batch_size_per_learner" else given
            if name == "grad_clip_by" and value == "global_norm":
                continue  # what the learner does
            if name not in known:
                ray_names = RAY_OPTIONS["training"] | self.ray_training_options
                if name in ray_names:
                    refuse(type(self).__name__, "training", {name: value}, ray_names)
                raise TypeError(
                    f"{type(self).__name__}.training() got an unknown hyperparameter {name!r}; "
                    f"known: {', '.join(sorted(known))}"
                )
            setattr(self, name, {**self.model, **(value or {})} if name == "model" else value)
        return self

    def rl_module(
        self, *, model_config: dict[str, Any] = NotProvided, **unsupported: Any
    ) -> AlgorithmConfig:
        """The default module's ``model_config`` (Ray's new-stack name for ``model``).

        Keys: ``fcnet_hiddens``, ``fcnet_activation``, ``vf_share_layers`` (PPO, APPO,
        IMPALA, BC, MARWIL);
        Ray's other model keys raise ``NotImplementedError`` in ``validate()``.
        """
        self._refuse("rl_module", unsupported)
        if model_config is not NotProvided:
            self.model = {**self.model, **dict(model_config or {})}
        return self

    @property
    def model_config(self) -> dict[str, Any]:
        """Ray's new-stack name for ``model``."""
        return self.model

    def evaluation(
        self,
        evaluation_interval: int | None = NotProvided,
        evaluation_duration: int = NotProvided,
        evaluation_duration_unit: str = NotProvided,
        *,
        evaluation_num_env_runners: int = NotProvided,
        evaluation_config: dict[str, Any] | None = NotProvided,
        evaluation_parallel_to_training: bool = NotProvided,
        **unsupported: Any,
    ) -> AlgorithmConfig:
        """Evaluate every ``evaluation_interval`` iterations, greedy unless told otherwise.

        ``evaluation_num_env_runners=0`` runs the episodes in the driver; ``N > 0`` on N
        evaluation runner actors (started at build), the episodes split over them.
        ``evaluation_config`` takes ``explore`` (default False) and ``env_config``.
        ``evaluation_parallel_to_training=True`` (needs evaluation actors) runs the
        evaluation episodes while the iteration trains, with the weights of before it.
        ``evaluation_duration="auto"`` raises ``NotImplementedError``.
        """
        self._refuse("evaluation", unsupported)
        if evaluation_duration == "auto":
            raise NotImplementedError(
                f"{type(self).__name__}.evaluation(evaluation_duration='auto') is not "
                "implemented; give a number of episodes or timesteps"
            )
        if evaluation_parallel_to_training is not NotProvided:
            self.evaluation_parallel_to_training = bool(evaluation_parallel_to_training)
        if evaluation_interval is not NotProvided:
            self.evaluation_interval = evaluation_interval
        if evaluation_duration is not NotProvided:
            self.evaluation_duration = evaluation_duration
        if evaluation_duration_unit is not NotProvided:
            self.evaluation_duration_unit = evaluation_duration_unit
        if evaluation_num_env_runners is not NotProvided:
            self.evaluation_num_env_runners = evaluation_num_env_runners
        if evaluation_config is not NotProvided:
            config = dict(evaluation_config or {})
            bad = sorted(set(config) - {"explore", "env_config"})
            if bad:
                raise NotImplementedError(
                    f"evaluation_config key(s) {', '.join(map(repr, bad))} are not supported "
                    "here; evaluation_config takes 'explore' and 'env_config'"
                )
            self.evaluation_config = config
        return self

    @staticmethod
    def overrides(**kwargs: Any) -> dict[str, Any]:
        """Settings as a dict: ``evaluation_config=AlgorithmConfig.overrides(explore=False)``."""
        return dict(kwargs)

    def reporting(
        self,
        metrics_num_episodes_for_smoothing: int = NotProvided,
        min_sample_timesteps_per_iteration: int = NotProvided,
        **unsupported: Any,
    ) -> AlgorithmConfig:
        """How iterations report (Ray's settings and meanings).

        ``metrics_num_episodes_for_smoothing``: each runner contributes the mean of at most
        its last ``ceil(this / num_env_runners)`` episodes completed in the iteration (see
        ``Algorithm.train``). ``min_sample_timesteps_per_iteration``: ``train()`` repeats
        the training step until at least this many env steps were sampled in the iteration
        (Ray's default: 0 for PPO, 1000 for DQN).
        """
        self._refuse("reporting", unsupported)
        if metrics_num_episodes_for_smoothing is not NotProvided:
            self.metrics_num_episodes_for_smoothing = int(metrics_num_episodes_for_smoothing)
        if min_sample_timesteps_per_iteration is not NotProvided:
            self.min_sample_timesteps_per_iteration = int(min_sample_timesteps_per_iteration)
        return self

    def debugging(
        self, seed: int | None = NotProvided, log_level: str = NotProvided, **unsupported: Any
    ) -> AlgorithmConfig:
        """``seed``: same seed, one runner -> the same results, iteration for iteration.

        ``log_level`` ("DEBUG", "INFO", "WARN", "ERROR") sets the ``runtime.rllib`` logger's
        level. ``log_sys_usage`` and ``fake_sampler`` raise ``NotImplementedError``.
        """
        self._refuse("debugging", unsupported)
        if seed is not NotProvided:
            self.seed = seed
        if log_level is not NotProvided:
            level = {"WARN": "WARNING"}.get(str(log_level).upper(), str(log_level).upper())
            if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
                raise ValueError(f"log_level must be DEBUG, INFO, WARN or ERROR, not {log_level!r}")
            self.log_level = level
            logging.getLogger("runtime.rllib").setLevel(level)
        return self

    def resources(
        self,
        num_gpus: int = NotProvided,
        num_cpus_for_main_process: int = NotProvided,
        **unsupported: Any,
    ) -> AlgorithmConfig:
        """``num_cpus_for_main_process`` is accepted; ``num_gpus > 0`` is NotImplementedError."""
        self._refuse("resources", unsupported)
        if num_gpus is not NotProvided:
            if num_gpus:
                raise NotImplementedError(
                    f"{type(self).__name__}.resources(num_gpus={num_gpus!r}): the learner "
                    "runs on CPU here"
                )
            self.num_gpus = num_gpus
        if num_cpus_for_main_process is not NotProvided:
            self.num_cpus_for_main_process = num_cpus_for_main_process
        return self

    def framework(self, framework: str = "torch", **unsupported: Any) -> AlgorithmConfig:
        """Only ``"torch"`` is supported; Ray's other options raise NotImplementedError."""
        self._refuse("framework", unsupported)
        if framework != "torch":
            raise ValueError(f"framework {framework!r} is not supported; use 'torch'")
        self.framework_str = framework
        return self

    def api_stack(
        self,
        enable_rl_module_and_learner: bool = True,
        enable_env_runner_and_connector_v2: bool = True,
    ) -> AlgorithmConfig:
        """Ray's new API stack is the one stack here; asking for the old one is refused."""
        if not (enable_rl_module_and_learner and enable_env_runner_and_connector_v2):
            raise NotImplementedError(
                "Ray's old API stack (enable_rl_module_and_learner=False or "
                "enable_env_runner_and_connector_v2=False) is not implemented; runtime.rllib "
                "has the new stack only"
            )
        return self

    def callbacks(self, callbacks_class: Any = NotProvided, **hooks: Any) -> AlgorithmConfig:
        """``RLlibCallback`` subclass(es) whose hooks run during training (Ray's call).

        ``callbacks_class``: a subclass, or a list of them (called in order). Hooks may also
        be given as functions by name (``on_train_result=fn``, ``on_episode_end=[f, g]``),
        as Ray 2.60 allows. See ``runtime.rllib.callbacks.callbacks``.
        """
        from runtime.rllib.callbacks.callbacks import DRIVER_HOOKS, RUNNER_HOOKS

        unknown = {k: v for k, v in hooks.items() if k not in DRIVER_HOOKS + RUNNER_HOOKS}
        self._refuse("callbacks", unknown)
        if callbacks_class is not NotProvided:
            self.callbacks_class = callbacks_class
        self.callbacks_functions = {**self.callbacks_functions, **hooks}
        return self

    def multi_agent(
        self,
        *,
        policies: Any = NotProvided,
        policy_mapping_fn: Any = NotProvided,
        policies_to_train: Any = NotProvided,
        **unsupported: Any,
    ) -> AlgorithmConfig:
        """Several modules for the agents of a ``MultiAgentEnv`` (PPO; Ray's call).

        ``policies``: module ids (a set or list), or a dict id -> ``None`` or Ray's
        ``(None, observation_space, action_space, {})``. ``policy_mapping_fn(agent_id,
        episode, **kwargs) -> module id`` (default: every agent -> ``"default_policy"``).
        ``policies_to_train``: the ids to update (a list, or ``fn(module_id, batch) ->
        bool``); the others act but keep their weights. Ray's other options raise
        ``NotImplementedError``.
        """
        self._refuse("multi_agent", unsupported)
        if policies is not NotProvided:
            if isinstance(policies, dict):
                self.policies = dict(policies)
            elif isinstance(policies, set | list | tuple):
                self.policies = {str(p) if not isinstance(p, str) else p: None for p in policies}
            else:
                raise TypeError(f"policies must be a set, list or dict of ids, got {policies!r}")
        if policy_mapping_fn is not NotProvided:
            self.policy_mapping_fn = policy_mapping_fn
        if policies_to_train is not NotProvided:
            self.policies_to_train = policies_to_train
        return self

    @property
    def is_multi_agent(self) -> bool:
        """Whether modules were configured with ``multi_agent(policies=...)``."""
        return self.policies is not None

    def offline_data(
        self,
        *,
        input_: Any = NotProvided,
        output: str | None = NotProvided,
        dataset_num_iters_per_learner: int | None = NotProvided,
        **unsupported: Any,
    ) -> AlgorithmConfig:
        """Recorded episodes: ``output`` (a directory) records every sampled transition as
        Parquet through ``runtime.data``; ``input_`` (a directory of such files) is what
        BC, MARWIL and CQL learn from; ``dataset_num_iters_per_learner``: CQL's updates per
        ``train()`` (refused by the others). Ray's other options raise
        ``NotImplementedError``."""
        self._refuse("offline_data", unsupported)
        if dataset_num_iters_per_learner is not NotProvided:
            self.dataset_num_iters_per_learner = dataset_num_iters_per_learner
        if input_ is not NotProvided:
            self.input_ = input_
        if output is not NotProvided:
            self.output = output
        return self

    def checkpointing(self, **options: Any) -> AlgorithmConfig:
        """Not implemented: every option raises ``NotImplementedError`` naming it."""
        self._refuse("checkpointing", options)
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
        if self.num_gpus_per_learner and not self.num_learners:
            raise NotImplementedError(
                f"{type(self).__name__}.learners(num_gpus_per_learner="
                f"{self.num_gpus_per_learner!r}) with num_learners=0: the driver's learner "
                "runs on CPU here; a GPU learner is a learner actor: set num_learners >= 1"
            )
        _int_at_least("num_envs_per_env_runner", self.num_envs_per_env_runner, 1)
        _int_at_least("train_batch_size", self.train_batch_size, 1)
        rfl = self.rollout_fragment_length
        if rfl != "auto":
            _int_at_least("rollout_fragment_length", rfl, 1)
        check_schedule("lr", self.lr)
        if not isinstance(self.gamma, int | float) or not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")
        if self.evaluation_interval is not None:
            _int_at_least("evaluation_interval", self.evaluation_interval, 1)
        _int_at_least("evaluation_duration", self.evaluation_duration, 1)
        _int_at_least("evaluation_num_env_runners", self.evaluation_num_env_runners, 0)
        if self.evaluation_parallel_to_training and not self.evaluation_num_env_runners:
            raise ValueError(
                "evaluation_parallel_to_training=True needs evaluation_num_env_runners >= 1"
            )
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
        unknown = sorted(set(self.model) - MODEL_KEYS)
        if unknown:
            raise NotImplementedError(
                f"model_config key(s) {', '.join(map(repr, unknown))} are Ray model options "
                f"runtime.rllib does not implement; supported: {', '.join(sorted(MODEL_KEYS))}"
            )
        self._validate_lstm()
        iters = self.dataset_num_iters_per_learner
        if iters is not None:
            if not type(self).uses_dataset_num_iters:
                raise NotImplementedError(
                    f"offline_data(dataset_num_iters_per_learner=...): {type(self).__name__} "
                    "does not use it here (CQL does)"
                )
            _int_at_least("dataset_num_iters_per_learner", iters, 1)
        if self.model.get("vf_share_layers"):
            if not type(self).supports_vf_share_layers:
                raise NotImplementedError(
                    f"model_config vf_share_layers=True: {type(self).__name__} has no value "
                    "network sharing layers here (PPO, APPO, IMPALA, BC and MARWIL do)"
                )
            if self.model.get("use_lstm") or self.model.get("conv_filters"):
                raise NotImplementedError(
                    "model_config vf_share_layers=True with use_lstm or conv_filters (an MLP "
                    "policy only here)"
                )
        from runtime.rllib.callbacks.callbacks import check_callbacks

        check_callbacks(self.callbacks_class, self.callbacks_functions)
        from runtime.rllib.connectors.connector_v2 import check_connector_factory

        check_connector_factory("env_to_module_connector", self.env_to_module_connector)
        check_connector_factory("module_to_env_connector", self.module_to_env_connector)

    def _validate_lstm(self) -> None:
        model = self.model
        for name in ("lstm_use_prev_action", "lstm_use_prev_reward"):
            if model.get(name):
                raise NotImplementedError(
                    f"model_config {name}=True: the LSTM here reads the observation only"
                )
        if not model.get("use_lstm"):
            return
        if not type(self).supports_lstm:
            raise NotImplementedError(
                f"model_config use_lstm=True: {type(self).__name__} has no recurrent "
                "module here; PPO has"
            )
        for name in ("lstm_cell_size", "max_seq_len"):
            value = model.get(name, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model_config {name} must be an int >= 1, got {value!r}")

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
