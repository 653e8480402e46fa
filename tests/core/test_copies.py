"""The owner's directory of copies (objects.copies): which source a reader is sent to, on
the owner's loop with no I/O."""

from __future__ import annotations

import asyncio

from runtime.core.objects.copies import CopyDirectory
from runtime.core.wire import protocol as p

OID = b"o" * 16
SIZE = 1 << 20


def at(node: str, host: str) -> p.Located:
    return p.Located(node, f"{node}:1", SIZE, host, f"/dev/shm/{node}/obj")


PRIMARY = at("n1", "h1")


def directory(alive: set[str] | None = None) -> CopyDirectory:
    return CopyDirectory(asyncio.get_running_loop(), lambda n: alive is None or n in alive)


async def test_the_first_reader_is_sent_to_the_primary_and_a_reader_on_its_host_maps_it():
    d = directory()
    assert await d.source(OID, PRIMARY, "n2", "h2") == PRIMARY
    # While n2 streams from n1, a reader on n1's own host is not made to wait: it maps.
    assert await asyncio.wait_for(d.source(OID, PRIMARY, "n1b", "h1"), 1) == PRIMARY


async def test_a_reader_waits_for_a_busy_source_then_takes_the_copy_that_appeared():
    d = directory()
    assert await d.source(OID, PRIMARY, "n2", "h2") == PRIMARY
    waiting = asyncio.ensure_future(d.source(OID, PRIMARY, "n3", "h3"))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # n1 serves one reader at a time
    d.copied(OID, "n2", at("n2", "h2"), serves=True)
    assert await asyncio.wait_for(waiting, 1) == at("n2", "h2")  # a copy before the primary
    # The next reader takes the primary (free again), not the busy copy.
    assert await d.source(OID, PRIMARY, "n4", "h4") == PRIMARY


async def test_a_copy_on_the_readers_host_is_mapped_and_a_drivers_copy_serves_no_one():
    d = directory()
    await d.source(OID, PRIMARY, "n2", "h2")
    d.copied(OID, "n2", at("n2", "h2"), serves=True)
    await d.source(OID, PRIMARY, "drv", "h5")
    d.copied(OID, "drv", at("drv", "h5"), serves=False)
    assert await d.source(OID, PRIMARY, "n2b", "h2") == at("n2", "h2")
    assert await d.source(OID, PRIMARY, "n5", "h5") in (PRIMARY, at("n2", "h2"))
    # Freed with the object: every copy, the driver's too.
    assert sorted(c.node_id for c in d.forget(OID)) == ["drv", "n2"]


async def test_a_lost_or_dead_copy_gets_no_more_readers():
    alive = {"n1", "n2", "n3"}
    d = directory(alive)
    await d.source(OID, PRIMARY, "n2", "h2")
    d.copied(OID, "n2", at("n2", "h2"), serves=True)
    await d.source(OID, PRIMARY, "n3", "h3")
    d.copied(OID, "n3", at("n3", "h3"), serves=True)
    d.lost(OID, "n2", "n4")
    alive.discard("n3")
    assert await d.source(OID, PRIMARY, "n4", "h4") == PRIMARY
    assert [c.node_id for c in d.forget(OID)] == ["n3"]


async def test_a_reader_that_never_reports_frees_its_source_when_its_lease_ends(monkeypatch):
    monkeypatch.setattr("runtime.core.objects.copies.LEASE_S", 0.05)
    monkeypatch.setattr("runtime.core.objects.copies.LEASE_RATE", 1e12)
    d = directory()
    assert await d.source(OID, PRIMARY, "n2", "h2") == PRIMARY  # n2 then vanishes
    assert await asyncio.wait_for(d.source(OID, PRIMARY, "n3", "h3"), 2) == PRIMARY
