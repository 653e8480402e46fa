"""Jobs: run a driver script on the cluster, with its output captured (``python -m runtime job``).

A job is one shell command (usually ``python script.py``) started on the head node by the
*job manager*, a named, detached async actor (``_runtime_job_manager`` in namespace
``_runtime``) pinned with a soft ``NodeAffinitySchedulingStrategy`` to the node process the head
started for its resources (the head process itself hosts no user code). The manager

- unpacks the job's working directory, shipped zipped through the object store and cached by
  the hash of its content under ``<state dir>/jobs/_packages/<hash>/``;
- starts the command in its own process group, with the working directory as its current
  directory and on ``PYTHONPATH``, its stdout and stderr in ``<state dir>/jobs/<id>/driver.log``,
  and ``RUNTIME_ADDRESS`` and ``RUNTIME_AUTH_TOKEN_FILE`` set, so the script's
  ``runtime.init()`` joins this cluster with its token;
- watches the process (a pidfd on the node's loop) and records its status, exit code and
  times in ``<state dir>/jobs/<id>/job.json`` (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED);
- stops a job with SIGTERM to its process group, then SIGKILL after a grace period.

Nothing of a job outlives its node: its first process is a small shim that leads the job's
process group, asks the kernel for a signal when the node process dies (``PR_SET_PDEATHSIG``)
and then kills the whole group. The shim is spawned from the node's loop thread (the manager's
methods are all async, never run in a pool thread that may exit, which would fire that signal).

This module is written against the public API only (``runtime``, ``runtime.util``,
``runtime.exceptions``): the job system is a client of the cluster like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import runtime
import runtime.util

from .job_files import (
    extract_package,
    is_dir,
    node_state_dir,
    node_token_file,
    read_chunk,
    signal_group,
)

__all__ = [
    "MANAGER_NAME",
    "MANAGER_NAMESPACE",
    "MAX_PACKAGE_BYTES",
    "JobInfo",
    "entrypoint_from_argv",
    "get_manager",
    "list_jobs",
    "package_dir",
    "status",
    "stop",
    "submit",
    "tail",
    "wait",
]

MANAGER_NAME = "_runtime_job_manager"
MANAGER_NAMESPACE = "_runtime"
#: The largest working directory shipped (zipped), as Ray's limit for a working_dir.
MAX_PACKAGE_BYTES = 100 * 1024 * 1024
#: Seconds between SIGTERM and SIGKILL when a job is stopped.
STOP_GRACE_S = 3.0
#: Most bytes of log one ``tail`` call returns.
TAIL_CHUNK = 1 << 20

PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED = (
    "PENDING",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "STOPPED",
)
TERMINAL = frozenset({SUCCEEDED, FAILED, STOPPED})

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SKIP_DIRS = frozenset({"__pycache__", ".git", ".hg", ".venv", ".mypy_cache"})
# The job's first process: leads the job's process group and runs the command under it. The
# kernel sends it SIGUSR1 when the node process dies (the parent-death signal), and it then
# kills the whole group, so nothing of the job outlives its node. SIGTERM and SIGINT (sent to
# the group by `job stop`) are left to the command; its exit status is passed on.
_SHIM = """\
import os, signal, subprocess, sys
def gone(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGUSR1, gone)
signal.signal(signal.SIGTERM, lambda *_: None)
signal.signal(signal.SIGINT, lambda *_: None)
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGUSR1, 0, 0, 0)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    gone()
code = subprocess.call(sys.argv[2:])
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass
class JobInfo:
    """One job's record, as the manager keeps it and ``job status`` shows it."""

    job_id: str
    entrypoint: str
    status: str = PENDING
    message: str = ""
    exit_code: int | None = None
    pid: int | None = None
    submit_time: float = field(default_factory=time.time)
    start_time: float | None = None
    end_time: float | None = None
    working_dir_hash: str | None = None
    log_path: str = ""


# --- the client side (the CLI) ------------------------------------------------------------------


def entrypoint_from_argv(argv: list[str]) -> str:
    """The shell command line of a job: one argument is taken as a command line as it is
    (``"python a.py && python b.py"``); several are quoted and joined (``python a.py``)."""
    if not argv or not all(isinstance(a, str) and a for a in argv):
        raise ValueError("a job needs a command, e.g. `job submit -- python script.py`")
    return argv[0] if len(argv) == 1 else shlex.join(argv)


