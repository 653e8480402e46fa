"""A ref pickled by user code (out of band) pins its object until freed, as in Ray."""

from __future__ import annotations

import copy
import gc
import pickle
from types import SimpleNamespace

import pytest

from runtime.core.objects import refs as _refs
from runtime.core.objects.refs import ObjectRef, OwnedObject, ReferenceTable
from runtime.core.wire.protocol import Value

ME = "owner-node"
ME_ADDRESS = "127.0.0.1:7000"
PEER = "peer-node"
PEER_ADDRESS = "127.0.0.1:7001"


def _table(monkeypatch: pytest.MonkeyPatch, self_id: str = ME) -> ReferenceTable:
    table = ReferenceTable(self_id, lambda: None)
    monkeypatch.setattr(_refs, "_worker", SimpleNamespace(refs=table))
    return table


def _own(table: ReferenceTable, oid: bytes) -> None:
    entry = OwnedObject()
    entry.state = _refs.READY
    entry.value = Value(0, b"\x01")
    table.owned[oid] = entry


def test_an_object_pickled_by_user_code_outlives_its_last_ref_until_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = _table(monkeypatch)
    _own(table, b"o1")
    ref = ObjectRef(b"o1", ME, ME_ADDRESS)
    blob = pickle.dumps(ref)
    pickle.dumps(ref)  # pinned once, however often it is pickled
    del ref
    gc.collect()
    assert b"o1" in table.owned
    assert table.owned[b"o1"].remote == 1
    assert pickle.loads(blob).id == b"o1"
    gc.collect()
    assert table.release_out_of_band(b"o1") is True
    assert b"o1" not in table.owned
    assert table.release_out_of_band(b"o1") is False


def test_a_borrowed_ref_pickled_by_user_code_asks_its_owner_to_hold_the_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = _table(monkeypatch, PEER)
    ref = ObjectRef(b"o1", ME, ME_ADDRESS)
    pickle.dumps(ref)
    del ref
    gc.collect()
    outbox, _ = table.take()
    assert outbox == {ME: (ME_ADDRESS, [(b"o1", 1), (b"o1", 1), (b"o1", -1)])}
    table.release_out_of_band(b"o1")
    assert table.take()[0] == {ME: (ME_ADDRESS, [(b"o1", -1)])}


def test_copying_a_ref_is_the_same_ref_and_pins_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    table = _table(monkeypatch)
    _own(table, b"o1")
    ref = ObjectRef(b"o1", ME, ME_ADDRESS)
    assert copy.copy(ref) is ref
    assert copy.deepcopy({"r": [ref]})["r"][0] is ref
    assert table.out_of_band == {}
    del ref
    gc.collect()
    assert b"o1" not in table.owned
