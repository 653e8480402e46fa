"""Placement-group messages of the wire protocol (part of the union in protocol.py)."""

from __future__ import annotations

import msgspec

from .msgbase import _Msg


class PlacementGroupSpec(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    pg_id: bytes
    bundles: list[dict[str, float]]
    strategy: str
    owner_id: str
    name: str = ""
    namespace: str = ""
    detached: bool = False


class CreatePlacementGroup(_Msg, tag=60):
    rid: int
    spec: PlacementGroupSpec


class WaitPlacementGroup(_Msg, tag=61):
    """Answered once the group is placed: its bundles' node ids (error if it never will be)."""

    rid: int
    pg_id: bytes = b""
    name: str = ""
    namespace: str = ""


class RemovePlacementGroup(_Msg, tag=62):
    rid: int
    pg_id: bytes


class ReserveBundles(_Msg, tag=63):
    """Head to node: set aside these bundles' resources (all or none)."""

    rid: int
    pg_id: bytes
    bundles: list[tuple[int, dict[str, float]]]


class ReleaseBundles(_Msg, tag=64):
    """Head to node: free the group's bundles (``indices``; all when empty) and stop what
    runs in them."""

    rid: int
    pg_id: bytes
    indices: list[int] = []
