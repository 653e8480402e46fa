"""What a rank's process should find imported: the modules its process is forked with.

Ranks run in processes of their own (``dedicated_process``); the node forks each one from a
warm process (the core's zygote) that has imported the modules named here, once per node, so a
second group on the node starts without importing torch again. The list is the backend's
(``BackendConfig.preload_modules``) and the frameworks the loop itself imports, found in its
code (``import lightning`` inside the loop, or a module global it uses). Only well-known
frameworks whose import starts no thread and touches no device are named: the zygote forks
after importing them.
"""

from __future__ import annotations

import ast
import dis
import importlib.util
import os
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

#: Top-level packages a rank's process may be forked with (their import is fork-safe).
FRAMEWORKS = frozenset(
    {
        "torch",
        "lightning",
        "pytorch_lightning",
        "transformers",
        "accelerate",
        "torchmetrics",
        "xgboost",
        "lightgbm",
        "numpy",
    }
)


#: What a torch rank needs imported (DDP's constructor imports torch._dynamo: sympy, inductor,
#: seconds); TorchConfig's preload_modules.
TORCH_MODULES = (
    "torch",
    "torch.distributed",
    "torch.nn.parallel",
    "torch._dynamo",
    "runtime.train.torch",
)
#: What every rank imports whatever its framework: Train itself, and ``pyarrow.fs`` (the run's
#: storage, a pyarrow filesystem in the StorageContext each rank unpickles: 0.1-0.2 s).
BASE_MODULES = ("runtime.train", "pyarrow.fs")
#: Frameworks Train integrates with that a node warms too, where installed and the program's
#: main script imports them (or their Train module) anywhere in it: each in a helper process
#: its zygote forks once it has imported torch, at the lowest CPU priority where the helper may
#: take its priority back when a group asks for it. A group that uses one is forked from its
#: helper; the others never wait on its import (``lightning`` 1.3 s, ``xgboost`` 1.0 s of CPU
#: here, once per node process; memory: see docs/train.md).
WARM_FRAMEWORKS = (
    ("lightning", "runtime.train.lightning"),
    ("pytorch_lightning", "runtime.train.lightning"),
    ("xgboost", "runtime.train.xgboost"),
    ("lightgbm", "runtime.train.lightgbm"),
)
#: The core's variable naming the modules a node's zygote imports as soon as the node starts;
#: each part after a LATER mark is warmed by a helper of the zygote.
PRELOAD_ENV = "RUNTIME_ZYGOTE_PRELOAD"
LATER = ";"


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def main_script_imports() -> set[str]:
    """The modules the program's main script imports anywhere in it (in functions too), by
    their full dotted names; empty where there is no script file (an interactive session)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py"):
        return set()
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def warm_list(script_imports: set[str] | None = None) -> list[str]:
    """What a node's zygote imports from its start: Train and the torch stack, then (in its
    helpers, each part after a LATER mark) the frameworks of :data:`WARM_FRAMEWORKS` that are
    installed and that ``script_imports`` (default: the main script's) names."""
    if script_imports is None:
        script_imports = main_script_imports()

    def named(module: str) -> bool:
        return any(m == module or m.startswith(module + ".") for m in script_imports)

    names = [*BASE_MODULES, *TORCH_MODULES]
    for framework, integration in WARM_FRAMEWORKS:
        if (named(framework) or named(integration)) and _installed(framework):
            names += [LATER, framework, integration]  # a helper each: none waits on another
    return names


def warm_nodes_started_later() -> None:
    """Have the nodes this process starts from now on (``runtime.init()``'s local mesh, or
    ``python -m runtime.node`` run from here) import torch (and the frameworks of
    :func:`warm_list`) in their zygotes as they start, not at the first ``fit()``:
    ``RUNTIME_ZYGOTE_PRELOAD`` in this process's environment, unless it is set already (set it
    to choose the list; empty: off) or torch is not installed."""
    if PRELOAD_ENV in os.environ or not _installed("torch"):
        return
    os.environ[PRELOAD_ENV] = ",".join(warm_list()).replace(f",{LATER},", LATER)


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _imported_by(fn: Callable[..., Any]) -> list[str]:
    """The frameworks ``fn`` imports in its body (or nested functions), or uses as globals."""
    code = getattr(fn, "__code__", None)
    if code is None:  # an instance of a class with __call__
        code = getattr(vars(type(fn)).get("__call__"), "__code__", None)
    if code is None:
        return []
    found: list[str] = []
    for c in _codes(code):
        for ins in dis.get_instructions(c):
            if ins.opname == "IMPORT_NAME" and isinstance(ins.argval, str):
                found.append(ins.argval)
    glob = getattr(fn, "__globals__", {})
    for c in _codes(code):
        for name in c.co_names:
            value = glob.get(name)
            if isinstance(value, types.ModuleType):
                found.append(value.__name__)
    return found


def preload_modules(
    fn: Callable[..., Any], backend_modules: tuple[str, ...], data: bool
) -> list[str]:
    """The modules a rank's process is forked with (in import order)."""
    # runtime.train itself (what the rank actor's class unpickles): 0.1-0.2 s, seconds under
    # load; pyarrow.fs (the storage context's filesystem): as much again
    names = [*BASE_MODULES, *backend_modules]
    if data:
        names.append("runtime.data")
    names += [m for m in _imported_by(fn) if m.partition(".")[0] in FRAMEWORKS]
    out: list[str] = []
    for name in names:
        if name not in out:
            out.append(name)
    return out
