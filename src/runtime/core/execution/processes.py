"""Node processes a node starts on demand, for work that must not share its process: an actor
made with ``dedicated_process=True`` (its crash takes nothing else down), or the tasks of one
``runtime_env`` (their ``os.environ`` and working directory are theirs alone).

A child is ``python -m runtime.node`` joining the same head with no resources of its own: the
node that starts it holds what the work asks for on its own ledger, so every figure counts it
once. It carries a role label (:data:`~runtime.core.scheduling.scheduler.ROLE_LABEL`), so
nothing else is ever placed on it. Its fate is tied to its parent's by the launcher's parent
pipe (``--parent-fd``: the child reads EOF when the parent dies, even by SIGKILL, and exits; the
kernel's parent-death signal besides). It says it is up by writing ``node_id address`` on
``--ready-fd``; its exit is seen through a pidfd on the loop (no thread, no polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..common.exceptions import ActorDiedError, RuntimeBaseError
from ..common.private import private_dir
from ..scheduling.gpus import visible_devices
from ..scheduling.scheduler import FOR_LABEL, ROLE_LABEL
from ..wire import protocol as p
from ..wire.transport import Connection
from .runtime_env import EnvManager, Prepared
from .zygote import ForkedProcess, Zygote, ZygoteError, enabled, forkable, preload_at_start

log = logging.getLogger("runtime.processes")

#: How long a child may take to join the cluster (``RUNTIME_CHILD_START_S``).
START_S = float(os.environ.get("RUNTIME_CHILD_START_S", "60"))
#: How many GPUs the actor a dedicated process was started for holds (its GPU ids there are
#: 0..n-1: its CUDA_VISIBLE_DEVICES lists them, mapped through the parent's).
ACTOR_GPUS_ENV = "RUNTIME_ACTOR_GPUS"
#: After its actor stopped, a dedicated process lingers this long (its last messages flush).
LINGER_S = 0.2


class ProcessHost(Protocol):
    """What starting child processes needs of the node's worker (the worker is one)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def token(self) -> bytes: ...
    @property
    def host(self) -> str: ...
    @property
    def head_address(self) -> str | None: ...
    @property
    def state_dir(self) -> str | None: ...
    @property
    def labels(self) -> dict[str, str]: ...
    @property
    def resources(self) -> dict[str, float]: ...
    @property
    def slot(self) -> float: ...
    async def connect_address(self, address: str, peer_id: str | None = None) -> Connection: ...
    async def request(self, conn: Connection, msg: Any, buffers: Sequence[Any] = ()) -> Any: ...


class ChildStartError(RuntimeBaseError, RuntimeError):
    """A child node process did not come up (it exited, or did not join in time)."""


