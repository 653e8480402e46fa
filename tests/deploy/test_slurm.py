"""``deploy/slurm/runtime.sbatch`` on a real Slurm cluster (slurmctld, slurmd and munge on
simulated hosts): the head on the first node, nodes on every node, the driver joins, and
everything is gone when the job ends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from ..hosts.harness import REPO, TOKEN_PATH, Cluster, Unavailable, make_network
from .kube import DEPLOY
from .slurm import require_tools, start_slurm

SBATCH = DEPLOY / "slurm" / "runtime.sbatch"


def test_the_sbatch_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck is not installed (pip install -e .[deploy])")

    out = subprocess.run(
        [shellcheck, str(SBATCH)], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout


@pytest.fixture
def slurm(tmp_path):
    """Slurm on three simulated hosts (controller h0, compute h1 and h2), and a folder all of
    them see (under /var/tmp: each host's /tmp is its own) for the job's files."""
    try:
        require_tools()
        net = make_network(3, tmp_path)
    except Unavailable as exc:
        pytest.skip(str(exc))
    shared = Path(tempfile.mkdtemp(prefix="runtime-slurm-", dir="/var/tmp"))
    try:
        yield start_slurm(net, shared)
    finally:
        net.close()
        shutil.rmtree(shared, ignore_errors=True)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(text in part for part in proc.info["cmdline"] or []):
            found.append(proc.info["pid"])
    return found


@pytest.mark.hosts
@pytest.mark.timeout(150)
def test_an_sbatch_job_runs_a_cluster_over_its_nodes_and_leaves_nothing_behind(slurm):
    _, h1, _ = slurm.net.hosts
    job_dir = slurm.shared / "job"
    program = [sys.executable, "-m", "tests.hosts.programs", "members", "-",
               json.dumps({"nodes": 4})]  # fmt: skip
    code, output = slurm.run_job(
        "--nodes=2", "--cpus-per-task=2", f"--chdir={REPO}",
        f"--export=ALL,RUNTIME_PYTHON={sys.executable},RUNTIME_JOB_DIR={job_dir},"
        "RUNTIME_START_TIMEOUT=60",
        str(SBATCH), *program,
    )  # fmt: skip
    assert code == 0, f"{output}\n{slurm.net.log_tail()}"
    result = json.loads(next(x for x in output.splitlines() if x.startswith("RESULT "))[7:])
    assert result == {"hosts": ["h1", "h1", "h2", "h2"], "head": [h1.ip]}
    assert "runtime cluster up at 10.77.0.2:6380: 2 host(s) x 2 node process(es)" in output
    # The job's end ended the cluster: its private folder (and token) is gone, and no
    # process that used it is left on any host (bounded: Slurm reaps the steps).
    assert not job_dir.exists()
    deadline = time.monotonic() + 30
    while _processes_mentioning(str(job_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(job_dir)) == []
    assert slurm.command("squeue", "-h").stdout.strip() == ""


@pytest.mark.hosts
@pytest.mark.timeout(150)
def test_a_failing_driver_fails_the_job_and_the_cluster_still_goes(slurm):
    job_dir = slurm.shared / "job"
    code, output = slurm.run_job(
        "--nodes=2", "--cpus-per-task=1", f"--chdir={REPO}",
        f"--export=ALL,RUNTIME_PYTHON={sys.executable},RUNTIME_JOB_DIR={job_dir}",
        str(SBATCH), "sh", "-c", "echo driver ran; exit 3",
    )  # fmt: skip
    assert code == 3, output
    assert "runtime cluster up at" in output and "driver ran" in output
    assert not job_dir.exists()
    deadline = time.monotonic() + 30
    while _processes_mentioning(str(job_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(job_dir)) == []


@pytest.mark.hosts
@pytest.mark.timeout(240)
def test_the_autoscaler_submits_a_slurm_job_for_pending_demand_and_cancels_it_when_idle(
    tmp_path,
):
    try:
        require_tools()
        # Placement groups wait for the autoscaler's job (not the default 5 s).
        net = make_network(3, tmp_path, env={"RUNTIME_PG_INFEASIBLE_S": "150"})
    except Unavailable as exc:
        pytest.skip(str(exc))
    shared = Path(tempfile.mkdtemp(prefix="runtime-slurm-", dir="/var/tmp"))
    try:
        slurm = start_slurm(net, shared)
        token = os.urandom(32)
        (shared / "token").write_text(token.hex())
        (shared / "token").chmod(0o600)
        h0 = net.hosts[0]
        h0.run("sh", "-c", f"umask 077 && cat > {TOKEN_PATH}", input=token.hex().encode())
        cluster = Cluster(net, token)
        cluster.start_head()  # on h0, the controller's host: the jobs run on h1 and h2
        out = cluster.drive(
            h0, "autoscale_slurm", timeout=200, address=cluster.address,
            token_file=str(shared / "token"), slurm_conf=slurm.env["SLURM_CONF"], repo=str(REPO),
        )  # fmt: skip
        assert out["jobs"] == 1
        assert out["ran_on"] in ("h1", "h2")
        assert out["errors"] == []
        assert slurm.command("squeue", "-h").stdout.strip() == ""
    finally:
        net.close()
        shutil.rmtree(shared, ignore_errors=True)
