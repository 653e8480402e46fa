"""The base of every wire message (see protocol.py, which gathers them into one union)."""

from __future__ import annotations

import msgspec


class _Msg(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=False):
    """Base of every message."""
