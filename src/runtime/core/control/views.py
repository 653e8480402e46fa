"""Views as deltas: the head's log of member changes, and a member's merge of them.

A view of N members sent whole to N members costs N*N entries: at 2,000 members one
broadcast is 4 M entries, and the head spent most of its time writing them. The head now
numbers every change of the view (a member joined, changed or left: ``version``) and sends
each member only what changed since the version it holds. The connection to the head is
ordered, so what the head wrote on a member's live connection is what the member holds next:
the head counts a version as the member's once it sent it (``ViewLog.sent``). A member
applies a delta only on top of the version it starts from (``base``); one that does not
match (it missed one) asks for the whole view again (``ViewResync``). A joining member gets
the whole view, as does one whose base the head no longer remembers (its log of departures
is bounded).

Each member's entry is encoded once per change and kept encoded, so a whole view is a copy
of N encoded entries and a delta one of the changed ones; a delta is encoded once for all
the members that hold the same base.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

from ..wire import protocol as p

if TYPE_CHECKING:
    from ..wire.transport import Connection
    from .records import HeadHost

#: Departures the head remembers (a member whose base is older gets the whole view).
DEPARTED_MAX = 1024
#: ``ClusterView.base`` of a refresh: the latest entries of members whose resource
#: availability changed, outside the numbered changes (applied whatever the version).
REFRESH = -2

_encode = msgspec.msgpack.encode


class ViewLog:
    """The head's numbered changes of the view, and the version each member holds."""

    def __init__(self, departed_max: int = DEPARTED_MAX) -> None:
        self.version = 0
        #: node id -> the version of its last change, oldest change first.
        self._changed: OrderedDict[str, int] = OrderedDict()
        #: node id -> its NodeInfo encoded (dropped when it changes).
        self._encoded: dict[str, msgspec.Raw] = {}
        #: (version, node id) of the members that left, oldest first (bounded).
        self._removed: deque[tuple[int, str]] = deque()
        self._departed_max = departed_max
        #: A delta can be made only from a base at or after this version.
        self.floor = 0
        #: member -> the version it holds (what was last written on its connection).
        self.sent: dict[str, int] = {}
        #: Members whose availability changed since the last refresh went out.
        self._refresh: set[str] = set()
        #: member -> its load as last sent in a refresh (an unchanged one is not sent again).
        self._loads: dict[str, bytes] = {}

    def touch(self, node_id: str) -> None:
        """``node_id`` joined or its entry changed."""
        self.version += 1
        self._changed[node_id] = self.version
        self._changed.move_to_end(node_id)
        self._encoded.pop(node_id, None)

    def refresh(self, node_id: str) -> None:
        """``node_id``'s resource availability changed: it goes out with the next refresh,
        not as a numbered change (every report of every member would be one)."""
        self._refresh.add(node_id)
        self._encoded.pop(node_id, None)

    def _load(self, info: p.NodeInfo) -> bytes | None:
        """``info``'s load encoded, or None when it is what the last refresh said."""
        data = _encode(p.NodeLoad(info.node_id, info.available, info.reserved, info.used,
                                  info.pinned))  # fmt: skip
        if self._loads.get(info.node_id) == data:
            return None
        self._loads[info.node_id] = data
        return data

    def remove(self, node_id: str) -> None:
        """``node_id`` left the view."""
        self.version += 1
        self._changed.pop(node_id, None)
        self._encoded.pop(node_id, None)
        self.sent.pop(node_id, None)
        self._loads.pop(node_id, None)
        self._removed.append((self.version, node_id))
        while len(self._removed) > self._departed_max:
            self.floor = self._removed.popleft()[0]

    def departed(self, nodes: Mapping[str, p.NodeInfo]) -> list[str]:
        """The members that left lately and are not back (sent with a whole view)."""
        return [node_id for _, node_id in self._removed if node_id not in nodes]

    def _entry(self, info: p.NodeInfo) -> msgspec.Raw:
        raw = self._encoded.get(info.node_id)
        if raw is None:
            raw = self._encoded[info.node_id] = msgspec.Raw(_encode(info))
        return raw

    def whole(self, nodes: Mapping[str, p.NodeInfo]) -> p.ClusterView:
        """The whole view at the current version (its entries encoded already)."""
        entries = msgspec.Raw(_encode([self._entry(info) for info in nodes.values()]))
        departed = msgspec.Raw(_encode(self.departed(nodes)))
        return p.ClusterView(entries, departed, self.version, -1)  # type: ignore[arg-type]

    def delta(self, base: int, nodes: Mapping[str, p.NodeInfo]) -> p.ClusterView | None:
        """What changed since ``base`` (None: the head no longer knows; send the whole)."""
        if base < self.floor or base > self.version:
            return None
        changed = []
        for node_id, version in reversed(self._changed.items()):
            if version <= base:
                break
            info = nodes.get(node_id)
            if info is not None:
                changed.append(self._entry(info))
        gone = []
        for version, node_id in reversed(self._removed):
            if version <= base:
                break
            if node_id not in nodes:  # not back since (a member that rejoined, same id)
                gone.append(node_id)
        return p.ClusterView(
            msgspec.Raw(_encode(changed)),  # type: ignore[arg-type]
            gone,
            self.version,
            base,
        )

    def send_whole(self, conn: Connection, node_id: str, nodes: Mapping[str, p.NodeInfo]) -> None:
        conn.send(self.whole(nodes))
        self.sent[node_id] = self.version

    def broadcast(
        self, nodes: Mapping[str, p.NodeInfo], conn_of: Callable[[str], Connection | None]
    ) -> int:
        """Send every member what it lacks: one delta per base, encoded once. Returns how
        many messages went out."""
        by_base: dict[int, list[tuple[str, Connection]]] = {}
        version = self.version
        for node_id in nodes:
            base = self.sent.get(node_id)
            if base == version or base is None:
                continue  # up to date, or not joined through a connection (a local member)
            conn = conn_of(node_id)
            if conn is not None:
                by_base.setdefault(base, []).append((node_id, conn))
        sent = 0
        for base, members in by_base.items():
            delta = self.delta(base, nodes)
            msg = delta if delta is not None else self.whole(nodes)
            for node_id, conn in members:
                conn.send(msg)
                self.sent[node_id] = version
                sent += 1
        return sent

    def send_refresh(
        self, nodes: Mapping[str, p.NodeInfo], conn_of: Callable[[str], Connection | None]
    ) -> int:
        """Send every member the load of the members whose availability changed since the
        last refresh, one message encoded once for all. A member applies it whatever version
        it holds: each load is the member's now, a member that joined since got it whole,
        one that left is not in it. Returns the loads sent."""
        loads = [data for i in self._refresh if i in nodes and (data := self._load(nodes[i]))]
        self._refresh.clear()
        if not loads:
            return 0
        entries = b"".join(loads)
        # A msgpack array (its 32-bit header, then the entries as they are).
        array = msgspec.Raw(b"\xdd" + len(loads).to_bytes(4, "big") + entries)
        msg = p.ClusterView([], [], self.version, REFRESH, array)  # type: ignore[arg-type]
        for node_id in self.sent:
            conn = conn_of(node_id)
            if conn is not None:
                conn.send(msg)
        return len(loads)


