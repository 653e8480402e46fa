"""Creating actors from a driver or a worker: the spec an ``ActorClass.remote()`` sends, and
the request that asks the head to place it (in the background, for an unnamed actor)."""

from __future__ import annotations

from typing import Any

from ..execution import runtime_env as renv
from ..objects import serialization as ser
from ..process.worker import Worker
from ..wire import protocol as p
from .options import (
    at_least,
    captured_bundle,
    dedicated_option,
    may_be_captured,
    strategy_option,
)


def _env_wire(owner: Any, worker: Any) -> Any:
    """The runtime_env of a function or class as sent (the job's under its own), made once
    per process: directories are zipped and shipped when first used."""
    cached = owner._env_wire
    if cached is not None and cached[0] is worker:
        return cached[1]
    env = renv.merge(worker.job_env, owner._env) if worker.job_env else owner._env
    wire = renv.prepare(worker, env)
    owner._env_wire = (worker, wire)
    return wire


def _captured_strategy(options: dict[str, Any]) -> list[Any] | None:
    """An actor created with no strategy inside a task whose placement group captures its
    children goes to that group (any bundle)."""
    captured = captured_bundle() if may_be_captured(options) else None
    return None if captured is None else ["pg", captured[0], captured[1]]


def actor_spec(cls: Any, worker: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> p.ActorSpec:
    """What creating an actor of ``cls`` (an ActorClass) with these arguments sends.

    A sync actor given ``max_concurrency=1`` explicitly gets a thread of its own on its node
    (``own_thread``); by default it is a strand on the node's shared pool (see
    ``common.strands``)."""
    o = cls._options
    resources, groups = cls._checked()
    lifetime = o.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}")
    max_conc = o.get("max_concurrency") or (1000 if cls._is_async else 1)
    if max_conc < 1:
        raise ValueError("max_concurrency must be >= 1")
    value = ser.serialize_inline(args, kwargs)
    namespace = o.get("namespace")
    if namespace is None:
        namespace = worker.namespace
    name = o.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError("an actor name must be a non-empty string")
    return p.ActorSpec(
        worker.new_id(),
        cls._cls.__name__,
        cls._cls_id,
        cls._pickled(),
        value,
        dict(resources),
        worker.peer_id,
        name,
        namespace,
        lifetime == "detached",
        max_conc,
        cls._is_async,
        strategy_option(o.get("scheduling_strategy"), o.get("label_selector"))
        or _captured_strategy(o),
        int(o.get("max_pending_calls", -1)),
        at_least(o, "max_restarts", -1),
        at_least(o, "max_task_retries", -1),
        _env_wire(cls, worker),
        dict(groups),
        dedicated_option(o.get("dedicated_process", False)),
        o.get("max_concurrency") == 1,
    )


def create_in_background(worker: Worker, spec: p.ActorSpec, get_if_exists: bool) -> None:
    """Ask the head to place an unnamed actor (loop), with the others created in this loop
    pass; its calls wait until the head says where it runs."""
    worker.creations.add(spec, get_if_exists)


__all__ = ["actor_spec", "create_in_background"]
