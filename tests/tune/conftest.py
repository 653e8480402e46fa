"""Tune tests share one module-scoped local mesh (the ``cluster`` fixture: 2 one-CPU nodes,
2 units of a ``custom`` resource on one of them) and write experiments under tmp_path."""

from __future__ import annotations

import pytest


@pytest.fixture
def storage(tmp_path: object) -> str:
    """A fresh storage_path for one test's experiments."""
    return str(tmp_path)
