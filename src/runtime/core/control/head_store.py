"""The head's durable state: actors (with their specs), placement groups and the KV store,
in SQLite.

A head started again with the same ``--state-dir`` finds its named and detached actors and
its KV entries; nodes that kept running re-register, and calls reach their actors again.
KV and group writes go through at once. Actor writes (two or more per actor: thousands a
second when many are created) are gathered and written at the end of the event-loop
iteration that made them, in one transaction; an actor's spec (with its pickled class) is
written once, later changes update only its state.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass

import msgspec

from ..common.private import private_file
from ..wire import protocol as p

_encoder = msgspec.msgpack.Encoder()
_spec_decoder = msgspec.msgpack.Decoder(p.ActorSpec)
_group_decoder = msgspec.msgpack.Decoder(p.PlacementGroupSpec)

_SCHEMA = """
create table if not exists actors (
    actor_id blob primary key,
    spec blob not null,
    state text not null,
    node_id text not null,
    address text not null,
    num_restarts integer not null,
    death_cause text
);
create table if not exists placement_groups (
    pg_id blob primary key,
    spec blob not null,
    state text not null,
    nodes blob not null,
    reason text not null
);
create table if not exists kv (
    namespace text not null,
    key text not null,
    value blob not null,
    primary key (namespace, key)
);
"""


@dataclass
class StoredActor:
    spec: p.ActorSpec
    state: str
    node_id: str
    address: str
    num_restarts: int
    death_cause: str | None


class HeadStore:
    """A small write-through SQLite file (``head.sqlite`` in the state directory)."""

    def __init__(self, path: str) -> None:
        self.path = path
        # 0600 before SQLite opens it, in any state dir (SQLite gives its -wal and -shm files
        # the database's mode): it holds actors' constructor arguments.
        private_file(path)
        self._db = sqlite3.connect(path, isolation_level=None)  # autocommit
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=normal")
        self._db.executescript(_SCHEMA)

        #: Actor writes not flushed yet, latest per actor (None: delete it), in order.
        self._actor_writes: dict[bytes, StoredActor | None] = {}
        #: Actors whose row (with its spec) is in the file.
        self._stored: set[bytes] = set()

    def close(self) -> None:
        self.flush()
        self._db.close()

    def save_actor(self, actor: StoredActor) -> None:
        self._queue(actor.spec.actor_id, actor)

    def delete_actor(self, actor_id: bytes) -> None:
        self._queue(actor_id, None)

    def _queue(self, actor_id: bytes, actor: StoredActor | None) -> None:
        first = not self._actor_writes
        self._actor_writes.pop(actor_id, None)  # keep the order of the latest write
        self._actor_writes[actor_id] = actor
        if first:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (tests, tools): write now
                self.flush()

    def flush(self) -> None:
        """Write the gathered actor changes, in one transaction."""
        writes, self._actor_writes = self._actor_writes, {}
        if not writes:
            return
        db, stored = self._db, self._stored
        db.execute("begin")
        try:
            for actor_id, a in writes.items():
                if a is None:
                    db.execute("delete from actors where actor_id = ?", (actor_id,))
                    stored.discard(actor_id)
                elif actor_id in stored:
                    db.execute(
                        "update actors set state = ?, node_id = ?, address = ?,"
                        " num_restarts = ?, death_cause = ? where actor_id = ?",
                        (a.state, a.node_id, a.address, a.num_restarts, a.death_cause, actor_id),
                    )
                else:
                    db.execute(
                        "insert or replace into actors values (?, ?, ?, ?, ?, ?, ?)",
                        (actor_id, _encoder.encode(a.spec), a.state, a.node_id, a.address,
                         a.num_restarts, a.death_cause),
                    )  # fmt: skip
                    stored.add(actor_id)
        except BaseException:
            db.execute("rollback")
            raise
        db.execute("commit")

    def actors(self) -> list[StoredActor]:
        self.flush()
        rows = self._db.execute(
            "select spec, state, node_id, address, num_restarts, death_cause from actors"
        ).fetchall()
        out = [StoredActor(_spec_decoder.decode(r[0]), *r[1:]) for r in rows]
        self._stored.update(a.spec.actor_id for a in out)
        return out

    def save_group(
        self, spec: p.PlacementGroupSpec, state: str, nodes: dict[int, str], reason: str
    ) -> None:
        self._db.execute(
            "insert or replace into placement_groups values (?, ?, ?, ?, ?)",
            (spec.pg_id, _encoder.encode(spec), state, _encoder.encode(nodes), reason),
        )

    def groups(self) -> list[tuple[p.PlacementGroupSpec, str, dict[int, str], str]]:
        rows = self._db.execute(
            "select spec, state, nodes, reason from placement_groups"
        ).fetchall()
        return [
            (_group_decoder.decode(r[0]), r[1], msgspec.msgpack.decode(r[2], type=dict[int, str]),
             r[3])
            for r in rows
        ]  # fmt: skip

    def put(self, namespace: str, key: str, value: bytes) -> None:
        self._db.execute("insert or replace into kv values (?, ?, ?)", (namespace, key, value))

    def delete(self, namespace: str, key: str) -> None:
        self._db.execute("delete from kv where namespace = ? and key = ?", (namespace, key))

    def kv(self) -> dict[tuple[str, str], bytes]:
        rows = self._db.execute("select namespace, key, value from kv").fetchall()
        return {(ns, k): bytes(v) for ns, k, v in rows}
