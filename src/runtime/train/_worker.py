"""The rank actor: one per rank, each in a process of its own, running the user's loop.

The loop runs in a thread the actor starts, so the actor keeps answering ``poll`` (the
controller's long poll for reports) while it trains. The controller creates every rank with
``dedicated_process=True``: the process is started for the rank and ends when the rank actor
is killed, so a torn-down rank leaves nothing behind. Where a process is reused anyway (local
mode), a new rank first waits for the previous loop's thread to end and for its process
group to be gone.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import inspect
import os
import random
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import runtime

from . import _session
from ._backend import Backend
from ._context import TrainContext
from ._session import Event, RankSession, StopRank, error_event
from ._storage import StorageContext

_PREVIOUS_WAIT_S = 3.0  # then go on: a loop stuck in a dead group's collective ends at its timeout
_previous: threading.Thread | None = None  # the last loop thread run in this process
#: CUDA_VISIBLE_DEVICES as this process had it before any rank set it: taken at the first
#: setup, not at import (the module may be imported in the node's zygote, whose environment is
#: not the rank process's).
_original_cuda: tuple[str | None] | None = None


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port(host: str = "127.0.0.1") -> int:
    """A port free now, chosen below the kernel's ephemeral range.

    A port the kernel hands out for ``bind(0)`` is also what it hands every outgoing
    connection: between this check and the rendezvous store binding it, a busy host
    (other ranks, the mesh's own dials) takes it and the group fails with EADDRINUSE.
    Ports below the ephemeral range go only to programs that name them.
    """
    high = _ephemeral_low()
    low = max(1024, high - 12000)
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        last: int = s.getsockname()[1]
        return last


def _node_address() -> str:
    """The address this rank's node process listens on (its host's, across hosts)."""
    me = runtime.get_runtime_context().get_node_id()
    for node in runtime.nodes():
        if node["NodeID"] == me:
            return str(node.get("NodeManagerAddress") or "127.0.0.1")
    return "127.0.0.1"


@dataclass
class RankStart:
    """What a rank needs to start its loop (one per rank per attempt)."""

    fn: Callable[..., Any]
    config: dict[str, Any] | None
    context: TrainContext
    backend: Backend
    rendezvous: tuple[str, int]
    env: dict[str, str]
    checkpoint_dir: str | None  # the checkpoint to resume from, a folder of the run
    shards: dict[str, Any]
    first_index: int
    storage: StorageContext


class RankActor:
    """Hosts one rank: setup, start the loop, answer polls, stop."""

    def __init__(self) -> None:
        self._session: RankSession | None = None
        self._thread: threading.Thread | None = None

    def setup(self, env: dict[str, str], preload: list[str]) -> dict[str, Any]:
        """Wait out a previous loop in this process, set ``env``, import ``preload``; where
        this rank runs.

        Importing the libraries the rank's arguments need (``runtime.data`` for dataset
        shards) here, in one thread, keeps a later unpickling from racing another thread's
        import of the same modules in this node process.
        """
        global _original_cuda
        if _original_cuda is None:
            _original_cuda = (os.environ.get("CUDA_VISIBLE_DEVICES"),)
        for module in preload:
            importlib.import_module(module)
        previous = _previous
        if previous is not None and previous.is_alive():
            previous.join(_PREVIOUS_WAIT_S)
        os.environ.update(env)
        return {
            "node_id": runtime.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "cuda_visible_devices": _original_cuda[0],
            "gpu_ids": runtime.get_gpu_ids(),
        }

    def free_port(self) -> tuple[str, int]:
        """This rank's node address and a free TCP port on it, for the rendezvous (asked of
        rank 0; of every rank for frameworks that connect each rank to each other)."""
        host = _node_address()
        return host, _free_port(host)

    def start(self, job: RankStart) -> None:
        """Start the loop in a thread and return at once."""
        global _previous
        os.environ.update(job.env)
        checkpoint = None
        if job.checkpoint_dir is not None:
            checkpoint = job.storage.checkpoint(job.checkpoint_dir)
        session = RankSession(job.context, checkpoint, job.shards, job.first_index, job.storage)
        self._session = session
        thread = threading.Thread(
            target=self._main,
            args=(session, job.fn, job.config, job.backend, job.rendezvous),
            name=f"train-rank-{job.context.world_rank}",
            daemon=True,
        )
        _previous = self._thread = thread
        thread.start()

    def _main(
        self,
        session: RankSession,
        fn: Callable[..., Any],
        config: dict[str, Any] | None,
        backend: Backend,
        rendezvous: tuple[str, int],
    ) -> None:
        rank = session.context.world_rank
        _session.install(session)
        started = False
        try:
            backend.on_start(session.context, *rendezvous)
            started = True
            takes_config = bool(inspect.signature(fn).parameters)
            fn(dict(config or {})) if takes_config else fn()
            session.emit(("done", rank))
        except StopRank:
            session.emit(("stopped", rank))
        except BaseException as exc:
            session.emit(error_event(rank, exc))
            exc.__traceback__ = None  # the loop's frames hold the model (and its process group)
        finally:
            if started:
                # Closing this rank's process group makes peers blocked in a collective fail
                # now rather than at the collective timeout. The group's sockets close only
                # once nothing holds it (DDP models do), hence the collection.
                with contextlib.suppress(BaseException):
                    backend.on_shutdown(session.context)
                gc.collect()
            session.close()  # uploads of the reports made so far finish, then the events go
            _session.install(None)

    def poll(self, timeout: float) -> list[Event]:
        """The events since the last poll (reports, done, error), waiting up to ``timeout``."""
        session = self._session
        if session is None:
            return []
        return session.drain(timeout)

    def stack(self) -> str:
        """The loop thread's Python stack now (for the watchdog), or "" if it is not running."""
        thread = self._thread
        if thread is None or not thread.is_alive() or thread.ident is None:
            return ""
        frame = sys._current_frames().get(thread.ident)
        if frame is None:
            return ""
        return "".join(traceback.format_stack(frame))

    def stop(self) -> None:
        """Ask the loop to end: its next ``train.report`` raises."""
        if self._session is not None:
            self._session.stopping.set()
