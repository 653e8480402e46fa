"""The keeper of a local mesh: starts a node process again when one exits while the mesh runs.

A node process of ``runtime.init()``'s local mesh plays the part of Ray's worker processes:
when user code in it calls ``os._exit()``, segfaults or is killed by the OOM killer, Ray's
raylet starts another worker, and so does this keeper, so the host's CPUs stay offered and
actors with ``max_restarts`` and retried tasks find room again. The replacement joins with a
new node id on the same host (the same ledger; what the dead one held is swept back).

Restarts are bounded per process slot: the first in a minute at once, then after a growing
delay (0.5 s, 1 s, 2 s, ... up to 10 s), and none after ``RUNTIME_NODE_RESTARTS`` (default 10)
in one minute: a process that keeps dying is given up on, with one line in the log. Nothing is
restarted once the mesh is stopping or its head has exited, nor a process refused at its first
start (exit status 2: bad arguments), which would fail the same way again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: How many times one process slot is started again within a minute before it is given up.
RESTARTS_PER_MINUTE = 10
#: An exit with status 2 this soon after the mesh started is a refused start, not a crash.
_FIRST_START_S = 15.0
_WINDOW_S = 60.0
_MAX_DELAY_S = 10.0

Spawn = Callable[[], "subprocess.Popen[bytes]"]


def restart_limit() -> int:
    """``RUNTIME_NODE_RESTARTS`` (restarts per process slot per minute; 0: never restart)."""
    raw = os.environ.get("RUNTIME_NODE_RESTARTS", "")
    try:
        return max(0, int(raw)) if raw else RESTARTS_PER_MINUTE
    except ValueError:
        return RESTARTS_PER_MINUTE


def restart_delay(recent: int) -> float:
    """The wait before a slot's next start, given its restarts in the last minute."""
    return 0.0 if recent <= 0 else min(_MAX_DELAY_S, 0.25 * 2.0**recent)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


class MeshKeeper:
    """Watches ``procs[1:]`` (``procs[0]`` is the head) and starts a process again with
    ``spawn`` when one exits; :meth:`stop` before stopping the mesh."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], spawn: Spawn) -> None:
        self.procs = procs
        self._spawn = spawn
        self._limit = restart_limit()
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._restarts: dict[int, list[float]] = {}
        self._due: dict[int, float] = {}  # slot -> when to start it again
        self._given_up: set[int] = set()
        self._wake_r, self._wake_w = os.pipe()
        #: Every replacement started: (slot, old pid, new pid), for the log and tests.
        self.replaced: list[tuple[int, int, int]] = []
        self._thread = threading.Thread(target=self._run, name="runtime-mesh-keeper", daemon=True)

    def start(self) -> MeshKeeper:
        if self._limit > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        """No more restarts (the mesh is stopping); waits for the keeper's thread."""
        with self._lock:
            self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        fds: dict[int, int] = {}  # pid -> its pidfd
        try:
            while not self._stop.is_set():
                watched = self._watch(fds)
                timeout = 1.0
                if self._due:
                    timeout = max(0.0, min(self._due.values()) - time.monotonic())
                with contextlib.suppress(OSError, ValueError):
                    select.select([self._wake_r, *watched], [], [], min(timeout, 1.0))
                if self._stop.is_set():
                    return
                self._check()
        except Exception:  # the keeper must never take the driver down
            log.exception("the local mesh's keeper stopped")
        finally:
            for fd in fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _watch(self, fds: dict[int, int]) -> list[int]:
        """A pidfd per live node process (readable when it exits); none where unsupported
        (the loop then looks every second)."""
        live = {p.pid for p in self.procs[1:] if p.returncode is None}
        for pid in list(fds):
            if pid not in live:
                with contextlib.suppress(OSError):
                    os.close(fds.pop(pid))
        opener = getattr(os, "pidfd_open", None)
        if opener is not None:
            for pid in live - fds.keys():
                with contextlib.suppress(OSError):
                    fds[pid] = opener(pid)
        return list(fds.values())

    def _check(self) -> None:
        head = self.procs[0]
        if head.poll() is not None:
            return  # the head is gone: the mesh is over, nothing to rejoin
        now = time.monotonic()
        for slot in range(1, len(self.procs)):
            proc = self.procs[slot]
            if proc.poll() is None or slot in self._given_up:
                continue
            code = proc.returncode
            if code == 2 and now - self._started < _FIRST_START_S:
                self._given_up.add(slot)  # refused at its start: it would fail the same way
                log.warning("node process %d of the local mesh %s at its start; not "
                            "starting it again", proc.pid, describe_exit(code))  # fmt: skip
                continue
            due = self._due.get(slot)
            if due is None:
                recent = [t for t in self._restarts.get(slot, []) if now - t < _WINDOW_S]
                self._restarts[slot] = recent
                if len(recent) >= self._limit:
                    self._given_up.add(slot)
                    log.warning("node process %d of the local mesh %s; it was started again "
                                "%d times in a minute: giving up on it", proc.pid,
                                describe_exit(code), len(recent))  # fmt: skip
                    continue
                due = self._due[slot] = now + restart_delay(len(recent))
            if now >= due:
                self._replace(slot, proc)

    def _replace(self, slot: int, old: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            try:
                new = self._spawn()
            except OSError as exc:
                log.warning("could not start a node process for the local mesh: %r", exc)
                self._due[slot] = time.monotonic() + _MAX_DELAY_S
                return
            self.procs[slot] = new
        self._due.pop(slot, None)
        self._restarts.setdefault(slot, []).append(time.monotonic())
        self.replaced.append((slot, old.pid, new.pid))
        log.warning("node process %d of the local mesh %s; started process %d in its place",
                    old.pid, describe_exit(old.returncode), new.pid)  # fmt: skip


__all__ = ["MeshKeeper", "describe_exit", "restart_delay", "restart_limit"]
