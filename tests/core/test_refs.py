"""The reference table, fed events directly: when an owner frees, what a borrower tells."""

from __future__ import annotations

import asyncio
import gc
import threading
from types import SimpleNamespace

import pytest

from runtime.core.objects import refs as _refs
from runtime.core.objects.refs import (
    PENDING,
    READY,
    ObjectRef,
    OwnedObject,
    ReferenceTable,
    return_id,
)
from runtime.core.wire.protocol import Located, Value

ME = "owner-node"
ME_ADDRESS = "127.0.0.1:7000"
PEER = "peer-node"
PEER_ADDRESS = "127.0.0.1:7001"
OTHER = "other-node"
OTHER_ADDRESS = "127.0.0.1:7002"


class Table(ReferenceTable):
    """A table that counts how often it asked the loop to wake up."""

    def __init__(self, self_id: str = ME) -> None:
        self.wakes = 0
        super().__init__(self_id, self._count_wake)

    def _count_wake(self) -> None:
        self.wakes += 1


def owned(
    table: ReferenceTable,
    oid: bytes,
    *,
    location: bool = False,
    refs: list[tuple[bytes, str, str]] | None = None,
    state: int = READY,
) -> OwnedObject:
    """Register an object ``table`` owns, as the worker does when it creates one."""
    entry = OwnedObject()
    entry.state = state
    if location:
        entry.location = Located(PEER, PEER_ADDRESS, 10 << 20)
    else:
        entry.value = Value(0, b"\x01", refs=refs or [])
    table.owned[oid] = entry
    return entry


# --- owner side -------------------------------------------------------------------------------


def test_an_owned_object_lives_while_a_local_ref_does() -> None:
    table = Table()
    owned(table, b"o1", location=True)
    table.add_local(b"o1", ME, ME_ADDRESS)
    table.add_local(b"o1", ME, ME_ADDRESS)
    table.remove_local(b"o1")
    assert b"o1" in table.owned
    assert table.local == {b"o1": 1}
    assert table.take() == ({}, [])


def test_the_owner_frees_a_stored_object_when_its_last_local_ref_goes() -> None:
    table = Table()
    entry = owned(table, b"o1", location=True)
    table.add_local(b"o1", ME, ME_ADDRESS)
    table.remove_local(b"o1")
    assert b"o1" not in table.owned
    assert table.local == {}
    outbox, freed = table.take()
    assert outbox == {}  # an owner tells nobody about its own refs
    assert freed == [(b"o1", entry)]
    assert table.wakes == 1
    assert table.take() == ({}, [])  # handed over once


def test_a_freed_value_that_holds_refs_is_handed_to_the_loop_to_release_them() -> None:
    table = Table()
    nested = [(b"inner", PEER, PEER_ADDRESS)]
    entry = owned(table, b"o1", refs=nested)
    table.add_local(b"o1", ME, ME_ADDRESS)
    table.remove_local(b"o1")
    assert table.take() == ({}, [(b"o1", entry)])


def test_a_freed_inline_value_without_refs_needs_nothing_from_the_loop() -> None:
    table = Table()
    owned(table, b"o1")
    table.add_local(b"o1", ME, ME_ADDRESS)
    table.remove_local(b"o1")
    assert b"o1" not in table.owned
    assert table.take() == ({}, [])
    assert table.wakes == 0


def test_a_pending_object_nobody_refers_to_is_forgotten_without_a_free() -> None:
    table = Table()
    owned(table, b"o1", location=True, state=PENDING)
    table.add_local(b"o1", ME, ME_ADDRESS)
    table.remove_local(b"o1")
    assert b"o1" not in table.owned
    assert table.take() == ({}, [])


def test_removing_a_ref_of_an_unknown_object_is_harmless() -> None:
    table = Table()
    table.add_local(b"gone", ME, ME_ADDRESS)
    table.remove_local(b"gone")
    assert table.local == {}
    assert table.take() == ({}, [])


# --- pins -------------------------------------------------------------------------------------


def test_a_pin_keeps_an_owned_object_alive_after_its_local_refs_are_gone() -> None:
    table = Table()
    entry = owned(table, b"o1", location=True)
    ref = (b"o1", ME, ME_ADDRESS)
    table.add_local(b"o1", ME, ME_ADDRESS)
    table.pin([ref])  # e.g. the ref was serialized into a task's arguments
    table.remove_local(b"o1")
    assert table.owned[b"o1"].remote == 1
    assert table.take() == ({}, [])
    table.unpin([ref])
    assert b"o1" not in table.owned
    assert table.take() == ({}, [(b"o1", entry)])


