"""The zygote's work: a warm process a node forks its dedicated processes from; see
:mod:`runtime.core.execution.zygote` for the node's side and the why, and
:mod:`runtime.core.tools.zygote_main` for the process started for it.

It imports what a node process needs, says it is ready, imports the modules it is to warm
(``RUNTIME_ZYGOTE_PRELOAD``) and, per request, the modules the request names; it
answers each request on its control socket by forking: the child applies the request's
environment and runs the node's ``main`` in-process. It reaps its children and reports
each exit. No thread, no event loop: it must stay safe to fork. The node's ``main`` is
passed in (``run_node``), so that the node's module can fork a zygote early without the two
importing each other.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..execution import zygote as _zygote
from ..execution.zygote import MAX_MSG as _MAX_MSG
from ..process.limits import die_with_parent

#: A node's main: ``python -m runtime.node`` in-process, given its arguments.
RunNode = Callable[[list[str]], int]


def _child(msg: dict[str, Any], fds: list[int], run_node: RunNode) -> int:
    """In a forked child: become ``python -m runtime.node *argv`` with the asked environment."""
    env = msg["env"]
    os.environ.clear()
    os.environ.update(env)
    if env.get("PYTHONUNBUFFERED"):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.reconfigure(write_through=True)  # type: ignore[union-attr]
    from ..scheduling import gpus

    # What the zygote's modules read from the environment when imported is the node's, and
    # so the child's, but for the variables a child may set (CHILD_KEYS): read them again.
    gpus._VISIBLE_AT_START = env.get("CUDA_VISIBLE_DEVICES")
    argv = [*msg["argv"], "--parent-fd", str(fds[0]), "--ready-fd", str(fds[1])]
    try:
        return run_node(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def _preload(modules: Sequence[str], loaded: set[str]) -> None:
    """Import ``modules`` (those not imported yet), with the cyclic garbage collector off
    meanwhile: an import makes hundreds of thousands of objects and no garbage to speak of,
    and the collections they set off were a fifth of torch's import (0.5 s of its 2.2 s of CPU
    here). What was imported is then frozen (``gc.freeze``): the collector never walks it again,
    here or in a child, so a child's collections neither take as long nor write to the pages it
    shares with this process."""
    todo = [name for name in modules if name not in loaded]
    if not todo:
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name in todo:
            loaded.add(name)
            try:
                importlib.import_module(name)
            except ImportError as exc:  # the child imports it again and fails there, saying why
                print(f"zygote: could not preload {name}: {exc}", file=sys.stderr, flush=True)
            except Exception:
                traceback.print_exc()
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def serve(ctl: socket.socket, run_node: RunNode, warm: Sequence[str] = ()) -> int:
    """The zygote's loop: fork a child per request, report each child's exit. ``warm``:
    modules to import as soon as the node knows the zygote is ready, one at a time, in their
    order (a request that came meanwhile is served between two, after importing the modules it
    names). Each part after a :data:`~runtime.core.execution.zygote.LATER` mark is warmed by a
    helper of its own, forked from this process once it has imported the modules before the
    first mark: a request naming a module of a part goes to its helper; no request waits on
    the import of a part it does not name."""
    die_with_parent()
    parts: list[list[str]] = [[]]
    for name in warm:
        if name == _zygote.LATER:
            parts.append([])
        else:
            parts[-1].append(name)
    server = _Server(ctl, ctl, run_node)
    ctl.sendall(json.dumps({"ready": True}).encode())
    return server.run(parts[0], [p for p in parts[1:] if p])


class _Server:
    """One zygote's loop: requests come on ``requests`` (the node's control socket, or the
    zygote's private socket to its helper), answers and exits go on ``replies`` (always the
    node's control socket: the node reads a helper's answers as the zygote's)."""

    def __init__(self, requests: socket.socket, replies: socket.socket, run_node: RunNode) -> None:
        self.requests = requests
        self.replies = replies
        self.run_node = run_node
        #: helpers sit at the lowest priority until then (monotonic; 0: they do not)
        self.calm_until = 0.0
        self.may_renice = _may_raise_priority_to(os.getpriority(os.PRIO_PROCESS, 0))
        try:
            self.yield_s = max(0.0, float(os.environ.get("RUNTIME_ZYGOTE_YIELD_S", YIELD_S)))
        except ValueError:
            self.yield_s = YIELD_S
        self.loaded: set[str] = set()
        #: the helpers warming the later parts: (their modules, our socket to them, pid)
        self.helpers: list[tuple[frozenset[str], socket.socket, int]] = []
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel = selectors.DefaultSelector()
        self.sel.register(requests, selectors.EVENT_READ)
        self.sel.register(self.wake_r, selectors.EVENT_READ)

    def run(self, warm: Sequence[str], later: Sequence[Sequence[str]] = ()) -> int:
        pending = deque(warm)
        while True:
            if not pending and later:  # what this process warms is in: the rest, apart
                for part in later:
                    self._start_helper(part)
                later = ()
            events = self.sel.select(0 if pending else self._calm_left())
            if not events and pending:  # nothing asked: warm the next module
                _preload([pending.popleft()], self.loaded)
                continue
            for key, _ in events:
                if key.fileobj is self.requests:
                    if not self._request():
                        return 0  # the node (or the zygote) is gone: our children follow us
                elif isinstance(key.fileobj, socket.socket):  # a helper forked (or is gone)
                    self._helper_said(key.fileobj)
                else:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 512):
                            pass
                    _reap(self.replies)

    def _request(self) -> bool:
        """Serve one request; False at EOF."""
        data, fds, _, _ = socket.recv_fds(self.requests, _MAX_MSG, 4)
        if not data:
            return False
        msg = json.loads(data)
        preload = msg.get("preload") or ()
        for modules, helper, pid in self.helpers:
            if modules.intersection(preload):
                # a child waits on it: its import (under way, maybe) is no longer background work;
                # the others yield until the helper says it forked (then YIELD_S more)
                self._yield_to_starting_child(pid)
                if self.may_renice:
                    self.calm_until = float("inf")
                try:  # the helper forks it and answers the node itself
                    socket.send_fds(helper, [data], fds)
                except OSError:  # the helper is gone: do it here
                    self.sel.unregister(helper)
                    self.helpers.remove((modules, helper, pid))
                    self.calm_until = time.monotonic()
                    break
                for fd in fds:
                    os.close(fd)
                return True
        self._yield_to_starting_child(None)
        _preload(preload, self.loaded)
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            self.replies.sendall(json.dumps({"error": "expected two file descriptors"}).encode())
            return True
        pid = self._fork(lambda: _child(msg, fds, self.run_node))
        for fd in fds:
            os.close(fd)
        self.replies.sendall(json.dumps({"pid": pid}).encode())
        if self.requests is not self.replies:  # a helper: tell the zygote the child is forked
            with contextlib.suppress(OSError):
                self.requests.sendall(json.dumps({"forked": pid}).encode())
        return True

    def _helper_said(self, sock: socket.socket) -> None:
        """A helper's message: it forked the child it was asked for (the other helpers yield
        :data:`YIELD_S` more while it starts), or EOF: it is gone."""
        try:
            data = sock.recv(_MAX_MSG)
        except OSError:
            data = b""
        if data:
            if self.calm_until:
                self.calm_until = max(self.calm_until, time.monotonic() + self.yield_s)
            return
        self.sel.unregister(sock)
        self.helpers = [h for h in self.helpers if h[1] is not sock]
        if self.calm_until == float("inf"):
            self.calm_until = time.monotonic()

    def _fork(self, body: Callable[[], int]) -> int:
        """Fork a child that drops this loop's sockets, pipes and signal set-up, then runs
        ``body`` (never returning here); the child's pid."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:

            def child() -> int:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                self.sel.close()  # closing, not unregistering: the epoll set is shared
                for sock in {self.requests, self.replies, *(h for _, h, _ in self.helpers)}:
                    sock.close()
                os.close(self.wake_r)
                os.close(self.wake_w)
                return body()

            _forked(child)
        return pid

    def _start_helper(self, part: Sequence[str]) -> None:
        """Fork a helper that warms ``part`` and serves the requests naming one of them."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        replies, run_node = self.replies.dup(), self.run_node  # the fork closes the original

        def helper() -> int:
            ours.close()
            die_with_parent()
            return _Server(theirs, replies, run_node).run(part)

        pid = self._fork(helper)
        replies.close()
        theirs.close()
        self.helpers.append((frozenset(part), ours, pid))
        self.sel.register(ours, selectors.EVENT_READ)
        self._yield_to_starting_child(None)  # the group that asked for what we warmed starts

    def _yield_to_starting_child(self, serving: int | None) -> None:
        """A child starts (forked here, or by the helper ``serving``): the other helpers warm
        at the lowest priority for :data:`YIELD_S`, so the child's start never competes with
        background imports; ``serving`` gets the normal priority at once."""
        if not self.may_renice or not self.helpers:
            return
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        for _, _, pid in self.helpers:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, pid, mine if pid == serving else _LOWEST)
        self.calm_until = max(self.calm_until, time.monotonic() + self.yield_s)

    def _calm_left(self) -> float | None:
        """Seconds until the helpers get their priority back (None: nothing to wait for)."""
        if not self.calm_until:
            return None
        left = self.calm_until - time.monotonic()
        if left == float("inf"):  # until the serving helper says it forked
            return None
        if left > 0:
            return left
        self.calm_until = 0.0
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        for _, _, pid in self.helpers:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, pid, mine)
        return None


