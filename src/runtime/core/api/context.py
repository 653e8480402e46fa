"""Where the calling code runs: ``runtime.get_runtime_context()`` and the current actor."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from ..common.context import current_task
from ..execution.calls import ActorExit
from ..objects.plane import actor_token_id
from ..objects.refs import ObjectRef
from ..process.worker import Worker
from ..scheduling.host import visible_devices
from .blocking import current_worker
from .options import default_num_returns
from .remote import ActorHandle


@dataclass(frozen=True)
class RuntimeContext:
    """Where the calling code runs: ``runtime.get_runtime_context()``."""

    node_id: str
    job_id: str
    namespace: str
    actor_id: str | None
    task_id: str | None
    _actor_name: str | None

    def get_node_id(self) -> str:
        return self.node_id

    def get_job_id(self) -> str:
        return self.job_id

    def get_actor_id(self) -> str | None:
        return self.actor_id

    def get_task_id(self) -> str | None:
        return self.task_id

    def get_actor_name(self) -> str | None:
        return self._actor_name

    @property
    def current_actor(self) -> ActorHandle[Any]:
        """A handle to the actor the calling code runs in (RuntimeError elsewhere). Like any
        handle it keeps the actor in scope while it lives, here or wherever it is passed."""
        if self.actor_id is None:
            raise RuntimeError("current_actor is only there inside an actor's methods")
        return current_actor_handle(current_worker(), bytes.fromhex(self.actor_id))

    def get_assigned_resources(self) -> dict[str, float]:
        """The resources the running task, or the actor the calling code runs in, holds (as
        Ray's: e.g. ``{"CPU": 1.0}``); empty in the driver."""
        ctx = current_task.get()
        if ctx is None:
            return {}
        if ctx.actor_id is None:
            return {k: v for k, v in ctx.demand.items() if v}
        executor = current_worker().executor
        hosted = executor.actors.get(ctx.actor_id) if executor is not None else None
        if hosted is None:
            return {}
        return {k: v for k, v in hosted.spec.resources.items() if v}

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        """The accelerators granted to the running task or the actor the calling code runs
        in, as Ray's: ``{"GPU": ["0", "1"]}`` (the host's device ids, as strings; the
        values of ``CUDA_VISIBLE_DEVICES`` when the node was started with one)."""
        return {"GPU": [str(i) for i in get_gpu_ids()]}

    def get_placement_group_id(self) -> str | None:
        """The id (hex) of the placement group the running task or actor is placed in; None
        outside any group (Ray's ``RuntimeContext.get_placement_group_id``)."""
        ctx = current_task.get()
        return ctx.bundle[0].hex() if ctx is not None and ctx.bundle is not None else None

    def is_cancelled(self) -> bool:
        """True once ``runtime.cancel`` reached the running task or actor call.

        A sync task cannot be interrupted safely at any point; a long-running one polls this
        and returns (or raises) when it becomes True.
        """
        ctx = current_task.get()
        return ctx is not None and ctx.cancelled


def get_gpu_ids() -> list[int | str]:
    """The GPUs granted to the running task, or to the actor the calling code runs in (Ray's
    ``ray.get_gpu_ids()``): ints, or names when the node was started with a non-numeric
    ``CUDA_VISIBLE_DEVICES``; empty in the driver and for work that asked for no GPU.

    Example::

        @runtime.remote(num_gpus=1)
        def train():
            return runtime.get_gpu_ids(), os.environ["CUDA_VISIBLE_DEVICES"]   # [0], "0"
    """
    ctx = current_task.get()
    if ctx is None:
        return []
    ids = ctx.gpu_ids
    if ctx.actor_id is not None:
        executor = current_worker().executor
        ids = executor.actor_gpus.get(ctx.actor_id, []) if executor is not None else []
    out: list[int | str] = []
    for name in visible_devices(ids).split(",") if ids else []:
        out.append(int(name) if name.isdigit() else name)
    return out


def current_actor_handle(worker: Worker, actor_id: bytes) -> ActorHandle[Any]:
    """A new handle to an actor hosted by this node, holding its creator's token (a borrow)
    when the actor has one."""
    executor = worker.executor
    hosted = executor.actors.get(actor_id) if executor is not None else None
    if hosted is None:
        raise RuntimeError(f"actor {actor_id.hex()} is not hosted by this node")
    spec, cls = hosted.spec, hosted.cls
    methods: dict[str, int] = {}
    if cls is not None:
        for name, member in inspect.getmembers(cls, predicate=inspect.isfunction):
            methods[name] = default_num_returns(member)
    token: ObjectRef[Any] | None = None
    owner = worker.view.get(spec.owner_id)
    if spec.name is None and not spec.detached and owner is not None:
        token = ObjectRef(actor_token_id(actor_id), spec.owner_id, owner.address)
    return ActorHandle(actor_id, spec.class_name, methods, token=token)


def exit_actor() -> None:
    """End the actor the calling method runs in, from inside it (Ray's ``actor.exit_actor``).

    An intended exit: the actor is not restarted, whatever its ``max_restarts``; the call
    that ran ``exit_actor`` and every later call fail with ActorDiedError (Ray's
    ``RayActorError``). Works in ``def`` and ``async def`` methods (it raises ActorExit, a
    SystemExit the node takes as the actor's exit). A plain ``sys.exit()`` in a method is
    the actor's process ending instead: it restarts if ``max_restarts`` allows, as in Ray.

    Raises:
        TypeError: called outside an actor method, as in Ray.
    """
    ctx = current_task.get()
    if ctx is None or ctx.actor_id is None:
        raise TypeError("exit_actor() is called outside an actor method")
    raise ActorExit(0)


def get_runtime_context() -> RuntimeContext:
    """The node, job, actor and task of the calling code."""
    worker = current_worker()
    ctx = current_task.get()
    return RuntimeContext(
        worker.peer_id,
        worker.job_id,
        worker.namespace,
        ctx.actor_id.hex() if ctx is not None and ctx.actor_id else None,
        ctx.task_id.hex() if ctx is not None and ctx.task_id else None,
        ctx.actor_name if ctx is not None else None,
    )