def test_every_pin_must_be_released() -> None:
    table = Table()
    owned(table, b"o1", location=True)
    ref = (b"o1", ME, ME_ADDRESS)
    table.pin([ref, ref])
    table.unpin([ref])
    assert b"o1" in table.owned
    table.unpin([ref])
    assert b"o1" not in table.owned


def test_pinning_a_foreign_ref_asks_its_owner_to_hold_it() -> None:
    table = Table()
    refs = [(b"p1", PEER, PEER_ADDRESS), (b"q1", OTHER, OTHER_ADDRESS), (b"p2", PEER, PEER_ADDRESS)]
    table.pin(refs)
    table.unpin(refs[:1])
    outbox, _ = table.take()
    assert outbox == {
        PEER: (PEER_ADDRESS, [(b"p1", 1), (b"p2", 1), (b"p1", -1)]),
        OTHER: (OTHER_ADDRESS, [(b"q1", 1)]),
    }


# --- remote holders (deltas from peers) -------------------------------------------------------


def test_a_remote_borrower_keeps_an_owned_object_alive_until_it_lets_go() -> None:
    table = Table()
    entry = owned(table, b"o1", location=True)
    table.add_local(b"o1", ME, ME_ADDRESS)
    table.apply_delta(b"o1", 1)  # a peer now holds a ref too
    table.remove_local(b"o1")
    assert b"o1" in table.owned
    table.apply_delta(b"o1", 1)
    table.apply_delta(b"o1", -1)
    assert b"o1" in table.owned
    table.apply_delta(b"o1", -1)
    assert b"o1" not in table.owned
    assert table.take() == ({}, [(b"o1", entry)])


def test_a_remote_release_does_not_free_what_a_local_ref_still_holds() -> None:
    table = Table()
    owned(table, b"o1", location=True)
    table.add_local(b"o1", ME, ME_ADDRESS)
    table.apply_delta(b"o1", 1)
    table.apply_delta(b"o1", -1)
    assert b"o1" in table.owned
    assert table.owned[b"o1"].remote == 0


def test_a_release_that_overtakes_its_hold_waits_for_it() -> None:
    """Deltas come on different connections (a pin from the node that ran a task, its release
    by this owner), so a -1 can land before its +1: the count dips below zero, the object is
    not freed meanwhile, and it is freed once the +1 lands and nothing else holds it."""
    table = Table()
    entry = owned(table, b"o1", location=True)
    table.add_local(b"o1", ME, ME_ADDRESS)
    table.apply_delta(b"o1", -1)  # the release, early
    assert table.owned[b"o1"].remote == -1
    table.remove_local(b"o1")
    assert b"o1" in table.owned  # a holder is still on its way
    table.apply_delta(b"o1", 1)  # the hold it released
    assert b"o1" not in table.owned
    assert table.take() == ({}, [(b"o1", entry)])


def test_a_delta_for_an_object_already_freed_is_ignored() -> None:
    table = Table()
    table.apply_delta(b"unknown", 1)
    table.apply_delta(b"unknown", -1)
    assert table.owned == {}
    assert table.take() == ({}, [])


# --- borrower side ----------------------------------------------------------------------------


def test_a_borrower_tells_the_owner_once_when_its_first_ref_appears_and_its_last_goes() -> None:
    table = Table(PEER)
    for _ in range(3):
        table.add_local(b"o1", ME, ME_ADDRESS)
    assert table.borrowed == {b"o1": (ME, ME_ADDRESS)}
    assert table.take() == ({ME: (ME_ADDRESS, [(b"o1", 1)])}, [])
    table.remove_local(b"o1")
    table.remove_local(b"o1")
    assert table.take() == ({}, [])
    table.remove_local(b"o1")
    assert table.borrowed == {}
    assert table.local == {}
    assert table.take() == ({ME: (ME_ADDRESS, [(b"o1", -1)])}, [])


def test_a_borrower_queues_its_deltas_in_order_per_owner() -> None:
    table = Table(PEER)
    table.add_local(b"a", ME, ME_ADDRESS)
    table.add_local(b"x", OTHER, OTHER_ADDRESS)
    table.remove_local(b"a")
    table.add_local(b"a", ME, ME_ADDRESS)
    outbox, freed = table.take()
    assert outbox == {
        ME: (ME_ADDRESS, [(b"a", 1), (b"a", -1), (b"a", 1)]),
        OTHER: (OTHER_ADDRESS, [(b"x", 1)]),
    }
    assert freed == []
    assert table.wakes == 4  # every queued message wakes the loop (it coalesces)


