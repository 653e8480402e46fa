"""A real Slurm cluster on simulated hosts: munged on every host (one shared key), slurmctld
on ``h0``, slurmd on the others, configured through one ``slurm.conf`` in a folder every host
sees (as a cluster's shared file system). Built from Debian's ``slurmctld``, ``slurmd``,
``slurm-client`` and ``munge`` packages; :class:`~tests.hosts.harness.Unavailable` names what
is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..hosts.harness import Network, Unavailable

TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo")
MUNGE_SOCKET = "/tmp/munge/munge.socket.2"  # in each host's private /tmp


def require_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        raise Unavailable(
            f"Slurm test needs {', '.join(missing)} (apt-get install slurmctld slurmd "
            "slurm-client munge; .ci/run does it as root)"
        )


def slurm_conf(net: Network, cpus: int) -> str:
    controller, *compute = net.hosts
    nodes = "\n".join(f"NodeName={h.name} NodeAddr={h.ip} CPUs={cpus}" for h in compute)
    return f"""\
ClusterName=simulated
SlurmctldHost={controller.name}({controller.ip})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={MUNGE_SOCKET}
CredType=cred/munge
StateSaveLocation=/tmp/slurm/ctld
SlurmdSpoolDir=/tmp/slurm/d
SlurmctldPidFile=/tmp/slurm/ctld.pid
SlurmdPidFile=/tmp/slurm/d.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
{nodes}
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Slurm:
    """The Slurm cluster of a network; ``env`` points its commands at ``slurm.conf``."""

    net: Network
    shared: Path
    env: dict[str, str]

    def command(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command on the controller's host."""
        return subprocess.run(
            self.net.hosts[0].command(*argv),
            env={**self.net.hosts[0].env, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_job(self, *sbatch_args: str, timeout: float = 120) -> tuple[int, str]:
        """Submit a batch job and wait (bounded) until Slurm has ended it: its exit code and
        the output file's text. (Polled here: ``sbatch --wait`` polls only every ~30 s.)"""
        out_file = self.shared / "job.out"
        submit = self.command("sbatch", "--parsable", f"--output={out_file}", *sbatch_args)
        assert submit.returncode == 0, submit.stderr
        job = submit.stdout.strip().split(";")[0]
        deadline = time.monotonic() + timeout
        while self.command("squeue", "-h", "-j", job).stdout.strip():
            if time.monotonic() > deadline:
                self.command("scancel", job)
                raise AssertionError(f"job {job} still running after {timeout} s")
            time.sleep(0.2)
        info = self.command("scontrol", "-o", "show", "job", job).stdout
        fields = dict(f.split("=", 1) for f in info.split() if "=" in f)
        output = out_file.read_text() if out_file.exists() else ""
        return int(fields["ExitCode"].split(":")[0]), output


def start_slurm(net: Network, shared: Path, cpus: int = 2, timeout: float = 60) -> Slurm:
    """Start munged everywhere, slurmctld on ``h0`` and slurmd on the rest; wait (bounded)
    until every compute node is idle."""
    require_tools()
    conf = shared / "slurm.conf"
    conf.write_text(slurm_conf(net, cpus))
    env = {"SLURM_CONF": str(conf)}
    key = os.urandom(1024)
    for host in net.hosts:
        host.run(
            "sh",
            "-c",
            "mkdir -p -m 755 /tmp/munge /tmp/slurm/ctld /tmp/slurm/d && umask 077 && "
            "cat > /tmp/munge/munge.key",
            input=key,
        )
        host.spawn(
            "munged", "munged", "--foreground", "--force", f"--socket={MUNGE_SOCKET}",
            "--key-file=/tmp/munge/munge.key", "--pid-file=/tmp/munge/munged.pid",
            "--seed-file=/tmp/munge/munged.seed", "--log-file=/tmp/munge/munged.log",
        )  # fmt: skip
    slurm = Slurm(net, shared, env)
    # munged is up once its socket is; slurmctld needs it at once.
    for host in net.hosts:
        _until(lambda h=host: h.exit_code("test", "-S", MUNGE_SOCKET) == 0, 20, "munged", net)
    net.hosts[0].spawn("slurmctld", "slurmctld", "-D", "-i", env=env)
    for host in net.hosts[1:]:
        host.spawn("slurmd", "slurmd", "-D", env=env)
    want = f"idle {len(net.hosts) - 1}"
    _until(
        lambda: slurm.command("sinfo", "-h", "-o", "%T %D").stdout.strip() == want,
        timeout,
        "every slurmd idle",
        net,
    )
    return slurm


def _until(predicate, timeout: float, what: str, net: Network) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"Slurm: not in {timeout} s: {what}\n{net.log_tail()}")
        time.sleep(0.2)
