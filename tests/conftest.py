"""Shared fixtures: real meshes of node processes on loopback, started and torn down here."""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

import runtime

# Importing runtime.train has the nodes started afterwards import torch in their zygotes as
# they start; in a test process that would cost every later init() seconds of CPU, whatever
# it tests. The tests of that behaviour set it themselves.
os.environ.setdefault("RUNTIME_ZYGOTE_PRELOAD", "")


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile the package once, in the controlling process: with
    PYTHONDONTWRITEBYTECODE set (as on CI) nothing writes ``__pycache__``, and every node
    process the tests start (hundreds) would compile the runtime from source again."""
    if not hasattr(config, "workerinput"):
        compileall.compile_dir(os.path.dirname(runtime.__file__), quiet=1)


@pytest.fixture(autouse=True)
def _isolated_tmpdir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test process keeps its head.json and sessions in its own folder."""
    base = tmp_path_factory.getbasetemp() / "runtime-tmp"
    base.mkdir(exist_ok=True)
    monkeypatch.setenv("RUNTIME_TMPDIR", str(base))


@contextlib.contextmanager
def local_mesh(tmpdir: object, **init: object) -> Iterator[dict[str, object]]:
    """``runtime.init(**init)`` with its head.json and sessions under ``tmpdir``; shut down
    (and RUNTIME_TMPDIR put back) on leaving."""
    old = os.environ.get("RUNTIME_TMPDIR")
    os.environ["RUNTIME_TMPDIR"] = str(tmpdir)
    try:
        info = runtime.init(**init)  # type: ignore[arg-type]
        try:
            yield info
        finally:
            runtime.shutdown()
    finally:
        if old is None:
            os.environ.pop("RUNTIME_TMPDIR", None)
        else:
            os.environ["RUNTIME_TMPDIR"] = old


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A local mesh (head + 2 one-CPU nodes) shared by the tests of a module."""
    with local_mesh(tmp_path_factory.mktemp("mesh"), num_cpus=2, resources={"custom": 2.0}) as info:
        yield info


@pytest.fixture
def mesh() -> Iterator[None]:
    """A fresh local mesh of three one-CPU nodes for one test (for tests that kill nodes)."""
    runtime.init(num_cpus=3)
    try:
        yield
    finally:
        runtime.shutdown()


#: Fast failure detection for the tests that pause or silence nodes (beat, suspect, dead).
FAST_DETECTION = {
    "RUNTIME_HEARTBEAT_INTERVAL_S": "0.1",
    "RUNTIME_SUSPECT_AFTER_S": "0.6",
    "RUNTIME_DEAD_AFTER_S": "1.5",
    "RUNTIME_LOOP_LAG_WARN_S": "0.3",
}


@pytest.fixture
def fast_mesh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fresh local mesh of two one-CPU nodes with FAST_DETECTION."""
    for name, value in FAST_DETECTION.items():
        monkeypatch.setenv(name, value)
    runtime.init(num_cpus=2)
    try:
        yield
    finally:
        runtime.shutdown()


def join_hosts(n: int, *args: str) -> list[subprocess.Popen[bytes]]:
    """Start ``n`` more hosts (``python -m runtime.node --address``, one process of 1 CPU
    each unless ``args`` say otherwise) joining this driver's local mesh; wait until in."""
    from runtime.core.api import session as _api

    session = _api._session
    assert session is not None and session.mesh is not None, "needs a local mesh"
    mesh = session.mesh
    before = len([m for m in runtime.nodes() if not m["IsDriver"]])
    token_file = os.path.join(mesh.state_dir, "token")
    argv = [sys.executable, "-m", "runtime.node", "--address", mesh.head_address,
            "--token-file", token_file, "--num-cpus", "1", *args]  # fmt: skip
    out = subprocess.DEVNULL
    procs = [subprocess.Popen(argv, stdout=out, stderr=out) for _ in range(n)]
    until(lambda: len([m for m in runtime.nodes() if not m["IsDriver"]]) >= before + n, 30)
    return procs


def workers() -> dict[str, int]:
    """Node id -> pid of the cluster's worker nodes (not drivers, not the CPU-less head)."""
    return {n["NodeID"]: n["Pid"] for n in runtime.nodes() if not n["IsDriver"] and n["Resources"]}


