"""Many members: a host of many processes forked from one, and the head's view broadcasts."""

from __future__ import annotations

import os
from collections.abc import Callable

import psutil
import pytest

import runtime
from runtime.core.process import launcher

pytestmark = pytest.mark.timeout(90)


@runtime.remote
def where() -> int:
    return os.getpid()


def test_a_host_of_many_processes_is_forked_from_one_and_every_process_serves_and_stops() -> None:
    n = launcher.FORK_ABOVE + 2
    runtime.init(num_cpus=n)
    try:
        nodes = [x for x in runtime.nodes() if x["Alive"] and not x["IsDriver"]]
        assert len(nodes) == n + 1  # the head, and the host's processes
        me = psutil.Process()
        zygotes = [c for c in me.children() if "--fork" in c.cmdline()]
        assert len(zygotes) == 1
        members = zygotes[0].children()
        assert len(members) == n
        pids = set(runtime.get([where.remote() for _ in range(4 * n)], timeout=60))
        assert pids <= {m.pid for m in members}
        everyone = [zygotes[0], *members]
    finally:
        runtime.shutdown()
    _, alive = psutil.wait_procs(everyone, timeout=10)
    assert not alive


@pytest.mark.timeout(120)
def test_two_hundred_members_churning_see_no_false_death_and_the_silent_ones_die_in_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runtime.core.tools import head_sim

    dead_after, slack = 3.0, 5.0  # slack: the head checks every half beat, on a busy machine
    monkeypatch.setenv("RUNTIME_HEARTBEAT_INTERVAL_S", "0.5")
    monkeypatch.setenv("RUNTIME_SUSPECT_AFTER_S", "1.5")
    monkeypatch.setenv("RUNTIME_DEAD_AFTER_S", str(dead_after))
    out = head_sim.run(200, procs=2, seconds=dead_after + slack, churn=20.0, stop=4)
    assert out["join errors"] == 0
    assert out["false deaths"] == 0
    assert out["evicted after its simulator stalled"] == 0  # nobody else evicted at all
    assert out["stopped beating"] == 4 and out["of them declared dead"] == 4
    assert dead_after <= out["their last beat to the news, longest (s)"] < dead_after + slack
    assert out["leaves"] >= 80  # churn ran: about 20 a second for 8 s
    assert out["joins"] == 200 + out["leaves"]
    assert out["views received"] > 0


def test_the_head_sends_deltas_and_a_member_that_misses_one_gets_the_whole_view() -> None:
    import asyncio

    from runtime.core.tools import head_sim
    from runtime.core.wire import protocol as p

    head = head_sim.HeadSim.start()

    async def scenario() -> None:
        await head_sim._probe(head)
        tally = head_sim.Tally()

        members: list[head_sim._Member] = []

        async def join(name: str, keep_view: bool = False) -> head_sim._Member:
            member = await head_sim._join(
                head.address, head.token, name, tally, 20.0, keep_view=keep_view
            )
            assert member is not None
            members.append(member)
            return member

        async def until(what: str, ok: Callable[[], bool]) -> None:
            async with asyncio.timeout(20):  # every view a receives wakes this
                while not ok():
                    await a.view_seen.wait()
            assert ok(), what

        a = await join("member-a", keep_view=True)
        assert a.view.version > 0 and "member-a" in a.nodes  # joined with the whole view
        b = await join("member-b")
        await until("a delta tells a of b", lambda: "member-b" in a.nodes)
        assert b.conn is not None  # b's load changes: a refresh tells a, outside the versions
        b.conn.send(p.ReportResources("member-b", {"CPU": 0.25, "memory": 1e9}))
        version = a.view.version
        await until("a refresh", lambda: a.nodes["member-b"].available["CPU"] == 0.25)
        assert a.view.version == version
        assert tally.whole_views == 2 and a.view.gaps == 0  # b's was whole, a's news a delta
        a.drop_next_delta = True  # the delta telling of c is lost on a's side
        await join("member-c")
        await until("the delta was dropped", lambda: not a.drop_next_delta)
        assert "member-c" not in a.nodes
        d = await join("member-d")
        # The next delta does not start from a's version: a asks, and gets the whole view.
        await until("a knows c again", lambda: {"member-c", "member-d"} <= set(a.nodes))
        assert a.view.gaps >= 1
        assert tally.whole_views >= 5  # a, b, c, d on joining, and a's after the gap
        assert a.nodes["member-d"].pid == os.getpid()
        assert d.conn is not None
        d.leaving = True
        d.conn.close()
        await until("a delta tells a that d left", lambda: "member-d" not in a.nodes)
        assert tally.false_deaths == 0
        for m in members:
            m.leaving = True
            assert m.conn is not None
            m.conn.close()
        async with asyncio.timeout(10):
            for m in members:
                await m.gone.wait()

    try:
        asyncio.run(scenario())
    finally:
        head.stop()


