"""The user-facing core API: starting and joining a mesh, and the one blocking facade.

Core code is async and lives on the worker's loop. A script's calls (``runtime.get``,
``runtime.wait``, ...) come from another thread and block on a future the loop
resolves; ``async with runtime.connect()`` runs the worker on the caller's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast, overload

import msgspec
import uvloop

from ..client import tunnel as _client
from ..execution import runtime_env as _renv
from ..objects.refs import READY, ObjectRef, current_worker_or_none
from ..process import launcher
from ..process.worker import Worker
from ..submission.streaming import ObjectRefGenerator
from ..wire import protocol as p
from . import init_options
from .blocking import SLOW as _SLOW
from .blocking import blocking as _blocking
from .blocking import current_worker, set_auto_init, worker_or_init
from .blocking import get_owned as _get_owned
from .init_options import address_toward
from .remote import ActorHandle

T = TypeVar("T")

#: How long init() waits for the nodes of a new local mesh to join.
NODE_START_TIMEOUT = 60.0


@dataclass
class _Session:
    worker: Worker
    mesh: launcher.LocalMesh | None
    info: dict[str, Any]
    thread: threading.Thread | None = None


_lock = threading.Lock()
_session: _Session | None = None


# --- starting and stopping -------------------------------------------------------------------


async def _open(
    address: str | None,
    *,
    num_cpus: int | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    namespace: str | None,
    log_to_driver: bool,
    token: str | bytes | None,
    local_mode: bool,
    object_store_memory: int | None = None,
    ray: init_options.RayInitOptions = init_options.NO_OPTIONS,
) -> _Session:
    mesh: launcher.LocalMesh | None = None
    expect_nodes = 0
    if local_mode:
        res = {"CPU": float(num_cpus if num_cpus is not None else os.cpu_count() or 1)}
        if num_gpus:
            res["GPU"] = float(num_gpus)
        res.update(resources or {})
        worker = Worker(
            role="head", token=launcher.new_token(), resources=res, namespace=namespace or ""
        )
        await worker.start()
        return _Session(worker, None, _info(worker, None))
    from_env = address is None and bool(os.environ.get("RUNTIME_ADDRESS"))
    if from_env:  # as Ray's RAY_ADDRESS: a job's driver joins the cluster that runs it
        address = os.environ["RUNTIME_ADDRESS"]
    if address is None:
        n = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
        if n < 1:
            raise ValueError("num_cpus must be >= 1 for a local mesh (one node per CPU)")
        per_node = launcher.host_processes(n, num_gpus or 0.0, resources)
        mesh = init_options.start_local_mesh(
            ray, per_node, log_to_driver=log_to_driver, object_store_memory=object_store_memory
        )
        head_address, cluster_token = mesh.head_address, mesh.token
        expect_nodes = n + 1
    else:
        if num_cpus is not None or num_gpus is not None or resources:
            why = f" (RUNTIME_ADDRESS={address} makes init() join that cluster)" if from_env else ""
            raise ValueError(
                "num_cpus/num_gpus/resources only apply when init() starts a local mesh" + why
            )
        state_dir = None
        if address == "auto":
            head = launcher.find_local_head()
            head_address, state_dir = head["address"], head["state_dir"]
        else:  # runtime://HOST:PORT (ray://): a remote driver, through the head's client port
            head_address = address
        found = launcher.resolve_token(token, state_dir=state_dir)
        if found is None:
            try:
                head = launcher.find_local_head()
                if head["address"] == head_address:
                    found = launcher.resolve_token(None, state_dir=head["state_dir"])
            except ConnectionError:
                pass
        if found is None:
            raise ValueError(
                "no cluster token: pass token=..., or set RUNTIME_AUTH_TOKEN or "
                "RUNTIME_AUTH_TOKEN_FILE"
            )
        cluster_token = found
    tunnel = None
    if _client.is_client_address(head_address):
        tunnel = await _client.open_tunnel(head_address, cluster_token)
        head_address = tunnel.head_address
    worker = Worker(
        role="client" if tunnel is not None else "driver",
        token=cluster_token,
        host="127.0.0.1" if tunnel is not None else address_toward(head_address, ray.node_ip),
        head_address=head_address,
        tunnel=tunnel,
        namespace=namespace or "",
        labels={"log_to_driver": "1"} if log_to_driver else None,
    )
    try:
        await worker.start()
        if mesh is not None:
            await _wait_for_nodes(worker, mesh, expect_nodes)
    except BaseException:
        await worker.aclose()
        if mesh is not None:
            mesh.stop()
        raise
    return _Session(worker, mesh, _info(worker, mesh))


async def _wait_for_nodes(worker: Worker, mesh: launcher.LocalMesh, expect: int) -> None:
    try:
        async with asyncio.timeout(NODE_START_TIMEOUT):
            while sum(1 for n in worker.view.values() if not n.is_driver) < expect:
                changed = worker.view_changed
                dead = [p.pid for p in mesh.procs if p.poll() is not None]
                if dead:
                    raise RuntimeError(
                        f"node processes {dead} exited while the local mesh was starting"
                    )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await changed.wait()
    except TimeoutError:
        raise RuntimeError(f"the local mesh did not start within {NODE_START_TIMEOUT}s") from None


def _info(worker: Worker, mesh: launcher.LocalMesh | None) -> dict[str, Any]:
    return {
        "address": worker.head_address,
        "node_id": worker.peer_id,
        "namespace": worker.namespace,
        "session_dir": mesh.state_dir if mesh is not None else worker.state_dir,
    }


async def _close(session: _Session) -> None:
    await session.worker.aclose()
    if session.mesh is not None:
        await asyncio.get_running_loop().run_in_executor(None, session.mesh.stop)


def init(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    namespace: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    log_to_driver: bool = True,
    token: str | bytes | None = None,
    local_mode: bool = False,
    ignore_reinit_error: bool = False,
    object_store_memory: int | None = None,
    **ray_options: Any,
) -> dict[str, Any]:
    """Start a local mesh, or join one, and make this process its driver.

    Args:
        address: None starts a local mesh (a head plus ``num_cpus`` nodes, one per core by
            default) whose processes die with this one, unless ``RUNTIME_ADDRESS`` is set
            (as Ray's ``RAY_ADDRESS``; a job's driver has it): then None joins that address;
            ``"auto"`` joins the head started on this host by ``python -m runtime.node
            --head``; ``"HOST:PORT"`` joins that head.
        num_cpus, num_gpus, resources: the local mesh's resources.
        namespace: the namespace for named actors.
        token: the cluster token (else ``RUNTIME_AUTH_TOKEN``, ``RUNTIME_AUTH_TOKEN_FILE``,
            or the token a local head wrote in its state directory).
        local_mode: run everything in this process (same serialization and semantics).
        object_store_memory: bytes each node's object store (and this driver's) keeps in
            memory before spilling to disk (default 30% of RAM, or
            ``RUNTIME_OBJECT_STORE_MEMORY``).
        ray_options: Ray's other ``init()`` options (``job_config``, ``logging_level``,
            ``_temp_dir``, ``_node_ip_address``, ``include_dashboard``, ...): applied where
            they mean something here, else accepted with a one-time warning
            (:mod:`runtime.core.api.init_options`); unknown names raise TypeError.

    Returns:
        A dict with the head ``address``, this driver's ``node_id`` and the ``namespace``.

    Example::

        runtime.init(num_cpus=2)
    """
    ray = init_options.apply(ray_options, runtime_env=runtime_env)
    runtime_env, namespace = ray.runtime_env, namespace or ray.namespace
    job_env = _renv.validate(init_options.job_runtime_env(runtime_env))
    if object_store_memory is not None and (
        not isinstance(object_store_memory, int) or object_store_memory <= 0
    ):
        raise ValueError(f"object_store_memory must be an int > 0, got {object_store_memory!r}")
    global _session
    with _lock:
        if _session is not None:
            if ignore_reinit_error:
                return _session.info
            raise RuntimeError("runtime.init() was already called; call runtime.shutdown() first")
        member = current_worker_or_none()
        if member is not None:  # inside a task or actor: this process is already a member
            if ignore_reinit_error:
                return _info(cast(Worker, member), None)
            raise RuntimeError(
                "runtime.init() inside a task or actor: this process is already part of the "
                "cluster (pass ignore_reinit_error=True to get its info)"
            )
        loop = uvloop.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name="runtime-loop", daemon=True)
        thread.start()
        before = launcher.live_meshes()
        coro = _open(
            address,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            resources=resources,
            namespace=namespace,
            log_to_driver=log_to_driver,
            token=token,
            local_mode=local_mode,
            object_store_memory=object_store_memory,
            ray=ray,
        )
        try:
            session = asyncio.run_coroutine_threadsafe(coro, loop).result()
        except BaseException:  # no loop, no node process outlives a failed init()
            launcher.abandon_start(loop, thread, before)
            raise
        if object_store_memory is not None:
            session.worker.store.capacity = object_store_memory
        session.thread = thread
        session.worker.job_env = job_env
        _session = session
        launcher.cleanup_on_sigterm(session.mesh)  # remove the session dir on SIGTERM too
        return session.info


def _auto_init() -> None:
    """Start a local mesh on first use, as Ray's ``ray.init()`` happens on the first
    ``.remote()``/``put``/``get``; ``RUNTIME_AUTO_INIT=0`` turns it off (then those calls
    raise the error that says to call ``runtime.init()``)."""
    if os.environ.get("RUNTIME_AUTO_INIT", "1") == "0":
        return
    init(ignore_reinit_error=True)


set_auto_init(_auto_init)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def shutdown() -> None:
    """Disconnect, and stop the local mesh this process started; leaves no process behind."""
    global _session
    with _lock:
        session, _session = _session, None
        if session is None:
            return
        loop = session.worker.loop
        try:
            asyncio.run_coroutine_threadsafe(_close(session), loop).result(timeout=30)
        finally:
            if session.thread is not None:
                loop.call_soon_threadsafe(loop.stop)
                session.thread.join(timeout=10)
                if not loop.is_running():
                    loop.close()
            if session.mesh is not None:
                session.mesh.stop()


def is_initialized() -> bool:
    """True between init() (or inside connect()) and shutdown(), and inside tasks and actors."""
    return _session is not None or current_worker_or_none() is not None


@dataclass
class Cluster:
    """What ``async with runtime.connect()`` yields."""

    address: str | None
    node_id: str
    namespace: str


@contextlib.asynccontextmanager
async def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    namespace: str | None = None,
    log_to_driver: bool = True,
    token: str | bytes | None = None,
    local_mode: bool = False,
    runtime_env: dict[str, Any] | None = None,
) -> AsyncIterator[Cluster]:
    """Like init(), on the caller's event loop; leaving the block is shutdown().

    Example::

        async with runtime.connect(num_cpus=2):
            print(await square.remote(3))
    """
    job_env = _renv.validate(init_options.job_runtime_env(runtime_env))
    global _session
    with _lock:
        if _session is not None:
            raise RuntimeError("the runtime is already initialized in this process")
    session = await _open(
        address,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        resources=resources,
        namespace=namespace,
        log_to_driver=log_to_driver,
        token=token,
        local_mode=local_mode,
    )
    session.worker.job_env = job_env
    with _lock:
        _session = session
    try:
        yield Cluster(session.info["address"], session.worker.peer_id, session.worker.namespace)
    finally:
        with _lock:
            _session = None
        await _close(session)


# --- the blocking facade -------------------------------------------------------------------------


@overload
def get(object_refs: ObjectRef[T], *, timeout: float | None = None) -> T: ...
@overload
def get(object_refs: Sequence[ObjectRef[T]], *, timeout: float | None = None) -> list[T]: ...
def get(object_refs: Any, *, timeout: float | None = None) -> Any:
    """Block until the objects are ready and return their values.

    Args:
        object_refs: one ObjectRef or a list of them (Ray's parameter name).
        timeout: seconds to wait at most; then GetTimeoutError.

    Raises:
        TaskError: the task that makes the object raised (also an instance of its error type).
        GetTimeoutError: the timeout passed.

    Example::

        assert runtime.get(square.remote(4)) == 16
    """
    refs = object_refs
    worker = worker_or_init()
    if isinstance(refs, ObjectRef):
        found, value = worker.try_get_local(refs)
        if found:
            return value
        values = _get_owned(worker, (refs,), timeout)
        if values is not _SLOW:
            return values[0]
        return _blocking(worker, worker.get_async(refs), timeout)
    if isinstance(refs, list | tuple):
        for r in refs:
            if not isinstance(r, ObjectRef):
                raise TypeError(f"runtime.get takes ObjectRefs, got {type(r).__name__}")
        values = _get_owned(worker, refs, timeout)  # in order: the first error raises
        if values is not _SLOW:
            return values
        return _blocking(worker, _gather(worker, list(refs)), timeout)
    raise TypeError(f"runtime.get takes an ObjectRef or a list of them, got {type(refs).__name__}")


async def _gather(worker: Worker, refs: list[ObjectRef[Any]]) -> list[Any]:
    out: list[Any] = []
    for ref in refs:  # in order: the first error raises, like Ray
        out.append(await worker.get_async(ref))
    return out


def put(value: T) -> ObjectRef[T]:
    """Store ``value`` in the cluster and return a ref to it (owned by this process)."""
    if isinstance(value, ObjectRef):
        raise TypeError("put() of an ObjectRef is not allowed; pass the ref itself")
    return worker_or_init().put(value)


#: What runtime.wait takes: refs, and streaming generators.
_Waitable = TypeVar("_Waitable", bound=ObjectRef[Any] | ObjectRefGenerator)


def wait(
    ray_waitables: Sequence[_Waitable],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[_Waitable], list[_Waitable]]:
    """Wait until ``num_returns`` of ``ray_waitables`` are ready (or ``timeout`` passes).

    ``ray_waitables`` (Ray's name) may hold ObjectRefGenerators (as in Ray): a generator is
    ready when its next item is there, or when it has ended (``next()`` answers at once).

    Returns:
        (ready, not_ready), each in the order of ``ray_waitables``.
    """
    del fetch_local
    refs = list(ray_waitables)
    if not 0 <= num_returns <= len(refs):
        raise ValueError(f"num_returns={num_returns} must be between 0 and len(refs)={len(refs)}")
    if len(set(refs)) != len(refs):
        raise ValueError("wait() got the same ref twice")
    worker = worker_or_init()
    return _blocking(worker, wait_async(worker, refs, num_returns, timeout))


async def wait_async(
    worker: Worker, refs: list[_Waitable], num_returns: int, timeout: float | None
) -> tuple[list[_Waitable], list[_Waitable]]:
    ready: set[_Waitable] = set()
    for r in refs:
        if isinstance(r, ObjectRefGenerator):
            if r._state.is_ready():
                ready.add(r)
            continue
        entry = worker.refs.owned.get(r.id)
        if entry is not None and entry.state == READY:
            ready.add(r)

    def ready_when(r: _Waitable) -> Coroutine[Any, Any, Any]:
        if isinstance(r, ObjectRefGenerator):
            return r._state.wait_ready()
        return worker.wait_ready(r)

    if len(ready) < num_returns:
        waiting = {asyncio.ensure_future(ready_when(r)): r for r in refs if r not in ready}
        try:
            async with asyncio.timeout(timeout):
                while len(ready) < num_returns:
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    for fut in done:
                        ready.add(waiting.pop(fut))
        except TimeoutError:
            pass
        finally:
            for fut in waiting:
                fut.cancel()
            for fut in waiting:
                with contextlib.suppress(BaseException):
                    await fut
    chosen = [r for r in refs if r in ready][: max(num_returns, 0)] if num_returns else []
    picked = set(chosen)
    return chosen, [r for r in refs if r not in picked]


# --- actors -----------------------------------------------------------------------------------


def get_actor(name: str, namespace: str | None = None) -> ActorHandle[Any]:
    """The handle of the live actor named ``name`` (ValueError if there is none)."""
    worker = worker_or_init()
    ns = worker.namespace if namespace is None else namespace
    raw = _blocking(worker, worker.head_request(p.GetActor(0, name, ns)))
    loc = msgspec.convert(raw, p.ActorLocation)
    if loc.state == "DEAD":
        raise ValueError(f"the actor named {name!r} is dead: {loc.death_cause}")
    worker.inbox.post(worker.actor_state, loc.actor_id, loc if loc.state == "ALIVE" else None)
    return ActorHandle(loc.actor_id, loc.class_name, {}, loc)


def kill(actor: ActorHandle[Any], *, no_restart: bool = True) -> None:
    """Stop an actor now; calls in flight fail with ActorDiedError."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"runtime.kill takes an ActorHandle, got {type(actor).__name__}")
    worker = current_worker()
    actor_id = actor._actor_id
    msg = p.KillActor(0, actor_id, no_restart)
    if worker.inbox.on_loop():
        worker.spawn(worker.head_request(msg))
    else:
        _blocking(worker, worker.head_request(msg))
    if no_restart:
        worker.inbox.post(worker.actor_killed, actor_id)


def cancel(
    ray_waitable: ObjectRef[Any] | ObjectRefGenerator,
    *,
    force: bool = False,
    recursive: bool = True,
) -> None:
    """Cancel the task or actor call that makes ``ref`` (or a streaming generator).

    A call that has not started never runs; a running async task or method gets
    ``asyncio.CancelledError``; a running sync task sees
    ``get_runtime_context().is_cancelled()`` become True (``force=True`` also raises
    TaskCancelledError in its thread at the next Python bytecode). Getting the result raises
    TaskCancelledError. ``recursive``: the tasks it submitted are cancelled too. Cancelling a
    finished task does nothing. Only the process that submitted the call can cancel it.
    The parameter names (``object_refs``, ``ray_waitables``, ``ray_waitable``) are Ray's.
    """
    ref = ray_waitable
    worker = current_worker()
    if isinstance(ref, ObjectRefGenerator):
        task_id = ref.task_id
    elif isinstance(ref, ObjectRef):
        if ref.owner_id != worker.peer_id:
            raise ValueError(
                "runtime.cancel: only the process that submitted the task can cancel it "
                "(this ref was passed in from elsewhere)"
            )
        task_id = ref.id[:-4]
    else:
        raise TypeError(f"runtime.cancel takes an ObjectRef, got {type(ref).__name__}")

    def on_loop() -> None:
        task = worker.tasks.get(task_id)
        if force and task is not None and task.actor_id is not None:
            raise ValueError("force=True is not supported for actor calls (as in Ray)")
        worker.cancel_task(task_id, force=force, recursive=recursive)

    if worker.inbox.on_loop():
        on_loop()
    else:
        _blocking(worker, _call(on_loop))


async def _call(fn: Callable[[], T]) -> T:
    return fn()