#: The lowest priority (the highest nice value), a helper's while a child starts.
_LOWEST = 19
#: How long helpers stay at the lowest priority after a child was forked (its start: a node
#: joining, its actor set up, its framework's rendezvous: a few tenths of a second), unless
#: ``RUNTIME_ZYGOTE_YIELD_S`` says otherwise.
YIELD_S = 1.0
#: CAP_SYS_NICE's bit in /proc/self/status's CapEff.
_CAP_SYS_NICE = 23


def _may_raise_priority_to(nice: int) -> bool:
    try:
        import resource

        if resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20 - nice:
            return True
    except (ImportError, OSError, ValueError):
        pass
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_NICE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _forked(body: Callable[[], int]) -> NoReturn:
    """In a child just forked: run ``body`` and end the process with its code (1 if it
    raised), output flushed; never returns into the code that forked."""
    code = 1
    try:
        code = body()
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reap(ctl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            ctl.sendall(json.dumps({"exit": pid, "code": code}).encode())


def fork_early(hosts_work: bool, run_node: RunNode) -> bool:
    """In a node process about to start its event loop: fork its zygote now, if
    ``RUNTIME_ZYGOTE_PRELOAD`` names modules and the node hosts work (``hosts_work``), so it
    imports them while the node starts, and shares the runtime's modules the node imported
    (no interpreter to start, nothing imported twice). Only while this process has one
    thread (forking is safe); the node's first zygote adopts it. True if it forked."""
    warm = _zygote.preload_at_start()
    if not warm or not hosts_work or threading.active_count() > 1:
        return False
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the zygote: never back into the node's main
        ours.close()
        _forked(lambda: serve(theirs, run_node, warm))
    theirs.close()
    _zygote.set_early(pid, ours)
    return True
