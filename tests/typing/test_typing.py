"""Typed handles: mypy, with the project's config and plugin, reports what samples.py says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = Path(__file__).with_name("samples.py")

_MARKER = re.compile(r"#\s*(?P<kind>[NE]): (?P<text>.+)$")
_REPORT = re.compile(r"^(?P<path>.+?):(?P<line>\d+): (?P<kind>note|error): (?P<text>.*)$")
_KINDS = {"N": "note", "E": "error"}

Report = tuple[int, str, str]  # line, "note" or "error", text


def expected_reports(path: Path) -> list[Report]:
    """The ``# N:`` and ``# E:`` comments of ``path`` (comments only, not docstrings)."""
    found = []
    with path.open(encoding="utf-8") as f:
        for tok in tokenize.generate_tokens(f.readline):
            if tok.type == tokenize.COMMENT and (m := _MARKER.match(tok.string)):
                found.append((tok.start[0], _KINDS[m["kind"]], m["text"].strip()))
    return found


def run_mypy(path: Path, cache_dir: Path) -> tuple[list[Report], list[str], str]:
    """Reports on ``path``, other errors, and the whole output of mypy on ``path``."""
    src = str(ROOT / "src")
    env = {
        **os.environ,
        # Check and load the plugin of this checkout, whatever the environment has installed.
        "MYPYPATH": src,
        "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
    }
    proc = subprocess.run(
        [
            sys.executable, "-m", "mypy",
            "--config-file", str(ROOT / "pyproject.toml"),
            "--follow-imports=silent",  # only the sample is under test, not the package
            "--cache-dir", str(cache_dir),
            "--no-error-summary", "--hide-error-context", "--no-pretty", "--no-color-output",
            "--show-error-codes",
            str(path.relative_to(ROOT)),
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1), f"mypy failed (exit {proc.returncode}):\n{output}"
    reports: list[Report] = []
    others: list[str] = []
    for line in proc.stdout.splitlines():
        m = _REPORT.match(line)
        if m and (ROOT / m["path"]).resolve() == path.resolve():
            reports.append((int(m["line"]), m["kind"], m["text"].strip()))
        elif m and m["kind"] == "error":
            others.append(line)
    return reports, others, output


@pytest.mark.timeout(300)  # a cold mypy cache takes seconds; a loaded machine, longer
def test_mypy_reveals_the_types_and_errors_the_samples_expect(tmp_path: Path) -> None:
    expected = expected_reports(SAMPLES)
    assert len(expected) > 40, "the markers of samples.py were not found"
    reports, others, output = run_mypy(SAMPLES, tmp_path / "mypy_cache")
    assert not others, output
    if sorted(reports) != sorted(expected):
        pytest.fail(_difference(expected, reports), pytrace=False)


def _difference(expected: list[Report], reports: list[Report]) -> str:
    name = SAMPLES.name
    lines = [f"mypy's reports on {name} differ from its markers"]
    for title, items in (
        ("expected, not reported:", sorted(set(expected) - set(reports))),
        ("reported, not expected:", sorted(set(reports) - set(expected))),
    ):
        lines += [title, *(f"  {name}:{line}: {kind}: {text}" for line, kind, text in items)]
    return "\n".join(lines)


def test_markers_are_read_from_comments_only(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""# N: not a marker"""\nx = 1  # E: an error\n# N: a note\n')
    assert expected_reports(sample) == [(2, "error", "an error"), (3, "note", "a note")]


@pytest.mark.timeout(60)
def test_importing_runtime_does_not_import_mypy() -> None:
    code = "import sys, runtime; sys.exit('mypy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
