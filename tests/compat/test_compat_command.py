"""`python -m runtime.compat SCRIPT` runs unmodified Ray programs on runtime."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# A helper module next to the script: its function is pickled by reference, so the node
# that runs it must import this module, and with it `ray`.
HELPER = """
import ray

@ray.remote
def double(x):
    return 2 * x
"""

SCRIPT = """
import sys
import ray
import ray.exceptions
from ray.util.placement_group import placement_group
from ray.util.queue import Queue
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from helper import double

ray.init(num_cpus=2)
print("argv", sys.argv[1:])
print("double", ray.get(double.remote(21)))

@ray.remote
def fails():
    raise ValueError("boom")

try:
    ray.get(fails.remote())
except ray.exceptions.RayTaskError as err:
    print("caught RayTaskError", isinstance(err, ValueError))

pg = placement_group([{"CPU": 1}])
ray.get(pg.ready(), timeout=30)
ref = double.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote(5)
print("in group", ray.get(ref))

q = Queue()
q.put("item")
print("queue", q.get(timeout=10))

@ray.remote
class Dies:
    def bye(self):
        ray.actor.exit_actor()

import ray.actor
d = Dies.remote()
try:
    ray.get(d.bye.remote(), timeout=30)
except ray.exceptions.RayActorError:
    print("caught RayActorError")
ray.shutdown()
"""


def compat(
    script: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"RAY_ADDRESS", "RUNTIME_COMPAT"}}
    base["PYTHONPATH"] = str(SRC)
    return subprocess.run(
        [sys.executable, "-m", "runtime.compat", str(script), *args],
        env={**base, **(env or {})},
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


@pytest.mark.timeout(120)
def test_a_ray_program_and_its_own_module_run_unchanged(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text(textwrap.dedent(HELPER))
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = compat(script, "--flag", "x")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "argv ['--flag', 'x']",
        "double 42",
        "caught RayTaskError True",
        "in group 10",
        "queue item",
        "caught RayActorError",
    ]


def test_a_module_runtime_lacks_fails_at_import_naming_both(tmp_path: Path) -> None:
    script = tmp_path / "program.py"
    script.write_text("import ray.workflow\n")
    out = compat(script)
    assert out.returncode == 1
    assert (
        "ModuleNotFoundError: No module named 'ray.workflow': runtime.compat runs this "
        "program on runtime, which has no 'runtime.workflow'"
    ) in out.stderr


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"RUNTIME_COMPAT": "0"}, "RUNTIME_COMPAT=0 asks for the real ray"),
        ({"RAY_ADDRESS": "10.0.0.1:6379"}, "RAY_ADDRESS=10.0.0.1:6379 points the program"),
    ],
)
def test_it_refuses_when_the_real_ray_is_wanted(
    tmp_path: Path, env: dict[str, str], why: str
) -> None:
    script = tmp_path / "program.py"
    script.write_text("print('ran')\n")
    out = compat(script, env=env)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.startswith(f"runtime.compat: refused: {why}")


def test_a_missing_script_is_a_clear_error(tmp_path: Path) -> None:
    out = compat(tmp_path / "nope.py")
    assert out.returncode == 2
    assert "no such script" in out.stderr


def test_the_hook_is_only_in_the_compat_process() -> None:
    code = (
        "import sys, runtime, runtime.compat; "
        "print('ray' in sys.modules, [f for f in sys.meta_path if 'Alias' in type(f).__name__])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "False []"
