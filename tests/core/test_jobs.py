"""Jobs: ``python -m runtime job ...`` against a real head (plus a node) in their own processes.

Every step goes through the command line, as a user would: the job's driver runs on the
head, joins the cluster through ``RUNTIME_ADDRESS`` and its token file, and its output is
captured in the head's state directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import HeadProcess, start_head, stop_process, until

pytestmark = pytest.mark.timeout(90)


def _cli(
    head: HeadProcess, *args: str, token_file: str | None = None
) -> subprocess.CompletedProcess[str]:
    token_file = token_file or os.path.join(head.state_dir, "token")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "--address",
            head.address,
            "--token-file",
            token_file,
            *args,
        ],
        env=head.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _wait_for_nodes(head: HeadProcess, n: int) -> None:
    def joined() -> bool:
        out = _cli(head, "--json", "list", "nodes")
        nodes = json.loads(out.stdout) if out.returncode == 0 else []
        return sum(1 for x in nodes if not x["is_driver"]) >= n

    until(joined, 30, why=lambda: f"{n} nodes did not join\n{head.log()}")


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    """A head (1 CPU) and one more node, shared by this module's tests."""
    h = start_head(tmp_path_factory.mktemp("jobs"))
    node = h.start_node("--num-cpus", "1")
    try:
        _wait_for_nodes(h, 2)
        yield h
    finally:
        stop_process(node)
        stop_process(h.proc)


def _status(head: HeadProcess, job_id: str) -> dict[str, object]:
    out = _cli(head, "--json", "job", "status", job_id)
    assert out.returncode == 0, out.stderr
    status: dict[str, object] = json.loads(out.stdout)
    return status


