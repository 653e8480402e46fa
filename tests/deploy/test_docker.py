"""``deploy/docker/Dockerfile``: lints clean with hadolint, builds in two stages, runs as a
user. (No image is built here: that needs a Docker daemon and a registry of base images.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .kube import DEPLOY

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (pip install -e .[deploy])")
    return found


def test_the_dockerfile_passes_hadolint():
    out = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_fails_a_dockerfile_with_a_known_mistake(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("WORKDIR /src", "RUN cd /src"))
    out = subprocess.run(
        [_hadolint(), str(bad)], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0 and "DL3003" in out.stdout  # use WORKDIR, not cd


def test_the_image_is_built_in_two_stages_and_runs_the_node_as_a_user():
    lines = [line.split() for line in DOCKERFILE.read_text().splitlines() if line.strip()]
    instructions = [w for w in lines if w[0].isupper()]
    stages = [w for w in instructions if w[0] == "FROM"]
    assert len(stages) == 2 and stages[0][-1] == "build"
    user = [w for w in instructions if w[0] == "USER"]
    assert user and user[-1][1].split(":")[0] not in ("0", "root")
    assert ["ENTRYPOINT", '["python",', '"-m",', '"runtime.node"]'] in instructions
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore and "!src/" in ignore  # the context holds only what is installed
