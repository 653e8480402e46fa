"""Ray's module path ``ray.runtime_env``: :class:`RuntimeEnv`, a checked ``runtime_env`` dict."""

from __future__ import annotations

from typing import Any

#: The fields Ray's ``RuntimeEnv`` takes; the runtime acts on ``env_vars``,
#: ``working_dir`` and ``py_modules`` (docs/core.md) and decides on the others itself.
FIELDS = frozenset(
    {
        "py_modules",
        "py_executable",
        "java_jars",
        "working_dir",
        "pip",
        "uv",
        "conda",
        "container",
        "image_uri",
        "env_vars",
        "worker_process_setup_hook",
        "nsight",
        "config",
        "excludes",
        "mpi",
        "rocprof_sys",
    }
)


class RuntimeEnv(dict[str, Any]):
    """A ``runtime_env`` built from keywords, as Ray's ``RuntimeEnv``: it is the same dict
    ``.options(runtime_env=...)`` and ``init(runtime_env=...)`` take.

    Raises:
        TypeError: a keyword that is not one of Ray's fields (:data:`FIELDS`); Ray's
            ``_validate`` style private keywords are refused the same way.

    Example::

        env = RuntimeEnv(env_vars={"MODE": "test"})
        f.options(runtime_env=env).remote()
    """

    def __init__(self, **fields: Any) -> None:
        unknown = sorted(set(fields) - FIELDS)
        if unknown:
            raise TypeError(f"RuntimeEnv got unknown fields {unknown}; Ray's are {sorted(FIELDS)}")
        super().__init__({k: v for k, v in fields.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """A plain dict copy."""
        return dict(self)


__all__ = ["RuntimeEnv"]
