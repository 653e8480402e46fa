"""A warm process a node forks its dedicated processes from (a zygote, or fork server).

Starting a child node process costs an interpreter start and the runtime's imports (0.6-0.9 s
here) before it can join, and whatever the work then imports (``torch``: 2.5-4 s more). A node
process that starts dedicated processes keeps one zygote: a process that has imported the
node's modules (and, on request, more: an actor created with
``dedicated_process=["torch", ...]`` names modules its process should find imported) and
forks a child for each request. The child applies its environment, then runs the node's
``main`` as ``python -m runtime.node`` would; it has only what the zygote imported, and
never CUDA state (the zygote initialises nothing: ``CUDA_VISIBLE_DEVICES`` set in the child
still decides its devices).

Only children whose environment is the node's own (apart from their GPU variables) and whose
working directory is the node's are forked: a ``runtime_env`` with other variables or
import paths starts a fresh interpreter, since preloaded modules were imported under the
node's. ``RUNTIME_ZYGOTE=0`` turns forking off.

The zygote is tied to its node: it reads EOF on its control socket when the node goes (and
has the kernel's parent-death signal); its children have theirs tied to it, and read the
node's parent pipe as any child does. It reaps its children and reports each exit
(``{"exit": pid, "code": code}``) on the control socket, which the node reads on its loop.
This module is the node's side; the zygote process is :mod:`runtime.core.tools.zygote_main`
(its work in :mod:`runtime.core.tools.zygote_server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("runtime.processes")

#: Variables a forked child may set differently from the node's environment.
CHILD_KEYS = frozenset({"CUDA_VISIBLE_DEVICES", "RUNTIME_ACTOR_GPUS", "PYTHONUNBUFFERED"})
#: The most a control message may hold (an environment is a few KB).
MAX_MSG = 1 << 20
#: Modules a node's zygote imports as soon as the node starts (comma-separated; unset or
#: empty: the zygote starts at the node's first dedicated actor, as before).
PRELOAD_ENV = "RUNTIME_ZYGOTE_PRELOAD"
#: In ``RUNTIME_ZYGOTE_PRELOAD`` (and the lists built from it), the mark after which modules
#: are warmed by a helper the zygote forks once it has imported those before it
#: (``torch,torch._dynamo;lightning``): a request naming one of them is forked by the helper,
#: the others never wait on their import.
LATER = ";"


def enabled() -> bool:
    """Forking dedicated processes from a zygote is on (``RUNTIME_ZYGOTE``, default 1)."""
    return os.environ.get("RUNTIME_ZYGOTE", "1") not in ("0", "false", "no", "")


def preload_at_start(env: dict[str, str] | None = None) -> list[str]:
    """The modules ``RUNTIME_ZYGOTE_PRELOAD`` names, with its :data:`LATER` mark (empty
    where forking is off)."""
    if env is None:
        env = dict(os.environ)
    if env.get("RUNTIME_ZYGOTE", "1") in ("0", "false", "no", ""):
        return []
    named = env.get(PRELOAD_ENV, "").replace(LATER, f",{LATER},")
    return [m for m in (x.strip() for x in named.split(",")) if m]


def forkable(base: dict[str, str], env: dict[str, str] | None, cwd: str | None) -> bool:
    """True if a child with ``env`` and ``cwd`` may be forked from a zygote of ``base``."""
    if cwd is not None:
        return False
    if env is None:
        return True
    keys = (set(base) | set(env)) - CHILD_KEYS
    return all(base.get(k) == env.get(k) for k in keys)


class ForkedProcess:
    """A child the zygote forked, with what ``subprocess.Popen`` offers that nodes use."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.on_exit: list[Callable[[], None]] = []
        self._done = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def exited(self, code: int) -> None:
        if self.returncode is not None:
            return
        self.returncode = code
        self._done.set()
        for callback in self.on_exit:
            try:
                callback()
            except Exception:
                log.exception("handling the exit of a forked process failed")


