"""Jobs across simulated hosts: submitted from a host outside the cluster, shipped with their
working directory, run by the head's host, their tasks on the other hosts."""

from __future__ import annotations

import sys

import pytest

from .harness import TOKEN_PATH

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(120)]

JOB = """\
import socket
import time
import runtime

runtime.init()
deadline = time.monotonic() + 60  # the nodes may still be joining: wait for them (bounded)
while not {"h1", "h2"} <= set(runtime.cluster_resources()):
    assert time.monotonic() < deadline, runtime.cluster_resources()
    time.sleep(0.05)

@runtime.remote
def where():
    return socket.gethostname()

ran = [where.options(resources={h: 0.01}).remote() for h in ("h1", "h2")]
print("driver on", socket.gethostname(), "tasks on", runtime.get(ran))
print("shipped", open("data.txt").read().strip())
"""


def test_a_job_submitted_from_another_host_runs_its_tasks_across_hosts(make_cluster):
    cluster = make_cluster(4)
    _, h1, h2, h3 = cluster.hosts
    for host in (h1, h2):
        cluster.start_node(host, resources={host.name: 1})
    # The job's folder exists only on h3 (its private /tmp): it travels with the job.
    h3.run("sh", "-c", "mkdir -p /tmp/job && cat > /tmp/job/main.py", input=JOB.encode())
    h3.run("sh", "-c", "echo from-h3 > /tmp/job/data.txt")
    out = h3.run(
        sys.executable, "-m", "runtime", "--address", cluster.address,
        "--token-file", TOKEN_PATH, "job", "submit", "--working-dir", "/tmp/job",
        "--", "python", "main.py",
        timeout=90,
    )  # fmt: skip
    assert "driver on h0 tasks on ['h1', 'h2']" in out, out
    assert "shipped from-h3" in out