def test_a_borrower_never_frees_what_it_does_not_own() -> None:
    table = Table(PEER)
    table.add_local(b"o1", ME, ME_ADDRESS)
    table.remove_local(b"o1")
    _, freed = table.take()
    assert freed == []


def test_concurrent_ref_churn_from_many_threads_balances_out() -> None:
    """``__del__`` runs on any thread; the lock keeps the counts and deltas exact."""
    table = Table(PEER)
    start = threading.Barrier(8)

    def churn() -> None:
        start.wait()
        for _ in range(2000):
            table.add_local(b"o1", ME, ME_ADDRESS)
            table.remove_local(b"o1")

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert table.local == {}
    assert table.borrowed == {}
    outbox, _ = table.take()
    deltas = [delta for _, delta in outbox[ME][1]]
    assert sum(deltas) == 0
    running = 0
    for delta in deltas:  # +1 and -1 alternate: the owner never sees a count below 0 or above 1
        running += delta
        assert running in (0, 1)


# --- ObjectRef instances ----------------------------------------------------------------------


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Table:
    """A table installed as the process's worker table, as runtime.init() would."""
    table = Table(PEER)
    monkeypatch.setattr(_refs, "_worker", SimpleNamespace(refs=table))
    return table


def test_object_ref_instances_are_counted_while_they_live(table: Table) -> None:
    first = ObjectRef(b"o1", ME, ME_ADDRESS)
    copy = ObjectRef(b"o1", ME, ME_ADDRESS)
    assert table.local == {b"o1": 2}
    del first
    gc.collect()
    assert table.local == {b"o1": 1}
    del copy
    gc.collect()
    assert table.local == {}
    assert table.take() == ({ME: (ME_ADDRESS, [(b"o1", 1), (b"o1", -1)])}, [])


def test_a_ref_that_outlives_its_runtime_touches_no_later_table(
    table: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = ObjectRef(b"o1", ME, ME_ADDRESS)
    later = Table(PEER)
    monkeypatch.setattr(_refs, "_worker", SimpleNamespace(refs=later))  # a new runtime.init()
    del ref
    gc.collect()
    assert later.local == {}
    assert later.take() == ({}, [])


def test_object_refs_compare_and_hash_by_id(table: Table) -> None:
    a = ObjectRef(b"\x01\x02", ME, ME_ADDRESS)
    b = ObjectRef(b"\x01\x02", OTHER, OTHER_ADDRESS)
    assert a == b
    assert hash(a) == hash(b)
    assert a != ObjectRef(b"\x01\x03", ME, ME_ADDRESS)
    assert a.hex() == "0102"
    assert repr(a) == "ObjectRef(0102)"


def test_return_ids_are_the_task_id_and_the_index() -> None:
    assert return_id(b"task", 0) == b"task\x00\x00\x00\x00"
    assert return_id(b"task", 1) != return_id(b"task", 0)
    assert return_id(b"task", 258).endswith(b"\x00\x00\x01\x02")


def _resolve(entry: OwnedObject) -> None:
    """As the loop does: the state first, then the waiters it finds (taken under the lock)."""
    entry.state = READY
    waiters, entry.waiters = entry.waiters, None
    for wake in waiters or ():
        wake()


def test_a_blocked_get_of_many_watches_one_pending_object_at_a_time() -> None:
    async def main() -> None:
        table = ReferenceTable(ME, lambda: None)
        entries = [OwnedObject() for _ in range(5)]
        entries[0].state = READY
        waiter = _refs.AllReady(table, asyncio.get_running_loop(), entries)
        with table.lock:
            assert not waiter.watch()
        assert [bool(e.waiters) for e in entries] == [False, True, False, False, False]
        for i in (3, 2, 1):  # answered out of order, in one pass
            _resolve(entries[i])
        await asyncio.sleep(0)  # the end of the pass: it looks past them once
        assert [bool(e.waiters) for e in entries] == [False, False, False, False, True]
        assert waiter.ready.locked()
        _resolve(entries[4])
        await asyncio.sleep(0)
        assert not waiter.ready.locked()  # all ready: the blocked thread goes on

    asyncio.run(main())


def test_a_blocked_get_whose_objects_are_all_ready_does_not_wait() -> None:
    entries = [OwnedObject() for _ in range(3)]
    for e in entries:
        e.state = READY
    table = ReferenceTable(ME, lambda: None)
    waiter = _refs.AllReady(table, None, entries)  # type: ignore[arg-type]  # never wakes
    with table.lock:
        assert waiter.watch()
    assert all(e.waiters is None for e in entries)
