"""The import hook that makes ``ray`` and ``ray.*`` name ``runtime`` and ``runtime.*``.

It is installed only in a process started by ``python -m runtime.compat`` (and in the node
processes that process starts, through :mod:`runtime.compat._shim`): nothing changes for a
program that imports :mod:`runtime` itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType

#: Set to ``0`` (or ``off``, ``false``, ``no``) to say the real Ray is wanted.
ENV_SWITCH = "RUNTIME_COMPAT"
#: The directory holding the ``ray`` stand-in that child processes import.
SHIM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_shim")


def compat_disabled() -> bool:
    """Whether the environment says the real ``ray`` is wanted (``RUNTIME_COMPAT=0``)."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() in {"0", "off", "false", "no"}


class _AliasLoader(importlib.abc.Loader):
    """Hands back an already imported ``runtime`` module under its ``ray`` name."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module
        self._spec = module.__spec__

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self._module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the alias's spec on the module; ``runtime.x`` keeps its own.
        module.__spec__ = self._spec


class RayAliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``ray.x.y`` as the module ``runtime.x.y``; a missing one is a clear error.

    It never falls through to the real Ray: a name ``runtime`` lacks raises
    :class:`ModuleNotFoundError` naming both modules.
    """

    def find_spec(
        self,
        fullname: str,
        path: object = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "ray" and not fullname.startswith("ray."):
            return None
        real = "runtime" + fullname[len("ray") :]
        try:
            module = importlib.import_module(real)
        except ModuleNotFoundError as err:
            if err.name is not None and (real == err.name or real.startswith(err.name + ".")):
                raise ModuleNotFoundError(
                    f"No module named {fullname!r}: runtime.compat runs this program on "
                    f"runtime, which has no {real!r} (see docs/compat.md)",
                    name=fullname,
                ) from None
            raise
        _alias_loaded_submodules(real)
        return importlib.util.spec_from_loader(fullname, _AliasLoader(module))


def _alias_loaded_submodules(real: str) -> None:
    """Enter ``runtime.x``'s already imported submodules as ``ray.x.*`` too.

    Importing a new ``ray.x.y`` sets the attribute ``y`` of ``ray.x`` to the module; for a
    submodule named like a function of its package (``runtime.util.placement_group``) that
    would hide the function, so the ones already imported are entered here beforehand.
    """
    prefix = real + "."
    for name, module in list(sys.modules.items()):
        if name.startswith(prefix) and module is not None:
            sys.modules.setdefault("ray" + name[len("runtime") :], module)


def install() -> None:
    """Make ``import ray`` (and every ``ray.*``) give ``runtime`` in this process.

    Idempotent. Raises :class:`RuntimeError` when the real Ray is already imported here.
    """
    current = sys.modules.get("ray")
    origin = str(getattr(getattr(current, "__spec__", None), "origin", "") or "")
    if (
        current is not None
        and getattr(current, "__name__", "") != "runtime"
        and not origin.startswith(SHIM_DIR)
    ):
        raise RuntimeError(
            "the real ray is already imported in this process; runtime.compat cannot "
            "replace it (start the program with `python -m runtime.compat SCRIPT`)"
        )
    if not any(isinstance(f, RayAliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, RayAliasFinder())
    sys.modules["ray"] = importlib.import_module("runtime")
