"""Train tests run on real local meshes; the ``gpu`` marker names tests that need CUDA."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped where there is none)")


@pytest.fixture
def out(tmp_path: object) -> str:
    import os

    path = os.path.join(str(tmp_path), "out")
    os.makedirs(path)
    return path
