"""Simulated hosts: Linux namespaces joined by a private bridge, for multi-host tests.

A :class:`Host` is three namespaces held open by one small process (``unshare --net --mount
--uts``): its own network stack with one address on a bridge (``10.77.0.0/24``), its own
hostname, and fresh tmpfs mounts on ``/dev/shm`` and ``/tmp``. Two hosts share no memory and
no file the runtime uses, so nothing passes between them except over TCP on the bridge, as
between two machines. The bridge lives in a namespace of its own (the *switch*): the real
network of the machine is never touched, and parallel tests (``pytest -n``) each get their
own ``10.77.0.0/24`` without clashing.

Processes run inside a host through ``nsenter``; each one is recorded and killed by pid in
:meth:`Network.close`, then the holders, and with them the namespaces, go. Without root,
``ip`` or ``nsenter`` the :func:`network` context raises :class:`Unavailable` with the
reason (the fixtures turn it into a skip).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Every simulated network uses this /24: it exists only inside the namespaces made here.
SUBNET = "10.77.0"
#: The head's port (fixed: each network is private, so it never clashes).
HEAD_PORT = 6380
#: The head's port for remote drivers (``--client-port``).
CLIENT_PORT = 10001
#: The link between the head's host and a host outside the cluster's network.
OUTSIDE_SUBNET = "10.78.0"
#: Where each host keeps the cluster token (in its private /tmp).
TOKEN_PATH = "/tmp/cluster-token"
#: The runtime's own temporary folder on each host (head.json, sessions, spill).
RUNTIME_TMP = "/tmp/runtime"
REPO = Path(__file__).resolve().parents[2]
#: Result line a driver program prints last (see ``programs.py``).
RESULT = "RESULT "
#: Line a driver program prints when it waits for the test at a checkpoint.
CHECKPOINT = "CHECKPOINT "

#: Fast failure detection for the tests that kill nodes (beat, suspect, dead).
FAST_DETECTION = {
    "RUNTIME_HEARTBEAT_INTERVAL_S": "0.1",
    "RUNTIME_SUSPECT_AFTER_S": "0.6",
    "RUNTIME_DEAD_AFTER_S": "1.5",
}


class Unavailable(Exception):
    """Namespaces cannot be made here (the reason is the message)."""


def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        (
            p
            for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}")
            if os.path.exists(p)
        ),
        None,
    )
    if found is None:
        raise Unavailable(f"simulated hosts need `{name}` (iproute2 / util-linux)")
    return found


def _holder(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start a namespace holder: it prints ``ready`` once set up, then waits on its stdin (so
    it also ends when the test process dies and the pipe closes)."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    line = proc.stdout.readline() if ready else b""
    if line.strip() != b"ready":
        _end(proc)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise Unavailable(f"cannot make namespaces here: {' '.join(argv[:4])}...: {err.strip()}")
    return proc


def _end(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Stop one process this harness started, by its pid, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@dataclass
class Host:
    """One simulated machine: its address on the bridge, its processes, its logs."""

    name: str
    ip: str
    holder: subprocess.Popen[bytes]
    logs: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespaces, from the repository root."""
        pid = str(self.holder.pid)
        return [_tool("nsenter"), "-t", pid, "-n", "-m", "-u", f"--wd={REPO}", "--", *argv]

    def spawn(
        self, label: str, *argv: str, env: dict[str, str] | None = None, stdin: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start a process in this host; its output goes to ``<logs>/<host>.<label>.log``."""
        path = self.logs / f"{self.name}.{label}.log"
        with open(path, "ab") as log:
            proc = subprocess.Popen(
                self.command(*argv),
                env={**self.env, **(env or {})},
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdin else log,
                stderr=log,
            )
        self.procs.append(proc)
        return proc

    def run(self, *argv: str, input: bytes | None = None, timeout: float = 30) -> str:
        """Run a short command in this host and return its output (raises on failure)."""
        out = subprocess.run(
            self.command(*argv),
            env=self.env,
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"{argv} failed on {self.name}: {out.stderr.decode(errors='replace')}"
            )
        return out.stdout.decode(errors="replace")

    def exit_code(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 30) -> int:
        """Run a command in this host (as a probe would) and return its exit status."""
        out = subprocess.run(
            self.command(*argv),
            env={**self.env, **(env or {})},
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return out.returncode

    def kill(self) -> list[int]:
        """Kill -9 every process started in this host (a machine whose runtime died); the
        pids killed."""
        pids = [p.pid for p in self.procs if p.poll() is None]
        for proc in self.procs:
            _end(proc)
        self.procs.clear()
        return pids

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.logs.glob(f"{self.name}.*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}:\n" + "\n".join(text))
        return "\n".join(out)


@dataclass
class Network:
    """A switch (a bridge in its own namespace) and the hosts plugged into it."""

    switch: subprocess.Popen[bytes]
    hosts: list[Host]
    logs: Path
    #: Hosts outside the bridge (a laptop): see :meth:`add_outside`.
    outside: list[Host] = field(default_factory=list)

    def close(self) -> None:
        """Kill every process of every host by pid, then the holders (the namespaces go)."""
        for host in self.hosts + self.outside:
            host.kill()
        for holder in [h.holder for h in self.hosts + self.outside] + [self.switch]:
            _end(holder)

    def add_outside(self, gateway: Host, name: str = "laptop") -> Host:
        """A host off the bridge (a laptop outside the cluster's network), linked to
        ``gateway`` alone by a veth pair on ``10.78.0.0/24``, with one route: to the
        gateway's bridge address. The gateway forwards nothing (a new network namespace
        does not), so no other host of the bridge can be reached from it, nor it from them."""
        setup = (
            "mount -t tmpfs -o mode=1777 host-shm /dev/shm && "
            "mount -t tmpfs -o mode=1777 host-tmp /tmp && "
            'printf "127.0.0.1 localhost\\n" > /tmp/.etc-hosts && '
            'mount --bind /tmp/.etc-hosts /etc/hosts && hostname "$1" && echo ready && exec cat'
        )
        namespaces = ["--net", "--mount", "--uts", "--propagation", "private"]
        holder = _holder([_tool("unshare"), *namespaces, "--", "sh", "-c", setup, "sh", name])
        host = Host(name, f"{OUTSIDE_SUBNET}.{len(self.outside) + 2}", holder, self.logs,
                    gateway.env)  # fmt: skip
        self.outside.append(host)
        link = f"o{len(self.outside)}"
        gateway.run(_tool("ip"), "-batch", "-", input=(
            f"link add {link} type veth peer name eth0 netns {holder.pid}\n"
            f"addr add {OUTSIDE_SUBNET}.1/32 dev {link}\n"
            f"link set {link} up\n"
            f"route add {host.ip}/32 dev {link}\n"
        ).encode())  # fmt: skip
        host.run(_tool("ip"), "-batch", "-", input=(
            "link set lo up\n"
            f"addr add {host.ip}/32 dev eth0\n"
            "link set eth0 up\n"
            f"route add {gateway.ip}/32 dev eth0\n"
        ).encode())  # fmt: skip
        return host

    def cut(self, host: Host) -> None:
        """Unplug ``host`` from the switch (a partition: silence, no reset)."""
        self._switch_ip("link", "set", f"p{self.hosts.index(host)}", "down")

    def heal(self, host: Host) -> None:
        self._switch_ip("link", "set", f"p{self.hosts.index(host)}", "up")

    def _switch_ip(self, *args: str) -> None:
        subprocess.run(
            [_tool("nsenter"), "-t", str(self.switch.pid), "-n", _tool("ip"), *args],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def resolve(self, name: str, ip: str) -> None:
        """Make ``name`` resolve to ``ip`` on every host (a DNS record that changes, as a
        Kubernetes Service's does when its pod comes back elsewhere)."""
        for host in self.hosts:
            # In place: /etc/hosts is a bind mount, which a rename (sed -i) cannot replace.
            script = f"grep -v ' {name}$' /etc/hosts > /tmp/.h; echo '{ip} {name}' >> /tmp/.h; "
            host.run("sh", "-c", script + "cat /tmp/.h > /etc/hosts")

    def log_tail(self) -> str:
        return "\n".join(h.log_tail() for h in self.hosts)


def _check_paths() -> None:
    """The repository and Python must stay visible inside a host (its /tmp is a fresh one)."""
    for what, path in (("the repository", str(REPO)), ("Python", sys.executable)):
        if path.startswith(("/tmp/", "/dev/shm/")):
            raise Unavailable(f"{what} is under {path.split('/')[1]}, which each host replaces")


def make_network(n: int, logs: Path, env: dict[str, str] | None = None) -> Network:
    """``n`` hosts ``h0..h{n-1}`` on ``10.77.0.1..n``; raises :class:`Unavailable`."""
    if os.geteuid() != 0:
        raise Unavailable("simulated hosts need root (network and mount namespaces)")
    ip, unshare = _tool("ip"), _tool("unshare")
    _tool("nsenter")
    _check_paths()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    base_env.update(
        {
            "RUNTIME_TMPDIR": RUNTIME_TMP,
            "RUNTIME_AUTH_TOKEN_FILE": TOKEN_PATH,
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "src"), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            **(env or {}),
        }
    )
    switch = _holder([unshare, "--net", "--", "sh", "-c", "echo ready && exec cat"])
    net = Network(switch, [], logs)
    try:
        batch = ["link add br0 type bridge", "link set br0 up"]
        # Every host resolves every host's name, as on a cluster with DNS (gloo needs it).
        etc_hosts = "127.0.0.1 localhost\n" + "".join(f"{SUBNET}.{i + 1} h{i}\n" for i in range(n))
        for i in range(n):
            setup = (
                "mount -t tmpfs -o mode=1777 host-shm /dev/shm && "
                "mount -t tmpfs -o mode=1777 host-tmp /tmp && "
                'printf %s "$2" > /tmp/.etc-hosts && mount --bind /tmp/.etc-hosts /etc/hosts && '
                'hostname "$1" && echo ready && exec cat'
            )
            namespaces = ["--net", "--mount", "--uts", "--propagation", "private"]
            holder = _holder(
                [unshare, *namespaces, "--", "sh", "-c", setup, "sh", f"h{i}", etc_hosts]
            )
            host = Host(f"h{i}", f"{SUBNET}.{i + 1}", holder, logs, base_env)
            net.hosts.append(host)
            batch += [
                f"link add p{i} type veth peer name eth0 netns {holder.pid}",
                f"link set p{i} master br0 up",
            ]
        subprocess.run(
            [_tool("nsenter"), "-t", str(switch.pid), "-n", ip, "-batch", "-"],
            input="\n".join(batch).encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )
        for host in net.hosts:
            setup = f"link set lo up\naddr add {host.ip}/24 dev eth0\nlink set eth0 up\n"
            host.run(ip, "-batch", "-", input=setup.encode())
    except subprocess.CalledProcessError as exc:
        net.close()
        raise Unavailable(
            f"cannot build the bridge here: {exc.stderr.decode(errors='replace')}"
        ) from None
    except BaseException:
        net.close()
        raise
    return net


@contextlib.contextmanager
def network(n: int, logs: Path, env: dict[str, str] | None = None) -> Iterator[Network]:
    net = make_network(n, logs, env)
    try:
        yield net
    finally:
        net.close()


@dataclass
class Cluster:
    """A runtime cluster on a :class:`Network`: a head on ``h0`` and nodes where asked."""

    net: Network
    token: bytes
    state_dir: str = f"{RUNTIME_TMP}/head-state"
    head: subprocess.Popen[bytes] | None = None
    #: The name nodes and drivers reach the head by (None: its address on h0).
    head_name: str | None = None
    #: The head's address on h0 (None: h0's own).
    head_ip: str | None = None

    @property
    def hosts(self) -> list[Host]:
        return self.net.hosts

    @property
    def address(self) -> str:
        return f"{self.head_name or self.head_ip or self.hosts[0].ip}:{HEAD_PORT}"

    def node_command(self, host: Host, *args: str, ip: str | None = None) -> list[str]:
        return [sys.executable, "-m", "runtime.node", "--host", ip or host.ip,
                "--token-file", TOKEN_PATH, *args]  # fmt: skip

    def start_head(self, *args: str, timeout: float = 30) -> subprocess.Popen[bytes]:
        """Start (or restart, on the same state dir) the head on ``h0``; wait until it listens."""
        h0 = self.hosts[0]
        log = h0.logs / f"{h0.name}.head.log"
        start = log.stat().st_size if log.exists() else 0
        self.head = h0.spawn(
            "head",
            *self.node_command(h0, "--head", "--port", str(HEAD_PORT), "--num-cpus", "0",
                               "--state-dir", self.state_dir, *args, ip=self.head_ip),
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while b"runtime head listening on" not in log.read_bytes()[start:]:
            if self.head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the head did not start:\n{self.net.log_tail()}")
            time.sleep(0.05)
        return self.head

    def kill_head(self) -> None:
        assert self.head is not None
        _end(self.head)
        self.hosts[0].procs.remove(self.head)

    def start_node(
        self,
        host: Host,
        *,
        num_cpus: float = 1,
        procs: int = 1,
        resources: dict[str, float] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Join ``host`` to the cluster with ``procs`` node processes of ``num_cpus`` each (the
        host offers ``num_cpus * procs``, shared by its processes)."""
        cpus = num_cpus * procs
        args = ["--address", self.address, "--num-cpus", str(cpus), "--procs", str(procs)]
        if resources:
            args += ["--resources", json.dumps(resources)]
        return host.spawn("node", *self.node_command(host, *args))

    def driver(
        self,
        host: Host,
        program: str,
        env: dict[str, str] | None = None,
        via: str | None = None,
        **kwargs: object,
    ) -> Driver:
        """Start driver ``program`` of ``programs.py`` in ``host``, joined to this cluster (at
        ``via`` when given: a remote driver's ``runtime://HOST:PORT``)."""
        argv = [sys.executable, "-m", "tests.hosts.programs", program, via or self.address,
                json.dumps(kwargs)]  # fmt: skip
        return Driver(host.spawn(f"driver-{program}", *argv, env=env, stdin=True), self)

    def drive(
        self,
        host: Host,
        program: str,
        timeout: float = 90,
        env: dict[str, str] | None = None,
        via: str | None = None,
        **kwargs: object,
    ) -> object:
        """Run driver ``program`` to its end in ``host``; what it returned."""
        return self.driver(host, program, env, via, **kwargs).result(timeout)


@dataclass
class Driver:
    """A driver program running in a host; the test talks to it at its checkpoints."""

    proc: subprocess.Popen[bytes]
    cluster: Cluster

    def _line(self, deadline: float) -> str:
        assert self.proc.stdout is not None
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(
                    f"the driver said nothing in time\n{self.cluster.net.log_tail()}"
                )
            line = self.proc.stdout.readline().decode(errors="replace")
            if not line:
                code = self.proc.wait(10)
                raise AssertionError(
                    f"the driver exited ({code}) early\n{self.cluster.net.log_tail()}"
                )
            if line.startswith((RESULT, CHECKPOINT)):
                return line.rstrip("\n")

    def checkpoint(self, timeout: float = 60) -> object:
        """Wait until the program reaches its next checkpoint; the value it reported there."""
        line = self._line(time.monotonic() + timeout)
        assert line.startswith(CHECKPOINT), line
        return json.loads(line[len(CHECKPOINT) :])

    def resume(self, value: object = None) -> None:
        """Let the program go on past its checkpoint."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(value).encode() + b"\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 90) -> object:
        line = self._line(time.monotonic() + timeout)
        assert line.startswith(RESULT), line
        self.proc.wait(30)
        return json.loads(line[len(RESULT) :])
