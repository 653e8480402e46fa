"""A process per runtime_env: tasks with a ``runtime_env`` run in a node process kept for that
environment (its ``os.environ``, working directory and import path are the environment's
own), not in the node process that received them, as Ray gives each environment its own
workers.

The node that receives such a task takes its resources on its own ledger as for any task,
then relays it to the environment's pool process on this host (a child node process started
on demand, :mod:`.processes`, role ``"env"``) and relays the answer back to the submitter.
The pool process runs it like any node (the function loads, the arguments are fetched there);
its results may stay in its store, so the owner fetches them from it. A pool that ran nothing
for :func:`idle_after` seconds, and holds no object (owned or stored), is stopped; a later
task of that environment starts a new one. A streaming task is relayed too: its items come
back through the node to the submitter in order (large ones stay in the pool's store), and the
submitter's acknowledgements go on to the pool, which paces the generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from typing import Any

import msgspec

from ..common.exceptions import NodeDiedError
from ..objects import serialization as ser
from ..scheduling.host import HostScheduler
from ..scheduling.scheduler import RESERVED_ROLES, LocalScheduler
from ..wire import protocol as p
from ..wire.transport import Connection, split_buffers
from .calls import ExecutionHost, Job
from .processes import Child, ChildProcesses
from .runtime_env import EnvManager

log = logging.getLogger("runtime.processes")

Handler = Callable[[Connection, Any, memoryview], None]


def idle_after() -> float:
    """Seconds a runtime_env pool process may stay idle before it is stopped
    (``RUNTIME_ENV_POOL_IDLE_S``, default 30)."""
    return float(os.environ.get("RUNTIME_ENV_POOL_IDLE_S", "30"))


def env_key(wire: Any) -> str:
    """One name per environment (its env vars and the content hashes of its packages)."""
    return hashlib.sha256(msgspec.json.encode(wire, order="sorted")).hexdigest()[:16]


class EnvPools:
    """The runtime_env pool processes of this node, and the tasks relayed to them."""

    def __init__(
        self,
        worker: ExecutionHost,
        children: ChildProcesses,
        envs: EnvManager,
        jobs: dict[bytes, Job],
        *,
        release: Callable[[dict[str, float], tuple[bytes, int] | None], None],
        ledger: Callable[[tuple[bytes, int] | None], LocalScheduler | HostScheduler | None],
        report: Callable[[], None],
    ) -> None:
        self.worker = worker
        self.children = children
        self.envs = envs
        self.jobs = jobs
        self.release = release
        self.ledger = ledger
        self.report = report
        #: Relayed tasks blocked in get() in their pool: their resources are lent out here.
        self.lent: set[bytes] = set()
        #: This process is itself a pool (or a dedicated process): it relays nothing.
        #: Not in a reserved process (nor in the head: see wants()).
        self.relays = children.role()[0] not in RESERVED_ROLES
        #: This process is a pool: its parent holds the resources of what it runs.
        self.is_pool = children.role()[0] == "env"
        #: Environment key -> its pool process (starting or up).
        self.pools: dict[str, asyncio.Future[Child]] = {}
        #: Tasks granted here, to relay once they start: task id -> (message, environment key).
        self.to_relay: dict[bytes, tuple[p.SubmitTask, str]] = {}
        #: The pickled functions this node was sent (a submitter sends one once per node; a
        #: pool process gets it with every task relayed to it).
        self.blobs: dict[bytes, bytes] = {}
        #: Tasks running in a pool: task id -> (job, pool, connection to it).
        self.relayed: dict[bytes, tuple[Job, Child, Connection]] = {}

    def wants(self, msg: p.SubmitTask) -> bool:
        """True for a task this node runs in its environment's pool process."""
        # The head runs tasks only in local mode, where everything runs in one process.
        return self.relays and bool(msg.runtime_env) and self.worker.head is None

    def keep(self, job: Job, msg: p.SubmitTask) -> None:
        """``job`` runs in its pool once granted (the executor queues it as any task)."""
        if msg.fn_blob is not None:
            self.blobs[msg.fn_id] = msg.fn_blob
        else:
            msg.fn_blob = self.blobs.get(msg.fn_id)
        self.to_relay[job.task_id] = (msg, env_key(msg.runtime_env))

    def starts(self, job: Job) -> bool:
        """The executor granted ``job``: relay it if it is one of ours (True)."""
        entry = self.to_relay.pop(job.task_id, None)
        if entry is None:
            return False
        self.worker.spawn(self._relay(job, *entry))
        return True

    async def _relay(self, job: Job, msg: p.SubmitTask, key: str) -> None:
        try:
            child = await self._pool(key, msg.runtime_env)
            conn = await self.worker.connect_address(child.address, child.node_id)
        except Exception as exc:  # the pool did not start: the task fails, saying why
            self._end(job, ser.system_error_value(NodeDiedError, f"{job.name}: {exc}"))
            return
        if child.exited:
            self._end(job, self._died(job, child))
            return
        self.relayed[job.task_id] = (job, child, conn)
        conn.send(msg, job.buffers)

    async def _pool(self, key: str, wire: Any) -> Child:
        fut = self.pools.get(key)
        if fut is None:
            fut = self.pools[key] = self.worker.loop.create_future()
            try:
                env = await self.envs.prepare(wire)
                child = await self.children.start("env", key, **self.children.env_options(env))
            except BaseException as exc:
                del self.pools[key]
                fut.set_exception(exc)
                fut.exception()  # retrieved: the waiters raise it
                raise
            child.on_exit.append(lambda c: self._pool_exited(key, c))
            fut.set_result(child)
        return await asyncio.shield(fut)

    # --- answers ------------------------------------------------------------------------

    def answers(self, submitted: Handler) -> Handler:
        """The TaskDone handler: relayed tasks' answers go back to their submitters; the
        rest to ``submitted`` (this process's own tasks), as before."""
        relayed = self.relayed

        def on_task_done(conn: Connection, msg: p.TaskDone, raw: memoryview) -> None:
            if relayed and msg.task_id in relayed:
                self._answered(msg, raw)
            else:
                submitted(conn, msg, raw)

        return on_task_done

    def _answered(self, msg: p.TaskDone, raw: memoryview) -> None:
        job, child, _ = self.relayed.pop(msg.task_id)
        sizes = [n for v in msg.returns if isinstance(v, p.Value) for n in v.bufs]
        buffers, _ = split_buffers(raw, sizes, 0)
        self._end(job, None, msg, buffers)
        self._maybe_idle(child)

    def _end(
        self,
        job: Job,
        error: p.Value | None,
        done: p.TaskDone | None = None,
        buffers: list[Any] | None = None,
    ) -> None:
        self.jobs.pop(job.task_id, None)
        job.conn.send(done or p.TaskDone(job.task_id, error=error), buffers or [])
        if job.args.refs:
            self.worker.refs.unpin(job.args.refs)
        if job.task_id in self.lent:  # given back already, while it was blocked
            self.lent.discard(job.task_id)
        else:
            self.release(job.demand, job.bundle)

    @staticmethod
    def lent_here(ledger: HostScheduler, demand: dict[str, float], sign: int) -> None:
        """In a pool: the node that relayed a task holds its resources, so this process's
        ledger grows by them while the task is here (``sign`` 1), and shrinks after (-1)."""
        ledger.lend_in(demand, sign)

    def lend(self, task_id: bytes, lent: bool) -> None:
        """In a pool: a task blocks in get() (or runs again); tell the node holding its
        resources, so that others may use them meanwhile (as a task on a node would)."""
        job = self.jobs.get(task_id)
        if job is not None:
            job.conn.send(p.LendResources(task_id, lent))

    def on_lend(self, msg: p.LendResources) -> None:
        """A relayed task blocks in get() in its pool (its resources serve others meanwhile),
        or runs again (it takes them back, even over budget for a while)."""
        entry = self.relayed.get(msg.task_id)
        if entry is None or msg.lent == (msg.task_id in self.lent):
            return
        job = entry[0]
        if msg.lent:
            self.lent.add(msg.task_id)
            self.release(job.demand, job.bundle)
            return
        self.lent.discard(msg.task_id)
        ledger = self.ledger(job.bundle)
        if ledger is not None:
            ledger.reacquire(job.demand)
            self.report()

    def forward_item(self, msg: p.StreamItem, raw: memoryview) -> bool:
        """An item of a streaming task running in a pool: on to its submitter (True), in the
        order the pool sent them (before the task's answer, which follows them)."""
        entry = self.relayed.get(msg.task_id)
        if entry is None:
            return False
        value = msg.value
        bufs: list[Any] = []
        if isinstance(value, p.Value) and value.bufs:
            bufs, _ = split_buffers(raw, value.bufs, 0)
        entry[0].conn.send(msg, bufs)
        return True

    def forward_ack(self, msg: p.StreamAck) -> bool:
        """The submitter consumed items of a stream running in a pool: tell the pool (True),
        whose generator waits for room in its window."""
        entry = self.relayed.get(msg.task_id)
        if entry is None:
            return False
        entry[2].send(msg)
        return True

    def cancel(self, task_id: bytes, force: bool, recursive: bool) -> bool:
        """A relayed task is cancelled in its pool (True: it was one)."""
        entry = self.relayed.get(task_id)
        if entry is None:
            return False
        entry[2].send(p.CancelTask(task_id, force, recursive))
        return True

    # --- pools ending -------------------------------------------------------------------

    @staticmethod
    def _died(job: Job, child: Child) -> p.Value:
        return ser.system_error_value(
            NodeDiedError,
            f"the runtime_env process (pid {child.proc.pid}) running {job.name} died "
            f"(exit code {child.proc.returncode})",
        )

    def _pool_exited(self, key: str, child: Child) -> None:
        fut = self.pools.get(key)
        if fut is not None and fut.done() and not fut.exception() and fut.result() is child:
            del self.pools[key]
        for task_id, (job, where, _) in list(self.relayed.items()):
            if where is child:
                del self.relayed[task_id]
                self._end(job, self._died(job, child))

    def _maybe_idle(self, child: Child) -> None:
        if not any(where is child for _, where, _ in self.relayed.values()):
            self.worker.loop.call_later(idle_after(), self._reap_if_idle, child)

    def _reap_if_idle(self, child: Child) -> None:
        if child.exited or any(where is child for _, where, _ in self.relayed.values()):
            return
        key = child.for_id
        fut = self.pools.get(key)
        if fut is None or not fut.done() or fut.exception() or fut.result() is not child:
            return
        del self.pools[key]  # no new task goes there from now on
        self.worker.spawn(self._reap(key, fut, child))

    async def _reap(self, key: str, fut: asyncio.Future[Child], child: Child) -> None:
        """Stop the pool unless it still holds objects (its results, its puts): then keep it
        and look again later."""
        holds = True
        with contextlib.suppress(Exception):
            conn = await self.worker.connect_address(child.address, child.node_id)
            async with asyncio.timeout(10):
                rows = p.unwrap_reply(await self.worker.request(conn, p.ListObjects(0)))
            holds = bool(rows["owned"] or rows["stored"])
        if not holds:
            log.info("stopping the idle runtime_env process %s", child.node_id)
            child.terminate()
        elif not child.exited and key not in self.pools:
            self.pools[key] = fut
            self._maybe_idle(child)


__all__ = ["EnvPools", "env_key", "idle_after"]
