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

import dis
import importlib.util
import os
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
#: The core's variable naming the modules a node's zygote imports as soon as the node starts.
PRELOAD_ENV = "RUNTIME_ZYGOTE_PRELOAD"


def warm_nodes_started_later() -> None:
    """Have the nodes this process starts from now on (``runtime.init()``'s local mesh, or
    ``python -m runtime.node`` run from here) import torch in their zygotes as they start,
    not at the first ``fit()``: ``RUNTIME_ZYGOTE_PRELOAD`` in this process's environment,
    unless it is set already (empty: off) or torch is not installed."""
    if PRELOAD_ENV in os.environ or importlib.util.find_spec("torch") is None:
        return
    os.environ[PRELOAD_ENV] = ",".join(("runtime.train", *TORCH_MODULES))


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
    # runtime.train itself (what the rank actor's class unpickles): 0.1-0.2 s, seconds under load
    names = ["runtime.train", *backend_modules]
    if data:
        names.append("runtime.data")
    names += [m for m in _imported_by(fn) if m.partition(".")[0] in FRAMEWORKS]
    out: list[str] = []
    for name in names:
        if name not in out:
            out.append(name)
    return out