def until(
    predicate: Callable[[], object],
    timeout: float = 20.0,
    why: Callable[[], str] | None = None,
) -> float:
    """Poll a cluster-state predicate (membership changes have no event a driver can await);
    the one polling helper of the tests. ``why()`` adds to the failure message (read at the
    end); returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start >= timeout:
            detail = f"\n{why()}" if why is not None else ""
            raise AssertionError(f"the cluster did not get there in time{detail}")
        time.sleep(0.02)
    return time.monotonic() - start


def cli_json(*args: str) -> object:
    """Run ``python -m runtime --json ARGS`` against this driver's local mesh; its output."""
    from runtime.core.api import session as _api

    session = _api._session
    assert session is not None and session.mesh is not None, "needs a local mesh"
    mesh = session.mesh
    token_file = os.path.join(mesh.state_dir, "token")
    out = subprocess.run(
        [sys.executable, "-m", "runtime", "--address", mesh.head_address,
         "--token-file", token_file, "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """The pids still alive after ``timeout`` (bounded poll: process exit has no event here)."""
    import psutil

    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != "zombie"
        except psutil.NoSuchProcess:  # gone, or reaped between two looks (the mesh's keeper)
            return False

    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if running(p)]
        if alive:
            time.sleep(0.05)
    return alive


def cpus_back(n: float) -> bool:
    """The cluster counts ``n`` CPUs again (False while the head is down)."""
    from runtime.exceptions import NodeDiedError

    try:
        return runtime.cluster_resources().get("CPU", 0) >= n
    except NodeDiedError:
        return False


@dataclass
class HeadProcess:
    """A head started with ``python -m runtime.node --head`` in its own process."""

    proc: subprocess.Popen[bytes]
    address: str
    state_dir: str
    token: bytes
    env: dict[str, str]
    log_path: str

    def start_node(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "runtime.node", "--address", self.address, *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def restart(self) -> subprocess.Popen[bytes]:
        """Start a head again on this one's address and state dir (after it was killed)."""
        host, port = self.address.rsplit(":", 1)
        return subprocess.Popen(
            [sys.executable, "-m", "runtime.node", "--head", "--host", host, "--port", port,
             "--state-dir", self.state_dir, "--num-cpus", "0"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip


def start_head(
    tmp_path: os.PathLike[str], *args: str, env: dict[str, str] | None = None
) -> HeadProcess:
    """Start a head and wait (bounded) until it has written its address to head.json."""
    state_dir = os.path.join(tmp_path, "state")
    env = dict(env or os.environ)
    env["RUNTIME_TMPDIR"] = os.path.join(tmp_path, "rt")
    env.pop("RUNTIME_AUTH_TOKEN", None)
    log_path = os.path.join(tmp_path, "head.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtime.node",
                "--head",
                "--port",
                "0",
                "--state-dir",
                state_dir,
                *args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    head_json = os.path.join(env["RUNTIME_TMPDIR"], "head.json")
    deadline = time.monotonic() + 30
    while not os.path.exists(head_json):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            with open(log_path) as f:
                raise RuntimeError("head did not start:\n" + f.read())
        time.sleep(0.02)
    with open(head_json) as f:
        address = json.load(f)["address"]
    with open(os.path.join(state_dir, "token")) as f:
        token = bytes.fromhex(f.read().strip())
    return HeadProcess(proc, address, state_dir, token, env, log_path)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a process this test started, by its handle; kill it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def node_on_another_host(log_path: os.PathLike[str], timeout: float = 30.0) -> Iterator[None]:
    """A node of the current local mesh that claims to be on another host
    (``RUNTIME_HOST_ID``), with the resource ``far``: objects reach it as they would another
    host, over the connection. Stopped on leaving."""
    from runtime.core.api import session as _api

    session = _api._session
    assert session is not None and session.mesh is not None
    env = dict(os.environ, RUNTIME_HOST_ID="another-host")
    command = [sys.executable, "-m", "runtime.node", "--address", session.mesh.head_address]
    command += ["--token-file", os.path.join(session.mesh.state_dir, "token")]
    command += ["--num-cpus", "0", "--resources", '{"far": 1}']
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        until(
            lambda: any(n["Alive"] and "far" in n["Resources"] for n in runtime.nodes()),
            timeout,
            lambda: "the node on another host did not join",
        )
        yield
    finally:
        stop_process(proc)


@pytest.fixture
def head(tmp_path: os.PathLike[str]) -> Iterator[HeadProcess]:
    """A standalone head with a host of 1 CPU (its node process), its own state dir and token
    file."""
    h = start_head(tmp_path, "--num-cpus", "1")
    try:
        yield h
    finally:
        stop_process(h.proc)
