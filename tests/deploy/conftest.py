"""The deploy tests reuse the simulated hosts of ``tests/hosts``."""

from ..hosts.conftest import make_cluster, pytest_configure

__all__ = ["make_cluster", "pytest_configure"]
