"""The head's SQLite store gathers actor writes into one transaction per loop iteration:
what a restarted head reads back is the latest state of each actor, deletes included."""

from __future__ import annotations

import asyncio
import os

from runtime.core.control.head_store import HeadStore, StoredActor
from runtime.core.wire import protocol as p


def _actor(n: int, state: str, node: str = "") -> StoredActor:
    spec = p.ActorSpec(bytes([n]) * 16, f"A{n}", b"c" * 12, b"blob" * 100, p.Value(0, b""), {}, "o")
    return StoredActor(spec, state, node, "", 0, None)


def test_actor_writes_of_one_loop_iteration_land_together_and_the_latest_wins(tmp_path):
    path = os.path.join(tmp_path, "head.sqlite")
    store = HeadStore(path)

    async def lifecycle() -> int:
        store.save_actor(_actor(1, "PENDING"))
        store.save_actor(_actor(2, "PENDING"))
        store.save_actor(_actor(1, "ALIVE", "node-a"))
        store.delete_actor(bytes([2]) * 16)
        on_disk_meanwhile = len(HeadStore(path).actors())
        await asyncio.sleep(0)  # the iteration ends: one transaction
        store.save_actor(_actor(1, "DEAD", "node-a"))  # a later change updates the row
        await asyncio.sleep(0)
        return on_disk_meanwhile

    assert asyncio.run(lifecycle()) == 0
    again = HeadStore(path)
    rows = again.actors()
    assert [(a.spec.class_name, a.state, a.node_id) for a in rows] == [("A1", "DEAD", "node-a")]
    assert rows[0].spec.cls_blob == b"blob" * 100
    store.close()
    again.close()


def test_without_a_running_loop_actor_writes_go_through_at_once(tmp_path):
    path = os.path.join(tmp_path, "head.sqlite")
    store = HeadStore(path)
    store.save_actor(_actor(3, "ALIVE", "node-b"))
    assert [a.state for a in HeadStore(path).actors()] == ["ALIVE"]
    store.delete_actor(bytes([3]) * 16)
    assert HeadStore(path).actors() == []
    store.close()
