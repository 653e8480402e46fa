"""The dashboard's credential, and loading the dashboard (``--dashboard-port``).

The dashboard itself is the package ``runtime.dashboard`` (aiohttp, the ``dashboard`` extra), a
tool over the core: the node loads it by name (:func:`load`) only when asked for one, so
neither ``import runtime`` nor a node without a dashboard imports aiohttp or
``prometheus_client``, and core does not depend on it.

Security is on, as everywhere else: every request needs a credential, as ``?token=HEX`` or
``Authorization: Bearer HEX``. The URL the head prints carries the dashboard's own read-only
credential (:func:`read_only_credential`, an HMAC of the cluster token), never the cluster token
itself: the mesh does not accept it, so a leaked dashboard URL cannot submit work. The cluster
token is accepted too (its holders are trusted anyway). The dashboard listens on the head's
``--host`` (loopback by default).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..process.worker import Worker

_READ_ONLY_LABEL: Final = b"runtime dashboard read-only credential v1"
#: What to install when the dashboard's libraries are missing.
EXTRA_HINT: Final = "pip install 'runtime[dashboard]' (aiohttp and prometheus_client)"


def read_only_credential(token: bytes) -> str:
    """The dashboard's credential (hex) for the cluster ``token``: good for reading the
    dashboard only; the mesh's handshake does not accept it."""
    return hmac.new(token, _READ_ONLY_LABEL, hashlib.sha256).hexdigest()


def load(worker: Worker, token: bytes) -> Any:
    """A ``runtime.dashboard.Dashboard`` for the head ``worker`` (not started). Raises
    ``ImportError`` with the extra to install when aiohttp or prometheus_client is missing."""
    try:
        module = importlib.import_module("runtime.dashboard")
    except ImportError as exc:
        raise ImportError(f"the dashboard needs {EXTRA_HINT}: {exc}") from exc
    return module.Dashboard(worker, token)


__all__ = ["EXTRA_HINT", "load", "read_only_credential"]
