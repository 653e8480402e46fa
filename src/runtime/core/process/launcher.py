"""Starting node processes: a local mesh for ``runtime.init()``, and the on-disk traces
(state directory, token file, ``head.json``) that let ``address="auto"`` find a head.

Every child gets the read end of a pipe whose write end only its parent holds; when the
parent dies, even by ``kill -9``, the pipe reads EOF and the child exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..common.private import check_private, private_dir
from ..objects.refs import current_worker_or_none
from ..objects.store import default_capacity, process_running, process_tag
from ..scheduling.host import HostLedger
from .keeper import MeshKeeper, describe_exit, restart_delay, restart_limit


def base_dir() -> str:
    """Where heads started on this host leave their traces (``$RUNTIME_TMPDIR`` overrides)."""
    return os.environ.get("RUNTIME_TMPDIR") or os.path.join(
        tempfile.gettempdir(), f"runtime-{os.getuid()}"
    )


#: The file in a local mesh's session directory naming the driver that owns it.
OWNER_FILE = "driver"


def sweep_stale_sessions(base: str) -> list[str]:
    """Remove the session directories of local meshes whose driver no longer runs (killed
    with SIGKILL: nothing ran to clean up); directories without an owner file (a head's
    state, kept for restarts) are left alone."""
    removed: list[str] = []
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            path = os.path.join(base, name)
            if not name.startswith("session_"):
                continue
            try:
                with open(os.path.join(path, OWNER_FILE)) as f:
                    owner = f.read().strip()
            except OSError:
                continue
            if owner and not process_running(owner):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
    return removed


def new_state_dir(owned: bool = False) -> str:
    """A fresh session directory under the runtime directory; ``owned``: it belongs to this
    process (a local mesh's), and a later start removes it once this process is gone."""
    base = private_dir(base_dir())
    sweep_stale_sessions(base)
    path = tempfile.mkdtemp(prefix=time.strftime("session_%Y%m%d_%H%M%S_"), dir=base)
    if owned:
        fd = os.open(os.path.join(path, OWNER_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(process_tag())
    return path


def write_token(state_dir: str, token: bytes) -> str:
    path = os.path.join(state_dir, "token")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token.hex())
    return path


#: The shortest cluster token accepted: anyone who can connect may test guesses against it.
MIN_TOKEN_BYTES = 16


def strong_token(token: bytes, where: str) -> bytes:
    """``token``, unless it is shorter than :data:`MIN_TOKEN_BYTES` (ValueError saying how to
    make a good one)."""
    if len(token) < MIN_TOKEN_BYTES:
        raise ValueError(
            f"the cluster token from {where} is {len(token)} bytes; it must hold at least "
            f"{MIN_TOKEN_BYTES} random bytes (a short token can be guessed): make one with "
            "`python -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    return token


def read_token_file(path: str) -> bytes:
    with open(path) as f:
        text = f.read().strip()
    if not text:
        raise ValueError(f"the token file {path} is empty")
    return parse_token(text, where=f"the token file {path}")


def parse_token(text: str, where: str = "the argument") -> bytes:
    try:
        token = bytes.fromhex(text)
    except ValueError:
        token = text.encode()
    return strong_token(token, where)


def head_file() -> str:
    return os.path.join(base_dir(), "head.json")


def write_head_file(address: str, state_dir: str, dashboard: str | None = None) -> None:
    private_dir(base_dir())
    tmp = head_file() + f".{os.getpid()}"
    info: dict[str, Any] = {"address": address, "state_dir": state_dir, "pid": os.getpid()}
    if dashboard is not None:
        info["dashboard"] = dashboard  # without the token: that is in the state dir
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, head_file())


def remove_head_file() -> None:
    with contextlib.suppress(OSError, ValueError), open(head_file()) as f:
        if json.load(f).get("pid") == os.getpid():
            os.unlink(head_file())


def find_local_head() -> dict[str, Any]:
    """The head started on this host by ``python -m runtime.node --head``.

    Raises PermissionError when the runtime directory or ``head.json`` is not this user's own
    (another user may have planted them)."""
    if os.path.lexists(head_file()):
        check_private(base_dir(), directory=True)
        check_private(head_file(), directory=False)
    try:
        with open(head_file()) as f:
            info: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        raise ConnectionError(
            f"address='auto' found no head on this host (no {head_file()}); "
            "start one with `python -m runtime.node --head`"
        ) from None
    pid = int(info.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise ConnectionError(
            f"the head recorded in {head_file()} (pid {pid}) is not running"
        ) from None
    except PermissionError:
        pass
    return info


def resolve_token(explicit: str | bytes | None, *, state_dir: str | None = None) -> bytes | None:
    """The cluster token: the argument, $RUNTIME_AUTH_TOKEN, $RUNTIME_AUTH_TOKEN_FILE, or the
    token file in ``state_dir``."""
    if explicit is not None:
        if isinstance(explicit, bytes):
            return strong_token(explicit, "token=")
        return parse_token(explicit, "token=")
    env = os.environ.get("RUNTIME_AUTH_TOKEN")
    if env:
        return parse_token(env, "RUNTIME_AUTH_TOKEN")
    path = os.environ.get("RUNTIME_AUTH_TOKEN_FILE")
    if path:
        return read_token_file(path)
    if state_dir is not None:
        candidate = os.path.join(state_dir, "token")
        if os.path.lexists(candidate):
            check_private(state_dir, directory=True)
            check_private(candidate, directory=False)
            return read_token_file(candidate)
    return None


def new_token() -> bytes:
    return secrets.token_bytes(32)


def parent_pipe() -> tuple[int, int]:
    """(read end for children, write end the parent keeps, never inherited)."""
    r, w = os.pipe()
    os.set_inheritable(w, False)
    return r, w


@dataclass
class LocalMesh:
    """The processes of a mesh this process started; :meth:`stop` ends them all."""

    head_address: str
    state_dir: str
    token: bytes
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    death_pipe_w: int = -1
    owns_state_dir: bool = True
    #: Starts node processes again when they exit while the mesh runs (keeper.py).
    keeper: MeshKeeper | None = None
    #: The read end of the parent pipe, kept for the processes the keeper starts.
    death_pipe_r: int = -1

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the nodes, then the head (so no node sees its head vanish), then clean up."""
        deadline = time.monotonic() + timeout
        if self.keeper is not None:
            self.keeper.stop()  # no node is started again from here on
        nodes, head = self.procs[1:], self.procs[:1]
        for group in (nodes, head):
            for proc in group:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
            for proc in group:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for fd in (self.death_pipe_w, self.death_pipe_r):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.death_pipe_w = self.death_pipe_r = -1
        if self.owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        _live_meshes.pop(id(self), None)

    def alive(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]


#: The meshes this process started and has not stopped (id -> mesh), for the SIGTERM handler.
_live_meshes: dict[int, LocalMesh] = {}


def _stop_meshes_then_die(signum: int, frame: object) -> None:
    """SIGTERM in a driver that started a local mesh: stop it and remove its session
    directory (and the token in it), then die of SIGTERM as before."""
    for mesh in list(_live_meshes.values()):
        with contextlib.suppress(Exception):
            mesh.stop(timeout=2.0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def cleanup_on_sigterm(mesh: LocalMesh | None) -> None:
    """Remember ``mesh``, and (from the main thread, when SIGTERM has its default action)
    install the handler that cleans up after it; a program's own handler is left alone."""
    if mesh is None:
        return
    _live_meshes[id(mesh)] = mesh
    if threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _stop_meshes_then_die)


def live_meshes() -> tuple[LocalMesh, ...]:
    """The local meshes this process started and has not stopped."""
    return tuple(_live_meshes.values())


def abandon_start(
    loop: asyncio.AbstractEventLoop, thread: threading.Thread, before: tuple[LocalMesh, ...]
) -> None:
    """``init()`` failed or was interrupted part-way (a late check, Ctrl-C while the nodes
    start): stop its event loop (run by ``thread``), then every local mesh started since
    ``before``, so no node process outlives the failed call."""
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    # What was still under way (the start itself, when interrupted) is cancelled and runs its
    # own cleanup here, on this thread: the driver's worker closes, so this process is not
    # left looking like a member of a cluster it never joined.
    tasks = asyncio.all_tasks(loop)
    if tasks:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.wait(tasks, timeout=10.0))
    # A start that ran to its end after the interrupt left its worker behind: close it (init()
    # refuses to start while this process is a member, so the worker is this call's).
    close = getattr(current_worker_or_none(), "aclose", None)
    if close is not None:
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.wait_for(close(), 10.0))
    loop.close()
    for mesh in live_meshes():
        if not any(mesh is old for old in before):
            mesh.stop()