class EarlyZygote:
    """A zygote this node process forked before its event loop started (see
    :func:`runtime.core.tools.zygote_server.fork_early`): what ``subprocess.Popen`` offers that
    :class:`Zygote` uses, for a child of this process known by its pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.returncode = -signal.SIGKILL
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def terminate(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)


#: The zygote forked before this process's loop started, with its control socket, until
#: the node's first :class:`Zygote` adopts it.
_early: tuple[EarlyZygote, socket.socket] | None = None


def set_early(pid: int, sock: socket.socket) -> None:
    """Record the zygote forked early (by ``zygote_server.fork_early``), to be adopted."""
    global _early
    _early = (EarlyZygote(pid), sock)


class ZygoteError(RuntimeError):
    """The zygote did not start or did not fork (the caller starts the child itself)."""


class Zygote:
    """The node's side: starts the zygote, asks it for children, learns of their exits."""

    def __init__(self, loop: asyncio.AbstractEventLoop, env: dict[str, str]) -> None:
        self.loop = loop
        self.env = env
        self.proc: subprocess.Popen[bytes] | EarlyZygote | None = None
        self.sock: socket.socket | None = None
        self.children: dict[int, ForkedProcess] = {}
        self._replies: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()  # one request at a time: replies come in order
        self.dead = False
        self.stuck = False  # a request timed out: the zygote is asked nothing more

    async def start(self, timeout: float, preload: Sequence[str] = ()) -> None:
        """Start the zygote and wait until it is ready to fork; it then imports ``preload``
        in the background (a fork asked meanwhile waits for that). A zygote this process
        forked before its loop started (importing ``preload`` already) is adopted instead."""
        global _early
        early, _early = _early, None
        if early is not None and early[0].poll() is None:
            self.proc, ours = early
        else:
            if early is not None:
                early[1].close()
            ours = self._spawn(preload)
        self.sock = ours
        self._ready = self.loop.create_future()
        self._replies.append(self._ready)
        self.loop.add_reader(ours.fileno(), self._readable)
        try:
            async with asyncio.timeout(timeout):
                await self._ready
        except BaseException:
            self.close()
            raise

    def _spawn(self, preload: Sequence[str]) -> socket.socket:
        """Start a zygote process; our end of its control socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            cmd = [sys.executable, "-m", "runtime.core.tools.zygote_main", str(theirs.fileno())]
            if preload:
                cmd.append(",".join(preload))
            # From the loop's thread: the zygote's parent-death signal follows this thread.
            self.proc = subprocess.Popen(
                cmd, pass_fds=(theirs.fileno(),), env=self.env, stdin=subprocess.DEVNULL
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return ours

    async def fork(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        fds: Sequence[int],
        preload: Sequence[str],
        timeout: float,
    ) -> ForkedProcess:
        """A child running ``python -m runtime.node *argv`` with ``env``, after the zygote
        imported ``preload``; ``fds`` (parent pipe, ready pipe) are passed on and named on its
        command line as ``--parent-fd`` and ``--ready-fd``."""
        async with self._lock:
            if self.dead or self.stuck or self.sock is None:
                raise ZygoteError("the zygote is gone, or stuck in an earlier request")
            reply: asyncio.Future[dict[str, Any]] = self.loop.create_future()
            self._replies.append(reply)
            data = json.dumps({"argv": list(argv), "env": env, "preload": list(preload)})
            try:
                socket.send_fds(self.sock, [data.encode()], list(fds))
            except OSError as exc:
                self._replies.remove(reply)
                raise ZygoteError(f"the zygote did not take the request: {exc}") from exc
            try:
                async with asyncio.timeout(timeout):
                    answer = await asyncio.shield(reply)
            except TimeoutError:
                # importing ``preload`` hangs: ask no more of it (its children run on); a
                # child it forks after all is stopped when its reply comes (_readable)
                self.stuck = True
                raise ZygoteError(f"the zygote did not fork within {timeout:g} s") from None
        child = answer.get("child")
        if not isinstance(child, ForkedProcess):
            raise ZygoteError(str(answer.get("error", "the zygote did not fork")))
        return child

    def _readable(self) -> None:
        sock = self.sock
        assert sock is not None
        try:
            data = sock.recv(MAX_MSG)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._gone()
            return
        msg = json.loads(data)
        if "exit" in msg:  # always after the reply that named the child
            child = self.children.pop(int(msg["exit"]), None)
            if child is not None:
                child.exited(int(msg["code"]))
            return
        if "pid" in msg:  # known before the one asking resumes: its exit may come next
            child = self.children[int(msg["pid"])] = ForkedProcess(int(msg["pid"]))
            msg["child"] = child
        if self._replies:
            fut = self._replies.popleft()
            if not fut.done() and not self.stuck:
                fut.set_result(msg)
            elif isinstance(msg.get("child"), ForkedProcess):  # its asker gave up: stop it
                msg["child"].kill()

    def _gone(self) -> None:
        """The zygote exited: its children died with it (their parent-death signal)."""
        if self.dead:
            return
        self.dead = True
        if self.sock is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        while self._replies:
            fut = self._replies.popleft()
            if not fut.done():
                fut.set_exception(ZygoteError("the zygote exited"))
                fut.exception()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(1.0)
        for child in list(self.children.values()):
            child.exited(-signal.SIGKILL)
        self.children.clear()

    def close(self) -> None:
        """Stop the zygote (its children follow it)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
        self._gone()


__all__ = [
    "CHILD_KEYS",
    "LATER",
    "MAX_MSG",
    "PRELOAD_ENV",
    "EarlyZygote",
    "ForkedProcess",
    "Zygote",
    "ZygoteError",
    "enabled",
    "forkable",
    "preload_at_start",
    "set_early",
]
