"""The dashboard: a page, a JSON API and Prometheus metrics, served on the head
(``python -m runtime.node --head --dashboard-port N``).

A tool over the core (it reads the head's state and asks every member for its metrics), served
by aiohttp on the head's own loop; it needs the ``dashboard`` extra (``aiohttp`` and
``prometheus_client``), as Ray's needs ``ray[default]``. ``import runtime`` never imports it:
the node loads it by name when asked for a dashboard. See ``docs/observability.md``.
"""

from runtime.core.tools.dashboard import read_only_credential
from runtime.dashboard._prometheus import merge, render
from runtime.dashboard._server import Dashboard

__all__ = ["Dashboard", "merge", "read_only_credential", "render"]