def node_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "runtime.node", *args]


#: A host of more processes than this starts them from one process that imported the runtime
#: once and forks them (``--fork N``): a hundred interpreters each importing it would take
#: seconds of CPU on a small machine, and starve the head while they do.
FORK_ABOVE = 8


def fork_members(count: int) -> int | None:
    """In the process started with ``--fork count`` (nothing imported lazily yet, no thread,
    no event loop): fork ``count`` node processes. Returns None in each child, which goes on
    to run its node; in this process, waits for them all and returns the exit status to end
    with. A child that exits while the driver lives and no stop was asked for is forked again
    (bounded as the keeper bounds restarts, see keeper.py). SIGTERM and SIGINT here are passed
    on to the children; if this process dies, they get SIGKILL (and each also watches the
    mesh's parent pipe, as every node does)."""
    children: set[int] = set()
    stopping = False

    def fork_one() -> bool:
        pid = os.fork()
        if pid == 0:
            _set_parent_death_signal(signal.SIGKILL)
            if os.getppid() == 1:
                os._exit(1)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            return True
        children.add(pid)
        return False

    for _ in range(count):
        if fork_one():
            return None

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    _set_parent_death_signal(signal.SIGTERM)  # the driver gone: stop the children cleanly
    status = 0
    restarts: list[float] = []
    limit = restart_limit() * count
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        children.discard(pid)
        exit_code = os.waitstatus_to_exitcode(code) if code else 0
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 60.0]
        if not stopping and os.getppid() != 1 and len(restarts) < limit:
            time.sleep(restart_delay(len(restarts) // max(1, count)))
            if not stopping:
                restarts.append(time.monotonic())
                print(f"node process {pid} of the local mesh {describe_exit(exit_code)}; "
                      "starting another", file=sys.stderr, flush=True)  # fmt: skip
                if fork_one():
                    return None
                continue
        status = max(status, exit_code)
    return status


def _set_parent_death_signal(sig: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG


@dataclass
class HostPlan:
    """One host's processes: the resources they share, how many, and the host's labels."""

    resources: dict[str, float]
    procs: int
    labels: dict[str, str] = field(default_factory=dict)
    host_id: str = field(default_factory=lambda: secrets.token_hex(6))

    @property
    def slot(self) -> float:
        """The CPU each process runs at once: the host's CPUs over its processes."""
        return self.resources.get("CPU", 0.0) / max(1, self.procs)


#: Labels and memory resource for the next local mesh, from ``init(labels=..., _memory=...)``
#: (init_options.apply; init() itself is at its size limit).
next_labels: dict[str, str] = {}
next_memory: float | None = None


def host_processes(
    num_cpus: float, num_gpus: float, resources: dict[str, float] | None
) -> HostPlan:
    """The local host of ``runtime.init()``: ``num_cpus`` CPUs in as many node processes
    (one per core), ``num_gpus`` GPUs, the custom resources, ``memory`` and
    ``object_store_memory`` (as Ray reports them), and the labels init() was given."""
    global next_memory
    custom = dict(resources or {})
    if next_memory is not None:
        custom["memory"] = next_memory
    plan = HostPlan(host_resources(num_cpus, num_gpus, custom), max(1, math.ceil(num_cpus)),
                    dict(next_labels))  # fmt: skip
    next_labels.clear()
    next_memory = None
    return plan


def host_resources(
    num_cpus: float, num_gpus: float, resources: dict[str, float] | None
) -> dict[str, float]:
    """What a host offers: its CPUs, GPUs and custom resources, and as Ray's raylet reports
    them, ``memory`` (70 % of RAM, less the object store, unless given) and
    ``object_store_memory`` (one store's capacity)."""
    res: dict[str, float] = {"CPU": float(num_cpus)}
    if num_gpus:
        res["GPU"] = float(num_gpus)
    res.update(resources or {})
    store = float(default_capacity())
    res.setdefault("object_store_memory", store)
    if "memory" not in res:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            res["memory"] = float(max(0, int(ram * 0.7) - int(store)))
    return {k: v for k, v in res.items() if v > 0}


def ledger_path(state_dir: str, host_id: str) -> str:
    return os.path.join(state_dir, f"host-{host_id}.ledger")


def host_args(plan: HostPlan, state_dir: str) -> list[str]:
    """The arguments that make a node process one of ``plan``'s host (its ledger made)."""
    path = ledger_path(state_dir, plan.host_id)
    HostLedger(path, plan.resources).close()
    args = ["--host-ledger", path, "--host-id", plan.host_id, "--slot", _num(plan.slot)]
    if plan.labels:
        args += ["--labels", json.dumps(plan.labels)]
    return args


def start_local_mesh(
    host: HostPlan,
    *,
    log_to_driver: bool = True,
    env: dict[str, str] | None = None,
    object_store_memory: int | None = None,
    head_args: Sequence[str] = (),
) -> LocalMesh:
    """Start a head (no resources) and the host's node processes, all at once
    (``head_args``: more options of the head's, e.g. ``--dashboard-port N``).

    The head's listening socket is bound here and handed down, so the nodes can be
    started at the same moment as the head and connect as soon as it runs. The nodes share
    the host's resources through one ledger file in the session directory.
    """
    state_dir = new_state_dir(owned=True)
    token = new_token()
    token_path = write_token(state_dir, token)
    sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    address = "{}:{}".format(*sock.getsockname()[:2])
    r, w = parent_pipe()
    child_env = dict(os.environ if env is None else env)
    child_env.pop("RUNTIME_AUTH_TOKEN", None)
    child_env["PYTHONUNBUFFERED"] = "1"
    # Nodes import what the driver can import (functions pickled by reference, e.g. from
    # the script's own modules), as Ray's workers do on a local cluster.
    paths = [entry or os.getcwd() for entry in sys.path]
    child_env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if os.path.isdir(p)))
    log_path = None if log_to_driver else os.path.join(state_dir, "nodes.log")
    out: Any = None if log_path is None else open(log_path, "ab")  # noqa: SIM115 - children keep it
    mesh = LocalMesh(address, state_dir, token, death_pipe_w=w, death_pipe_r=r)
    _live_meshes[id(mesh)] = mesh  # from the start: a failed init() or SIGTERM stops it too
    common = ["--parent-fd", str(r), "--token-file", token_path, "--state-dir", state_dir]
    if object_store_memory is not None:
        common += ["--object-store-memory", str(object_store_memory)]
    try:
        mesh.procs.append(
            subprocess.Popen(
                node_command(
                    "--head",
                    "--listen-fd",
                    str(sock.fileno()),
                    "--num-cpus",
                    "0",
                    "--no-head-file",
                    *head_args,
                    *common,
                ),
                pass_fds=(sock.fileno(), r),
                env=child_env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        )
        if object_store_memory is not None:
            host.resources["object_store_memory"] = float(object_store_memory)
        node_args = ["--address", address, *host_args(host, state_dir), *common]
        forked = host.procs > FORK_ABOVE
        if forked:
            node_args += ["--fork", str(host.procs)]

        def spawn() -> subprocess.Popen[bytes]:
            sink: Any = None if log_path is None else open(log_path, "ab")  # noqa: SIM115
            try:
                return subprocess.Popen(
                    node_command(*node_args),
                    pass_fds=(r,),
                    env=child_env,
                    stdout=sink,
                    stderr=sink,
                    stdin=subprocess.DEVNULL,
                )
            finally:
                if sink is not None:
                    sink.close()

        for _ in range(1 if forked else host.procs):
            mesh.procs.append(spawn())
        mesh.keeper = MeshKeeper(mesh.procs, spawn).start()
    except BaseException:
        mesh.stop()
        raise
    finally:
        sock.close()
        if out is not None:
            out.close()
    return mesh


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