def _submit_no_wait(head: HeadProcess, *args: str) -> str:
    out = _cli(head, "job", "submit", "--no-wait", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _wait_for_line(path: str, prefix: str) -> str:
    """The first line of the job's log file starting with ``prefix`` (the driver prints it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(path) if os.path.exists(path) else open(os.devnull) as f:
            for line in f:
                if line.startswith(prefix):
                    return line
        time.sleep(0.05)  # the driver is another process: nothing here to await
    raise AssertionError(f"no line {prefix!r} in {path}")


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (absent, or a zombie waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 15
    while not _gone(pid):
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        time.sleep(0.05)


def test_submit_runs_a_script_from_its_working_dir(head: HeadProcess, tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "helper.py").write_text(
        'GREETING = "hello from helper"\n\ndef half(x):\n    return x // 2\n'
    )
    (wd / "main.py").write_text(
        textwrap.dedent(
            """
            import os
            import runtime
            from helper import GREETING, half

            runtime.init()  # no address: RUNTIME_ADDRESS, set by the job manager

            @runtime.remote
            def double(x):
                return 2 * half(2 * x)  # helper, pickled by reference: the node needs the dir

            print(GREETING, runtime.get(double.remote(21)), len(runtime.nodes()), flush=True)
            print("job id", os.environ["RUNTIME_JOB_SUBMISSION_ID"], flush=True)
            runtime.shutdown()
            """
        )
    )
    out = _cli(head, "job", "submit", "--working-dir", str(wd), "--", "python", "main.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "hello from helper 42" in out.stdout  # streamed while waiting
    assert "SUCCEEDED" in out.stderr
    job_id = out.stdout.split("job id ", 1)[1].split()[0]
    status = _status(head, job_id)
    assert status["status"] == "SUCCEEDED" and status["exit_code"] == 0
    assert status["entrypoint"] == "python main.py"
    # the manager runs on the head: the log sits in the head's state directory
    log_path = str(status["log_path"])
    assert log_path.startswith(os.path.join(head.state_dir, "jobs", job_id))
    logs = _cli(head, "job", "logs", job_id)
    assert logs.returncode == 0 and "hello from helper 42" in logs.stdout
    # the same directory again: the cached package is used, and the job still sees it
    again = _cli(head, "job", "submit", "--working-dir", str(wd), "--", "python main.py")
    assert again.returncode == 0 and "hello from helper 42" in again.stdout, again.stderr
    pkg_dirs = os.listdir(os.path.join(head.state_dir, "jobs", "_packages"))
    assert status["working_dir_hash"] in pkg_dirs


def test_failing_script_is_failed_with_its_exit_code(head: HeadProcess) -> None:
    code = "import sys; print('about to fail', flush=True); sys.exit(3)"
    out = _cli(head, "job", "submit", "--job-id", "failing-1", "--", "python", "-c", code)
    assert out.returncode == 3, out.stderr
    assert "about to fail" in out.stdout
    status = _status(head, "failing-1")
    assert status["status"] == "FAILED" and status["exit_code"] == 3
    assert "exited with code 3" in str(status["message"])
    listed = _cli(head, "--json", "job", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {r["job_id"]: r for r in json.loads(listed.stdout)}
    assert rows["failing-1"]["status"] == "FAILED"
    table = _cli(head, "job", "list")
    assert "failing-1" in table.stdout and "FAILED" in table.stdout
    # ids are unique
    dup = _cli(head, "job", "submit", "--job-id", "failing-1", "--", "true")
    assert dup.returncode == 2 and "exists already" in dup.stderr


def test_stop_kills_the_job_and_its_processes(head: HeadProcess) -> None:
    code = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(300)"
    job_id = _submit_no_wait(head, "--", "python", "-c", code)
    log_path = os.path.join(head.state_dir, "jobs", job_id, "driver.log")
    pid = int(_wait_for_line(log_path, "pid ").split()[1])
    assert _status(head, job_id)["status"] == "RUNNING"
    out = _cli(head, "job", "stop", job_id)
    assert out.returncode == 0, out.stderr
    assert "STOPPED" in out.stdout
    status = _status(head, job_id)
    assert status["status"] == "STOPPED" and status["end_time"] is not None
    _wait_gone(pid)
    follow = _cli(head, "job", "logs", "--follow", job_id)  # ends: the job has
    assert follow.returncode == 0 and f"pid {pid}" in follow.stdout
    again = _cli(head, "job", "stop", job_id)
    assert again.returncode == 0 and "already ended" in again.stdout


def test_stop_escalates_to_sigkill(head: HeadProcess) -> None:
    code = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('pid', os.getpid(), flush=True); time.sleep(300)"
    )
    job_id = _submit_no_wait(head, "--", "python", "-c", code)
    pid = int(
        _wait_for_line(os.path.join(head.state_dir, "jobs", job_id, "driver.log"), "pid ")[4:]
    )
    out = _cli(head, "job", "stop", job_id)
    assert out.returncode == 0 and "STOPPED" in out.stdout, out.stdout + out.stderr
    _wait_gone(pid)


def test_init_honours_runtime_address(head: HeadProcess) -> None:
    # RUNTIME_ADDRESS makes init() join: asking for a local mesh's CPUs is then an error
    code = "import runtime; runtime.init(num_cpus=2)"
    out = _cli(head, "job", "submit", "--", "python", "-c", code)
    assert out.returncode == 1
    assert "RUNTIME_ADDRESS" in out.stdout and "num_cpus" in out.stdout


def test_bad_input_is_refused_before_connecting(head: HeadProcess, tmp_path: Path) -> None:
    no_cmd = _cli(head, "job", "submit", "--")
    assert no_cmd.returncode == 2 and "needs a command" in no_cmd.stderr
    missing = _cli(head, "job", "submit", "--working-dir", str(tmp_path / "nope"), "--", "true")
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    bad_id = _cli(head, "job", "submit", "--job-id", "../x", "--", "true")
    assert bad_id.returncode == 2 and "job id" in bad_id.stderr
    unknown = _cli(head, "job", "status", "no-such-job")
    assert unknown.returncode == 2 and "no job 'no-such-job'" in unknown.stderr


def test_wrong_token_is_an_authentication_error(head: HeadProcess, tmp_path: Path) -> None:
    bad = tmp_path / "token"
    bad.write_text("00" * 32)
    out = _cli(head, "job", "list", token_file=str(bad))
    assert out.returncode == 2
    assert "authentication failed" in out.stderr
    # the options also work after the sub-command, as `ray job submit --address ...`
    cmd = [sys.executable, "-m", "runtime", "job", "submit", "--address", head.address]
    late = subprocess.run(
        [*cmd, "--token-file", str(bad), "--", "true"],
        env=head.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert late.returncode == 2 and "authentication failed" in late.stderr


@pytest.mark.timeout(60)
def test_job_dies_with_its_head(tmp_path: Path) -> None:
    h = start_head(tmp_path)
    try:
        code = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(300)"
        job_id = _submit_no_wait(h, "--", "python", "-c", code)
        pid = int(
            _wait_for_line(os.path.join(h.state_dir, "jobs", job_id, "driver.log"), "pid ")[4:]
        )
        h.proc.send_signal(signal.SIGKILL)
        h.proc.wait(10)
        _wait_gone(pid)
    finally:
        stop_process(h.proc)
