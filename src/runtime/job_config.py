"""Ray's module path ``ray.job_config``: :class:`JobConfig`, the options of a driver's job."""

from __future__ import annotations

from typing import Any


class JobConfig:
    """The options Ray takes as ``init(job_config=JobConfig(...))``.

    Here a job's options are ``init()``'s own parameters: ``runtime_env`` and
    ``namespace`` map to ``init(runtime_env=, namespace=)`` (:meth:`init_kwargs`); the
    Java options (``jvm_options``, ``code_search_path``) have no meaning and are kept only
    so a program that builds one still runs.

    Args:
        jvm_options: Java worker options (kept, unused).
        code_search_path: Java/C++ code paths (kept, unused).
        runtime_env: the job's default ``runtime_env``.
        metadata: free-form strings describing the job.
        ray_namespace: the namespace the driver joins.
        default_actor_lifetime: ``"non_detached"`` (the default) or ``"detached"``.

    Raises:
        ValueError: ``default_actor_lifetime`` is neither.
    """

    def __init__(  # noqa: PLR0917 - Ray's signature, positional parameters included
        self,
        jvm_options: list[str] | None = None,
        code_search_path: list[str] | None = None,
        runtime_env: dict[str, Any] | None = None,
        _client_job: bool = False,
        metadata: dict[str, str] | None = None,
        ray_namespace: str | None = None,
        default_actor_lifetime: str = "non_detached",
        _py_driver_sys_path: list[str] | None = None,
    ) -> None:
        if default_actor_lifetime not in {"non_detached", "detached"}:
            raise ValueError(
                "default_actor_lifetime must be 'non_detached' or 'detached', "
                f"got {default_actor_lifetime!r}"
            )
        self.jvm_options = list(jvm_options or [])
        self.code_search_path = list(code_search_path or [])
        self.runtime_env = dict(runtime_env) if runtime_env is not None else None
        self.metadata = dict(metadata or {})
        self.ray_namespace = ray_namespace
        self.default_actor_lifetime = default_actor_lifetime
        self._py_driver_sys_path = list(_py_driver_sys_path or [])

    def set_runtime_env(self, runtime_env: dict[str, Any] | None) -> None:
        """Replace the job's default ``runtime_env``."""
        self.runtime_env = dict(runtime_env) if runtime_env is not None else None

    def set_ray_namespace(self, ray_namespace: str) -> None:
        """Set the namespace the driver joins."""
        self.ray_namespace = ray_namespace

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        """Set the lifetime of actors created without ``lifetime=``."""
        if default_actor_lifetime not in {"non_detached", "detached"}:
            raise ValueError(f"unknown default_actor_lifetime {default_actor_lifetime!r}")
        self.default_actor_lifetime = default_actor_lifetime

    def init_kwargs(self) -> dict[str, Any]:
        """The ``runtime.init()`` keywords this config stands for."""
        out: dict[str, Any] = {}
        if self.runtime_env is not None:
            out["runtime_env"] = self.runtime_env
        if self.ray_namespace is not None:
            out["namespace"] = self.ray_namespace
        return out

    def __repr__(self) -> str:
        return f"JobConfig(runtime_env={self.runtime_env!r}, ray_namespace={self.ray_namespace!r})"


__all__ = ["JobConfig"]
