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
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import traceback
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
    for name in modules:
        if name in loaded:
            continue
        loaded.add(name)
        try:
            importlib.import_module(name)
        except ImportError as exc:  # the child imports it again and fails there, saying why
            print(f"zygote: could not preload {name}: {exc}", file=sys.stderr, flush=True)
        except Exception:
            traceback.print_exc()


def serve(ctl: socket.socket, run_node: RunNode, warm: Sequence[str] = ()) -> int:
    """The zygote's loop: fork a child per request, report each child's exit. ``warm``:
    modules to import as soon as the node knows the zygote is ready."""
    die_with_parent()

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    loaded: set[str] = set()
    ctl.sendall(json.dumps({"ready": True}).encode())
    _preload(warm, loaded)  # a request sent meanwhile waits in the socket
    while True:
        for key, _ in sel.select():
            if key.fileobj is ctl:
                data, fds, _, _ = socket.recv_fds(ctl, _MAX_MSG, 4)
                if not data:
                    return 0  # the node is gone (its children follow us)
                msg = json.loads(data)
                _preload(msg.get("preload") or (), loaded)
                if len(fds) != 2:
                    for fd in fds:
                        os.close(fd)
                    ctl.sendall(json.dumps({"error": "expected two file descriptors"}).encode())
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:

                    def child(msg: Any = msg, fds: list[int] = fds) -> int:
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        sel.close()
                        ctl.close()
                        os.close(wake_r)
                        os.close(wake_w)
                        return _child(msg, fds, run_node)

                    _forked(child)
                for fd in fds:
                    os.close(fd)
                ctl.sendall(json.dumps({"pid": pid}).encode())
            else:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                _reap(ctl)


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