def test_a_view_delta_carries_the_changes_since_its_base_and_none_past_the_log() -> None:
    from runtime.core.control.views import ViewLog, merge
    from runtime.core.wire import protocol as p

    def info(node_id: str) -> p.NodeInfo:
        return p.NodeInfo(node_id, "127.0.0.1:1", False, {"CPU": 1.0}, {"CPU": 1.0}, 1)

    log = ViewLog(departed_max=2)
    nodes = {n: info(n) for n in ("a", "b", "c")}
    for n in nodes:
        log.touch(n)
    base = log.version
    nodes["b"].available = {"CPU": 0.0}
    log.touch("b")
    del nodes["c"]
    log.remove("c")
    delta = log.delta(base, nodes)
    assert delta is not None and delta.base == base and delta.version == log.version
    decoded = p.decode(p.encode(delta))
    assert isinstance(decoded, p.ClusterView)
    assert [n.node_id for n in decoded.nodes] == ["b"] and decoded.departed == ["c"]
    view = merge({n: info(n) for n in ("a", "b", "c")}, decoded.nodes, decoded.departed, False)
    assert sorted(view) == ["a", "b"] and view["b"].available == {"CPU": 0.0}
    assert log.delta(log.version, nodes) is not None  # nothing new: an empty delta
    log.touch("d")
    nodes["d"] = info("d")
    for gone in ("a", "d"):  # three departures in a log of two: the oldest is forgotten
        del nodes[gone]
        log.remove(gone)
    assert log.delta(base, nodes) is None  # the member gets the whole view instead
    whole = p.decode(p.encode(log.whole(nodes)))
    assert isinstance(whole, p.ClusterView) and whole.base == -1
    assert [n.node_id for n in whole.nodes] == ["b"] and whole.departed == ["a", "d"]


def test_a_refresh_carries_only_the_loads_that_changed_and_applies_to_known_members() -> None:
    from runtime.core.control.views import REFRESH, MemberView, ViewLog
    from runtime.core.wire import protocol as p

    class Conn:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def send(self, msg: p._Msg) -> None:
            self.sent.append(p.encode(msg))

    nodes = {n: p.NodeInfo(n, "127.0.0.1:1", False, {"CPU": 2.0}, {"CPU": 2.0}, 1) for n in "abc"}
    log = ViewLog()
    for n in nodes:
        log.touch(n)
    conns = {n: Conn() for n in nodes}
    for n in nodes:
        log.send_whole(conns[n], n, nodes)  # type: ignore[arg-type]
    nodes["a"].available = {"CPU": 1.0}
    log.refresh("a")
    log.refresh("b")  # reported, but nothing changed since the whole view... still sent once
    assert log.send_refresh(nodes, conns.get) == 2  # type: ignore[arg-type]
    log.refresh("b")  # the same load again: not sent twice
    assert log.send_refresh(nodes, conns.get) == 0  # type: ignore[arg-type]
    msg = p.decode(conns["c"].sent[-1])
    assert isinstance(msg, p.ClusterView) and msg.base == REFRESH
    assert sorted(load.node_id for load in msg.loads) == ["a", "b"]
    member = MemberView()
    whole = p.decode(conns["c"].sent[0])
    assert isinstance(whole, p.ClusterView)
    views: list[dict[str, p.NodeInfo]] = []
    member.receive(conns["c"], whole, lambda ns, d, w: views.append({n.node_id: n for n in ns}),
                   {})  # type: ignore[arg-type]  # fmt: skip
    applied: list[list[p.NodeInfo]] = []
    member.receive(conns["c"], msg, lambda ns, d, w: applied.append(ns), views[0])  # type: ignore[arg-type]
    assert member.version == whole.version and member.gaps == 0
    assert {n.node_id: n.available for n in applied[0]} == {"a": {"CPU": 1.0}, "b": {"CPU": 2.0}}
    assert views[0]["a"].available == {"CPU": 2.0}  # new entries: the member's view is not mutated