class MemberView:
    """What a member keeps of the view's versions: it applies a delta only on top of the
    version it holds, and asks the head for the whole view on a gap."""

    def __init__(self) -> None:
        #: The version this member holds (-1: none yet).
        self.version = -1
        #: Deltas that did not start from ``version`` (each dropped).
        self.gaps = 0
        #: The whole view was asked for and has not come yet.
        self.asked = False

    def receive(
        self,
        conn: Connection,
        msg: p.ClusterView,
        apply: Callable[[list[p.NodeInfo], Sequence[str], bool], None],
        view: Mapping[str, p.NodeInfo],
    ) -> None:
        """Apply ``msg`` through ``apply(nodes, departed, whole)``; a delta from another
        version than this member's is dropped, and the whole view asked for. ``view``: the
        member's entries now (a refresh's loads apply to them)."""
        if msg.base == REFRESH:
            replace = msgspec.structs.replace
            nodes = []
            for load in msg.loads:
                info = view.get(load.node_id)
                if info is not None:
                    nodes.append(replace(info, available=load.available, reserved=load.reserved,
                                         used=load.used, pinned=load.pinned))  # fmt: skip
            apply(nodes, (), False)
            return
        whole = msg.base < 0
        if not whole and msg.base != self.version:
            self.gaps += 1
            if not self.asked:  # once: the deltas sent before the head heard it miss too
                self.asked = True
                conn.send(p.ViewResync(self.version))
            return
        if whole:
            self.asked = False
        self.version = msg.version
        apply(msg.nodes, msg.departed, whole)


def merge(
    view: dict[str, p.NodeInfo], nodes: Iterable[p.NodeInfo], departed: Iterable[str], whole: bool
) -> dict[str, p.NodeInfo]:
    """The view after ``nodes`` (whole: replacing it) and without ``departed``."""
    if whole:
        return {n.node_id: n for n in nodes}
    for n in nodes:
        view[n.node_id] = n
    for node_id in departed:
        view.pop(node_id, None)
    return view