@dataclass(eq=False)
class Child:
    """One node process this process started."""

    proc: subprocess.Popen[bytes] | ForkedProcess
    role: str
    for_id: str
    node_id: str = ""
    address: str = ""
    #: What the parent holds for it (released when it exits).
    held: dict[str, float] = field(default_factory=dict)
    bundle: tuple[bytes, int] | None = None
    on_exit: list[Callable[[Child], None]] = field(default_factory=list)
    exited: bool = False

    def terminate(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()


class ChildProcesses:
    """The node processes this process started (a part of the node's executor)."""

    def __init__(self, worker: ProcessHost) -> None:
        self.worker = worker
        self.children: dict[int, Child] = {}
        #: The environment children start with: taken now, before any task sets env_vars.
        self.base_env = dict(os.environ)
        self._death_r = -1
        self._death_w = -1
        self._token_file: str | None = None
        #: The warm process dedicated actors' processes are forked from (started on first use,
        #: or with the node where RUNTIME_ZYGOTE_PRELOAD names modules to import at once).
        self._zygote: asyncio.Future[Zygote | None] | None = None
        self._warming: asyncio.Task[Zygote | None] | None = None
        warm = preload_at_start(self.base_env)
        hosts_work = worker.slot > 0 or any(worker.resources.values())
        if warm and hosts_work and self.role()[0] in ("", "head-node"):  # not a child
            self._warming = worker.loop.create_task(self._started_zygote(warm))

    # --- what this process is -----------------------------------------------------------

    def role(self) -> tuple[str, str]:
        """(role, what for) of this process: ("", "") for an ordinary node."""
        labels = self.worker.labels
        return labels.get(ROLE_LABEL, ""), labels.get(FOR_LABEL, "")

    def serves_actor(self, actor_id: bytes) -> bool:
        """True in the process started for this actor alone."""
        return self.role() == ("actor", actor_id.hex())

    def after_actor_stopped(self, actors_left: int) -> None:
        """A dedicated process ends with its actor (its parent then frees what it held)."""
        if self.role()[0] == "actor" and actors_left == 0:
            self.worker.loop.call_later(LINGER_S, os.kill, os.getpid(), signal.SIGTERM)

    # --- starting children ----------------------------------------------------------------

    def _parent_pipe(self) -> int:
        """The read end children get (the launcher's mechanism); this process keeps the write
        end, never inherited, so it closes only when this process ends."""
        if self._death_r < 0:
            self._death_r, self._death_w = os.pipe()
            os.set_inheritable(self._death_w, False)
        return self._death_r

    def _token_args(self) -> list[str]:
        path = self.base_env.get("RUNTIME_NODE_TOKEN_FILE")
        if path and os.path.exists(path):
            return ["--token-file", path]
        if self._token_file is None:
            base = self.worker.state_dir or os.path.join(
                tempfile.gettempdir(), f"runtime-{os.getuid()}"
            )
            where = private_dir(os.path.join(base, "children"))
            path = os.path.join(where, f"token-{os.getpid()}")
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.worker.token.hex())
            self._token_file = path
        return ["--token-file", self._token_file]

    async def start(
        self,
        role: str,
        for_id: str,
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        args: tuple[str, ...] = (),
        preload: Sequence[str] = (),
    ) -> Child:
        """Start a child node process for ``role`` (``"actor"``, ``"env"``, or ``""`` for an
        ordinary node with ``args`` as its resources) and wait until it joined the cluster.
        An actor's process is forked from the zygote when its environment allows (having
        imported ``preload``), else started afresh."""
        worker = self.worker
        head = worker.head_address
        assert head is not None
        death_r = self._parent_pipe()
        ready_r, ready_w = os.pipe()
        node_args = ["--address", head, "--host", worker.host, *self._token_args(), *args]
        if role:
            node_args += ["--num-cpus", "0", "--role", f"{role}:{for_id}"]
        if worker.state_dir:
            node_args += ["--state-dir", worker.state_dir]
        child_env = dict(self.base_env if env is None else env)
        child_env["PYTHONUNBUFFERED"] = "1"
        proc: subprocess.Popen[bytes] | ForkedProcess | None = None
        try:
            if role == "actor" and enabled() and forkable(self.base_env, env, cwd):
                proc = await self._fork(node_args, child_env, (death_r, ready_w), preload)
            if proc is None:
                cmd = [sys.executable, "-m", "runtime.node", *node_args,
                       "--parent-fd", str(death_r), "--ready-fd", str(ready_w)]  # fmt: skip
                # Started from the loop's thread on purpose: the child's parent-death signal
                # fires when the thread that started it ends, so not from a pool thread.
                proc = subprocess.Popen(  # noqa: ASYNC220
                    cmd, pass_fds=(death_r, ready_w), env=child_env, cwd=cwd,
                    stdin=subprocess.DEVNULL,
                )  # fmt: skip
        finally:
            os.close(ready_w)
        child = Child(proc, role, for_id)
        self.children[proc.pid] = child
        self._watch_exit(child)
        try:
            line = await self._read_ready(ready_r, child)
        except BaseException:
            child.terminate()
            raise
        node_id, _, address = line.partition(" ")
        child.node_id, child.address = node_id, address
        log.info("started %s process %s (pid %d) for %s", role, node_id, proc.pid, for_id)
        return child

    async def _fork(
        self,
        node_args: list[str],
        env: dict[str, str],
        fds: tuple[int, int],
        preload: Sequence[str],
    ) -> ForkedProcess | None:
        """A child forked from the zygote (started on first use), or None where that failed
        (the caller starts one afresh)."""
        zygote = await self._started_zygote()
        if zygote is None or zygote.dead:
            return None
        try:
            return await zygote.fork(node_args, env, fds, preload, START_S)
        except ZygoteError as exc:
            log.warning("the zygote did not fork (starting a process afresh): %s", exc)
            return None

    async def _started_zygote(self, warm: Sequence[str] = ()) -> Zygote | None:
        """The zygote, started now if it is not (importing ``warm`` once ready)."""
        if self._zygote is None:
            self._zygote = self.worker.loop.create_future()
            zygote: Zygote | None = Zygote(self.worker.loop, self.base_env)
            assert zygote is not None
            try:
                await zygote.start(START_S, warm)
            except (OSError, ZygoteError, TimeoutError) as exc:
                log.warning("no zygote (dedicated processes start afresh): %s", exc)
                zygote = None
            except BaseException:
                self._zygote.set_result(None)
                self._zygote = None
                raise
            self._zygote.set_result(zygote)
        return await asyncio.shield(self._zygote)

    async def _read_ready(self, fd: int, child: Child) -> str:
        loop = self.worker.loop
        got: asyncio.Future[str] = loop.create_future()
        data = bytearray()

        def readable() -> None:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            data.extend(chunk)
            if (b"\n" in data or not chunk) and not got.done():
                loop.remove_reader(fd)
                if b"\n" in data:
                    got.set_result(bytes(data).split(b"\n", 1)[0].decode())
                else:
                    got.set_exception(
                        ChildStartError(
                            f"the {child.role} process (pid {child.proc.pid}) exited before it "
                            "joined the cluster (see its output above)"
                        )
                    )

        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
        try:
            async with asyncio.timeout(START_S):
                return await got
        except TimeoutError:
            raise ChildStartError(
                f"the {child.role} process (pid {child.proc.pid}) did not join the cluster "
                f"within {START_S:g} s"
            ) from None
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    def _watch_exit(self, child: Child) -> None:
        loop = self.worker.loop
        if isinstance(child.proc, ForkedProcess):  # the zygote reports its exit
            if child.proc.returncode is not None:
                loop.call_soon(self._exited, child)
            else:
                child.proc.on_exit.append(lambda: self._exited(child))
            return
        try:
            pidfd = os.pidfd_open(child.proc.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel): a thread waits instead
            loop.run_in_executor(None, child.proc.wait).add_done_callback(
                lambda _: self._exited(child)
            )
            return

        def gone() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._exited(child)

        loop.add_reader(pidfd, gone)

    def _exited(self, child: Child) -> None:
        if child.exited:
            return
        child.exited = True
        child.proc.wait()  # it has exited: reap it at once
        self.children.pop(child.proc.pid, None)
        log.info("%s process %s (pid %d) exited with %s", child.role, child.node_id,
                 child.proc.pid, child.proc.returncode)  # fmt: skip
        for callback in child.on_exit:
            try:
                callback(child)
            except Exception:
                log.exception("handling the exit of a child process failed")

    async def host_actor(
        self,
        spec: p.ActorSpec,
        bundle: tuple[bytes, int] | None,
        release: Callable[[dict[str, float], tuple[bytes, int] | None], None],
        envs: EnvManager,
        gpu_ids: list[int] | None = None,
    ) -> list[Any]:
        """Start a node process for this actor alone and create it there: [node id, address].
        This process holds the actor's resources (taken already) until that process exits,
        then gives them back with ``release``. Its runtime_env, unpacked here by ``envs``, is
        that process's own (environment, working directory, import path)."""
        child = None
        try:
            env = await envs.prepare(spec.runtime_env) if spec.runtime_env else None
            try:
                options = self.env_options(env)
                if gpu_ids:  # the child sees the actor's GPUs as its own, from index 0
                    child_env = dict(options.get("env") or self.base_env)
                    child_env["CUDA_VISIBLE_DEVICES"] = visible_devices(gpu_ids)
                    child_env[ACTOR_GPUS_ENV] = str(len(gpu_ids))
                    options["env"] = child_env
                preload = spec.dedicated if isinstance(spec.dedicated, list) else ()
                child = await self.start("actor", spec.actor_id.hex(), preload=preload, **options)
            except (OSError, ChildStartError) as exc:  # not for want of room: trying again
                # would fail again, so the actor dies saying why
                raise ActorDiedError(
                    f"the process of actor {spec.class_name} could not start: {exc}"
                ) from exc
            child.held, child.bundle = dict(spec.resources), bundle
            child.on_exit.append(lambda c: release(c.held, c.bundle))
            conn = await self.worker.connect_address(child.address, child.node_id)
            p.unwrap_reply(await self.worker.request(conn, p.CreateActor(0, spec)))
        except BaseException:
            if child is None:
                release(dict(spec.resources), bundle)
            else:
                child.terminate()  # its exit gives the resources back
            raise
        return [child.node_id, child.address]

    def env_options(self, env: Prepared | None) -> dict[str, Any]:
        """The environment and working directory a child starts with, for ``env``."""
        if env is None:
            return {}
        child_env = {**self.base_env, **env.env_vars}
        if env.sys_paths:
            old = self.base_env.get("PYTHONPATH")
            child_env["PYTHONPATH"] = os.pathsep.join([*env.sys_paths, *([old] if old else [])])
        return {"env": child_env, "cwd": env.working_dir}

    def held(self) -> list[dict[str, float]]:
        """What this process holds for its children (outside placement group bundles)."""
        return [c.held for c in self.children.values() if c.bundle is None and c.held]

    def close(self) -> None:
        """Stop every child (they would follow through the parent pipe anyway)."""
        for child in list(self.children.values()):
            child.terminate()
        for fd in (self._death_w, self._death_r):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._death_r = self._death_w = -1
        if self._warming is not None:
            self._warming.cancel()  # a zygote still starting is stopped by its start()
        zygote = self._zygote.result() if self._zygote and self._zygote.done() else None
        if zygote is not None:
            zygote.close()
        if self._token_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._token_file)


__all__ = ["Child", "ChildProcesses", "ChildStartError", "ProcessHost"]