def package_dir(path: str) -> tuple[str, bytes]:
    """Zip a directory deterministically: ``(sha256 of the zip, zip bytes)``.

    Files are stored in sorted order with a fixed timestamp and their permission bits, so an
    unchanged directory always hashes the same (and ships once); ``__pycache__``, ``.git``,
    ``.hg``, ``.venv`` and ``.mypy_cache`` are left out.
    """
    root = os.path.abspath(path)
    if not os.path.isdir(root):
        raise ValueError(f"--working-dir {path!r} is not a directory")
    buf = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if not os.path.isfile(full):
                    continue
                rel = os.path.relpath(full, root)
                info = zipfile.ZipInfo(rel.replace(os.sep, "/"), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (os.stat(full).st_mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(full, "rb") as f:
                    data = f.read()
                total += len(data)
                if total > 4 * MAX_PACKAGE_BYTES:
                    raise ValueError(_too_big(path))
                zf.writestr(info, data)
    blob = buf.getvalue()
    if len(blob) > MAX_PACKAGE_BYTES:
        raise ValueError(_too_big(path))
    return hashlib.sha256(blob).hexdigest(), blob


def _too_big(path: str) -> str:
    return (
        f"--working-dir {path!r} is larger than {MAX_PACKAGE_BYTES >> 20} MiB zipped; leave "
        "data out of it (read it from shared storage in the job) or ship a smaller directory"
    )


def get_manager(head_address: str) -> Any:
    """The cluster's job manager actor, created on the head node the first time."""
    head_node = None
    for n in runtime.nodes():
        # The head hosts no user code: the node process it started for its resources does.
        if n["Alive"] and n["Labels"].get("runtime.io/role") == "head-node":
            head_node = n["NodeID"]
    options: dict[str, Any] = {
        "name": MANAGER_NAME,
        "namespace": MANAGER_NAMESPACE,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_concurrency": 1000,
    }
    if head_node is not None:
        options["scheduling_strategy"] = runtime.util.NodeAffinitySchedulingStrategy(
            head_node, soft=True
        )
    return runtime.remote(JobManager).options(**options).remote()


def submit(
    manager: Any,
    head_address: str,
    entrypoint: str,
    *,
    working_dir: str | None = None,
    package: tuple[str, bytes] | None = None,
    job_id: str | None = None,
    env_vars: dict[str, str] | None = None,
) -> str:
    """Start ``entrypoint`` as a job; returns its id at once (the job runs on).

    ``working_dir`` is zipped here, unless ``package`` is given: what ``package_dir`` made of it.
    """
    if job_id is None:
        job_id = "job_" + secrets.token_hex(6)
    _check_job_id(job_id)
    pkg_hash: str | None = None
    pkg_ref: Any = None
    if package is None and working_dir is not None:
        package = package_dir(working_dir)
    if package is not None:
        pkg_hash, blob = package
        if not runtime.get(manager.has_package.remote(pkg_hash)):
            pkg_ref = runtime.put(blob)
    error = runtime.get(
        manager.submit.remote(
            job_id,
            entrypoint,
            head_address=head_address,
            pkg_hash=pkg_hash,
            package=pkg_ref,
            env_vars=dict(env_vars or {}),
        )
    )
    if error:
        raise ValueError(error)
    return job_id


def status(manager: Any, job_id: str) -> JobInfo:
    """The job's record; raises ``KeyError`` for an unknown id."""
    raw = runtime.get(manager.info.remote(job_id))
    if raw is None:
        raise KeyError(f"no job {job_id!r} on this cluster (see `python -m runtime job list`)")
    return JobInfo(**raw)


def list_jobs(manager: Any) -> list[JobInfo]:
    """Every job the manager knows, oldest first."""
    return [JobInfo(**raw) for raw in runtime.get(manager.list.remote())]


def stop(manager: Any, job_id: str) -> bool:
    """Stop a job (SIGTERM to its processes, SIGKILL after a grace period); False when it had
    already finished. Returns once the stop is sent, not when the job has exited."""
    result = runtime.get(manager.stop.remote(job_id))
    if result is None:
        raise KeyError(f"no job {job_id!r} on this cluster (see `python -m runtime job list`)")
    return bool(result)


def wait(manager: Any, job_id: str, timeout: float) -> JobInfo:
    """The job's record once it has ended, or when ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        raw = runtime.get(manager.wait.remote(job_id, max(0.0, min(left, 30.0))))
        if raw is None:
            raise KeyError(f"no job {job_id!r} on this cluster (see `python -m runtime job list`)")
        info = JobInfo(**raw)
        if info.status in TERMINAL or left <= 0:
            return info


def tail(manager: Any, job_id: str, offset: int, wait_s: float) -> tuple[bytes, int, bool]:
    """Log bytes from ``offset``: ``(data, next offset, finished)``; waits up to ``wait_s`` for
    new output. ``finished``: the job has ended and every byte of its log was returned."""
    result = runtime.get(manager.tail.remote(job_id, offset, wait_s))
    if result is None:
        raise KeyError(f"no job {job_id!r} on this cluster (see `python -m runtime job list`)")
    data, nxt, finished = result
    return bytes(data), int(nxt), bool(finished)


def follow(manager: Any, job_id: str, write: Callable[[bytes], None], offset: int = 0) -> JobInfo:
    """Stream the job's log through ``write`` until it ends; returns its final record."""
    while True:
        data, offset, finished = tail(manager, job_id, offset, 5.0)
        if data:
            write(data)
        if finished:
            return status(manager, job_id)


def _check_job_id(job_id: str) -> None:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise ValueError(
            f"job id {job_id!r} must be 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )


# --- the manager (an async actor on the head) ---------------------------------------------------


@dataclass
class _Job:
    info: JobInfo
    dir: str
    proc: subprocess.Popen[bytes] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stop_requested: bool = False


class JobManager:
    """Starts, watches and stops job drivers on its node. Every method is async: they all run
    on the node's loop thread, which also spawns the drivers (see the module docstring)."""

    def __init__(self) -> None:
        self.state_dir = node_state_dir()
        self.root = os.path.join(self.state_dir, "jobs")
        os.makedirs(os.path.join(self.root, "_packages"), mode=0o700, exist_ok=True)
        self.token_file = node_token_file(self.state_dir)
        self.jobs: dict[str, _Job] = {}
        self.unpacking: dict[str, asyncio.Future[str]] = {}
        self._load()

    def _load(self) -> None:
        """Jobs of an earlier manager (the head restarted on its state dir) are listed too;
        those that had not finished are marked FAILED: nobody watched them to the end."""
        for name in sorted(os.listdir(self.root)):
            path = os.path.join(self.root, name, "job.json")
            with contextlib.suppress(OSError, ValueError, TypeError):
                with open(path) as f:
                    info = JobInfo(**json.load(f))
                job = _Job(info, os.path.dirname(path))
                if info.status not in TERMINAL:
                    info.status = FAILED
                    info.message = (
                        f"the job manager restarted while the job ran (driver pid {info.pid}); "
                        "its outcome is unknown"
                    )
                    info.end_time = time.time()
                    self._save(job)
                job.done.set()
                self.jobs[info.job_id] = job

    async def has_package(self, pkg_hash: str) -> bool:
        return is_dir(self._package_path(pkg_hash))

    async def submit(
        self,
        job_id: str,
        entrypoint: str,
        *,
        head_address: str,
        pkg_hash: str | None,
        package: bytes | None,
        env_vars: dict[str, str],
    ) -> str | None:
        """Record the job and start it; returns an error message instead of raising, so the
        client shows a clean one. The job runs on after this returns."""
        try:
            _check_job_id(job_id)
        except ValueError as exc:
            return str(exc)
        if job_id in self.jobs:
            return f"a job with id {job_id!r} exists already; pick another id"
        job_dir = os.path.join(self.root, job_id)
        os.makedirs(job_dir, mode=0o700, exist_ok=True)
        info = JobInfo(
            job_id,
            entrypoint,
            working_dir_hash=pkg_hash,
            log_path=os.path.join(job_dir, "driver.log"),
        )
        job = _Job(info, job_dir)
        self.jobs[job_id] = job
        self._save(job)
        cwd = job_dir
        if pkg_hash is not None:
            try:
                cwd = await self._unpack(pkg_hash, package)
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                self._finish(job, FAILED, f"could not unpack the working directory: {exc}")
                return None
        if job.stop_requested:  # stopped while its package was unpacked
            self._finish(job, STOPPED, "stopped before it started")
            return None
        self._start(job, cwd, head_address, env_vars)
        return None

    def _start(self, job: _Job, cwd: str, head_address: str, env_vars: dict[str, str]) -> None:
        env = dict(os.environ)
        env.update(env_vars)
        env["RUNTIME_ADDRESS"] = head_address
        env["RUNTIME_JOB_SUBMISSION_ID"] = job.info.job_id
        env["PYTHONUNBUFFERED"] = "1"
        if job.info.working_dir_hash is not None:
            # The driver's init() ships the working dir to the nodes running its tasks.
            env["RUNTIME_JOB_RUNTIME_ENV"] = json.dumps({"working_dir": cwd})
        if self.token_file is not None and "RUNTIME_AUTH_TOKEN" not in os.environ:
            env["RUNTIME_AUTH_TOKEN_FILE"] = self.token_file
        # `python` in the command is the node's own interpreter (its venv), as for Ray's jobs.
        bins = [os.path.dirname(sys.executable), *env.get("PATH", os.defpath).split(os.pathsep)]
        env["PATH"] = os.pathsep.join(dict.fromkeys(b for b in bins if b))
        paths = [cwd, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        argv = [sys.executable, "-c", _SHIM, str(os.getpid()), "/bin/sh", "-c", job.info.entrypoint]
        try:
            with open(job.info.log_path, "ab") as log:
                # On this (the loop's, long-lived) thread: the parent-death signal follows
                # the thread that forked.
                job.proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            self._finish(job, FAILED, f"could not start the job: {exc}")
            return
        job.info.status = RUNNING
        job.info.pid = job.proc.pid
        job.info.start_time = time.time()
        self._save(job)
        self._watch(job)

    def _watch(self, job: _Job) -> None:
        """Call ``_exited`` on the loop when the driver exits: a pidfd read on the loop, or a
        waiting thread where pidfds are missing."""
        proc = job.proc
        assert proc is not None
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):

            def wait() -> None:
                proc.wait()
                loop.call_soon_threadsafe(self._exited, job)

            threading.Thread(target=wait, name=f"job-{job.info.job_id}", daemon=True).start()
            return

        def readable() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._exited(job)

        loop.add_reader(fd, readable)

    def _exited(self, job: _Job) -> None:
        assert job.proc is not None
        code = job.proc.wait()
        if job.stop_requested:
            self._finish(job, STOPPED, "stopped by `job stop`", code)
        elif code == 0:
            self._finish(job, SUCCEEDED, "", code)
        else:
            reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            self._finish(job, FAILED, f"the driver {reason}", code)

    def _finish(self, job: _Job, state: str, message: str, code: int | None = None) -> None:
        job.info.status = state
        job.info.message = message
        job.info.exit_code = code
        job.info.end_time = time.time()
        self._save(job)
        job.done.set()

    def _save(self, job: _Job) -> None:
        path = os.path.join(job.dir, "job.json")
        with contextlib.suppress(OSError):
            with open(path + ".tmp", "w") as f:
                json.dump(asdict(job.info), f)
            os.replace(path + ".tmp", path)

    def _package_path(self, pkg_hash: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", pkg_hash):
            raise ValueError(f"bad package hash {pkg_hash!r}")
        return os.path.join(self.root, "_packages", pkg_hash)

    async def _unpack(self, pkg_hash: str, package: bytes | None) -> str:
        """The package's directory, unpacked once per hash (concurrent submits share it)."""
        dest = self._package_path(pkg_hash)
        if is_dir(dest):
            return dest
        pending = self.unpacking.get(pkg_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        if package is None:
            raise ValueError("the package was not sent and is not cached; submit again")
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.unpacking[pkg_hash] = fut
        try:
            await asyncio.to_thread(extract_package, bytes(package), pkg_hash, dest)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved here: the raise reports it to this caller
            raise
        else:
            fut.set_result(dest)
        finally:
            del self.unpacking[pkg_hash]
        return dest

    async def info(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        return None if job is None else asdict(job.info)

    async def list(self) -> list[dict[str, Any]]:
        return [
            asdict(j.info) for j in sorted(self.jobs.values(), key=lambda j: j.info.submit_time)
        ]

    async def stop(self, job_id: str) -> bool | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if job.info.status in TERMINAL:
            return False
        job.stop_requested = True
        if job.proc is not None:
            signal_group(job.proc.pid, signal.SIGTERM)
            asyncio.get_running_loop().call_later(STOP_GRACE_S, self._kill, job)
        return True

    async def wait(self, job_id: str, timeout: float) -> dict[str, Any] | None:
        """The job's record once it has ended, or after ``timeout`` seconds (at most 60)."""
        job = self.jobs.get(job_id)
        if job is None:
            return None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, min(timeout, 60.0))):
                await job.done.wait()
        return asdict(job.info)

    def _kill(self, job: _Job) -> None:
        if job.proc is not None:
            # The whole group: the driver may be gone while children it started linger.
            signal_group(job.proc.pid, signal.SIGKILL)

    async def tail(self, job_id: str, offset: int, wait_s: float) -> tuple[bytes, int, bool] | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        deadline = time.monotonic() + max(0.0, min(wait_s, 30.0))
        while True:
            ended = job.done.is_set()  # before reading: every byte written by then is read
            data = read_chunk(job.info.log_path, offset, TAIL_CHUNK)
            if data or ended or time.monotonic() >= deadline:
                return data, offset + len(data), ended and len(data) < TAIL_CHUNK
            # The driver writes its log file itself; look again shortly, or as soon as it ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.1, max(0.0, deadline - time.monotonic()))):
                    await job.done.wait()