def urgent_wait(members: int) -> float:
    """The wait before a change of membership goes out (gathering a burst of joins): the
    cost of a delta grows with the members it goes to (10 ms up to 50 members, 0.4 s at
    2,000, at most 1 s)."""
    return min(1.0, max(0.01, members * 2e-4))


#: The view entries a second the head spends on resource reports, at most.
REPORT_ENTRIES_PER_S = 400_000


def lazy_wait(members: int) -> float:
    """The wait before resource availability alone goes out: every member reporting once
    in this wait costs members * members entries, so the wait grows with members squared to
    bound them (as the membership's wait up to ~80 members, 0.1 s at 200, 2.5 s at 1,000,
    10 s at 2,000, at most 30 s)."""
    return min(30.0, max(urgent_wait(members), members * members / REPORT_ENTRIES_PER_S))


class Membership:
    """The head's members and how their view reaches every member: the numbered changes
    (``ViewLog``), a delta broadcast once per burst of changes, a refresh of the loads at a
    rate that bounds its cost, the whole view to a joiner or on a gap."""

    def __init__(self, worker: HeadHost, nodes: dict[str, p.NodeInfo]) -> None:
        self.worker = worker
        #: The head's members (the head's dict, shared).
        self.nodes = nodes
        self.log = ViewLog()
        #: host id -> the node processes of that host (they share its ledger).
        self.hosts: dict[str, set[str]] = {}
        self._view_timer: asyncio.TimerHandle | None = None
        self._refresh_timer: asyncio.TimerHandle | None = None

    def add(self, info: p.NodeInfo) -> None:
        """A member joined (or joined again)."""
        old = self.nodes.get(info.node_id)
        if old is not None and old.host_id != info.host_id:
            self.hosts.get(old.host_id, set()).discard(info.node_id)
        self.nodes[info.node_id] = info
        if info.host_id:
            self.hosts.setdefault(info.host_id, set()).add(info.node_id)
        self.log.touch(info.node_id)

    def drop(self, node_id: str) -> p.NodeInfo | None:
        """A member left: its entry (None if it was not one)."""
        info = self.nodes.pop(node_id, None)
        if info is not None:
            self.log.remove(node_id)
            if info.host_id:
                self.hosts.get(info.host_id, set()).discard(node_id)
        return info

    def changed(self, node_id: str | None = None) -> None:
        """``node_id``'s entry changed (or only a member was added or dropped): every member
        gets the changes soon, once for all the changes until then, after a wait that
        gathers a burst (``urgent_wait``)."""
        if node_id is not None:
            self.log.touch(node_id)
        if self._view_timer is None:
            wait = urgent_wait(len(self.nodes))
            self._view_timer = self.worker.loop.call_later(wait, self._send_view)

    def report(self, msg: p.ReportResources) -> bool:
        """A member's resource report (False: not a member). Its availability goes out with
        the next refresh, after a wait that bounds the entries a second that all members'
        reports cost (``lazy_wait``: 10 ms in a small cluster, 10 s at 2,000 members)."""
        info = self.nodes.get(msg.node_id)
        if info is None:
            return False
        info.used, info.pinned = msg.used, msg.pinned
        # The host's ledger is shared: what one process reports holds for all of them.
        host = info.host_id
        for node_id in self.hosts.get(host, ()) if host else (info.node_id,):
            other = self.nodes.get(node_id)
            if other is not None:
                other.available, other.reserved = msg.available, msg.reserved
                self.log.refresh(node_id)
        if self._refresh_timer is None:
            wait = lazy_wait(len(self.nodes))
            self._refresh_timer = self.worker.loop.call_later(wait, self._send_refresh)
        return True

    def send_whole(self, conn: Connection, node_id: str) -> None:
        self.log.send_whole(conn, node_id, self.nodes)

    def resync(self, conn: Connection | None) -> None:
        """A member missed a delta: it gets the whole view."""
        if conn is not None and conn.peer_id in self.nodes and not conn.closed:
            self.log.send_whole(conn, conn.peer_id, self.nodes)

    def _send_view(self) -> None:
        self._view_timer = None
        self.worker.set_view(list(self.nodes.values()))
        self.log.broadcast(self.nodes, self.worker.conns.get)

    def _send_refresh(self) -> None:
        self._refresh_timer = None
        self.worker.set_view(list(self.nodes.values()))  # wakes what waits in this process
        self.log.send_refresh(self.nodes, self.worker.conns.get)


__all__ = ["MemberView", "Membership", "ViewLog", "lazy_wait", "merge", "urgent_wait"]
