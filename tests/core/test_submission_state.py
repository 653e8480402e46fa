"""The caller's decisions without I/O, as tables: when a task is tried again, in what order
actor calls go out again after a restart, and the task book's and an actor's state machines
fed tables of events (retries, resends in order, restarts, cancellation, lost objects). No
mesh, no process, no loop: these run in milliseconds."""

from __future__ import annotations

import pytest

from runtime.core.common.exceptions import ActorUnavailableError, NodeDiedError, NoRoomError
from runtime.core.objects import serialization as ser
from runtime.core.objects.refs import PENDING, READY, OwnedObject
from runtime.core.submission.actor_state import DEAD, QUEUED, SEND, ActorState
from runtime.core.submission.book import (
    CANCEL_ACTOR,
    CANCEL_HERE,
    CANCEL_NODE,
    DONE,
    FAILED,
    RESEND,
    RETRY,
    SPILL,
    TaskBook,
)
from runtime.core.submission.pending import (
    PendingTask,
    RetryPolicy,
    TaskRetry,
    retry_allowed,
    take_retry,
)
from runtime.core.wire import protocol as p


class Flaky(Exception):
    pass


class Other(Exception):
    pass


def _retry(retries_left: int, allowed: bool | tuple[type[BaseException], ...] = False) -> TaskRetry:
    args, _ = ser.serialize(())
    msg = p.SubmitTask(b"t" * 16, b"f", "f", None, args, 1, {}, "owner", "127.0.0.1:1")
    return TaskRetry(msg, [], lambda: b"", retries_left, allowed)


@pytest.mark.parametrize(
    ("retries_left", "failures", "expect_taken", "left_after", "attempt_after"),
    [
        (0, 1, [False], 0, 0),  # no retries: never tried again
        (2, 3, [True, True, False], 0, 2),  # two tries, then none
        (-1, 3, [True, True, True], -1, 3),  # without limit
    ],
)
def test_a_task_is_tried_again_while_it_has_tries_left(
    retries_left: int,
    failures: int,
    expect_taken: list[bool],
    left_after: int,
    attempt_after: int,
) -> None:
    retry = _retry(retries_left)
    taken = [take_retry(retry, f"failure {i}") for i in range(failures)]
    assert taken == expect_taken
    assert retry.retries_left == left_after
    assert retry.msg.attempt == attempt_after  # each new try is a new attempt, run again
    assert (retry.failures or []) == [f"failure {i}" for i in range(sum(expect_taken))]


def test_no_retry_record_means_no_retry() -> None:
    assert take_retry(None, "its node died") is False


def _app_error(exc: BaseException) -> p.Value:
    try:
        raise exc
    except BaseException as raised:
        return ser.error_value(raised, "f")


@pytest.mark.parametrize(
    ("allowed", "error", "expect"),
    [
        (False, _app_error(Flaky("x")), False),  # retry_exceptions off
        (True, _app_error(Flaky("x")), True),  # any exception the code raised
        ((Flaky,), _app_error(Flaky("x")), True),  # a listed class
        ((Flaky,), _app_error(Other("x")), False),  # another class
        ((Exception,), _app_error(Flaky("x")), True),  # a base class of it
        (True, ser.system_error_value(NodeDiedError, "gone"), False),  # not the user's error
    ],
)
def test_retry_exceptions_decides_which_errors_are_tried_again(
    allowed: bool | tuple[type[BaseException], ...], error: p.Value, expect: bool
) -> None:
    assert retry_allowed(allowed, error) is expect


def _call(n: int) -> tuple[p.CallActor, list[memoryview]]:
    args, _ = ser.serialize(())
    task_id = n.to_bytes(16, "big")  # task ids grow in submission order
    return p.CallActor(task_id, b"a", "m", args, 1, "owner", "127.0.0.1:1"), []


def _location(max_restarts: int, num_restarts: int = 0) -> p.ActorLocation:
    return p.ActorLocation(
        b"a", "node", "127.0.0.1:2", "ALIVE", "A", None, "", 1, False,
        max_restarts=max_restarts, num_restarts=num_restarts,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("queued", "resent", "expect"),
    [
        ([], [1, 2, 3], [1, 2, 3]),
        ([4, 5], [1, 2, 3], [1, 2, 3, 4, 5]),  # calls in flight go before later queued ones
        ([2, 5], [1, 3, 4], [1, 2, 3, 4, 5]),  # merged in submission order
        ([3], [], [3]),
    ],
)
def test_calls_sent_again_after_a_restart_keep_the_callers_order(
    queued: list[int], resent: list[int], expect: list[int]
) -> None:
    state = ActorState(b"a")
    state.queue.extend(_call(n) for n in queued)
    state.requeue([_call(n) for n in resent])
    assert [int.from_bytes(msg.task_id, "big") for msg, _ in state.queue] == expect


@pytest.mark.parametrize(
    ("max_restarts", "tracked"),
    [(0, False), (1, True), (-1, True)],
)
def test_calls_are_kept_for_a_resend_only_when_the_actor_may_restart(
    max_restarts: int, tracked: bool
) -> None:
    state = ActorState(b"a", _location(max_restarts, num_restarts=2))
    msg, bufs = _call(1)
    state.track(msg, bufs)
    assert (msg.task_id in state.inflight) is tracked
    if tracked:
        assert state.inflight[msg.task_id][2] == 2  # the incarnation it went to


@pytest.mark.parametrize("max_restarts", [0, 1, -1])
@pytest.mark.parametrize("retries", [False, True])
def test_a_plain_answer_leaves_the_book_as_the_general_path_does(
    max_restarts: int, retries: bool
) -> None:
    """``TaskBook.call_done`` (the shell's path for an actor call's one small value) and
    ``answered`` leave the same tables behind."""
    books = []
    for fast in (False, True):
        state = ActorState(b"a", _location(max_restarts, num_restarts=0))
        tasks: dict[bytes, PendingTask] = {}
        book = TaskBook(tasks, {}, {}, {b"a": state}, {})
        msgs = [_call(n) for n in range(3)]
        for msg, bufs in msgs:
            state.submit(tasks, msg, bufs, (msg.task_id + b"\0" * 4,), None, None, True)
            if retries:
                state.retries_left[msg.task_id] = 2
        done = msgs[1][0].task_id
        if fast:
            book.call_done(done, b"a")
        else:
            task = tasks[done]
            assert book.answered(done, None) == (DONE, task)
        books.append((sorted(tasks), sorted(state.inflight), sorted(state.retries_left)))
    assert books[0] == books[1]
    assert done not in books[1][0] and done not in books[1][1]
    if max_restarts != 0:  # (a call's tries are counted only while it may be resent)
        assert done not in books[1][2] and len(books[1][1]) == 2


# --- the state machines, fed events: tables of events and what each one makes happen --------
#
# ``Shell`` is the I/O shell reduced to a recorder: it turns each event of a table into the
# state machines' method calls (as TaskSubmitter and ActorCaller do) and writes down what they
# decide: a message sent, a call queued, the actor located, a task tried again or spilled,
# results resolved, results failed (with the class their error raises as), a cancel sent.

NODES = {"A": "127.0.0.1:11", "B": "127.0.0.1:12", "C": "127.0.0.1:13"}
ACTOR = b"actor"
#: A cancelled actor call raises as both, as in Ray (`except RayTaskError` catches it).
CANCELLED_CALL = "TaskError(TaskCancelledError)"


def _tid(n: int) -> bytes:
    return n.to_bytes(16, "big")  # task ids grow in submission order


def _error_name(value: p.Value) -> str:
    return type(ser.error_from_value(value)).__name__


def _raised(exc: BaseException) -> p.Value:
    try:
        raise exc
    except BaseException as raised:
        return ser.error_value(raised, "f")


class Link:
    """Stands for the shell's connection (the machines never use it)."""

    closed = False

    def send(self, msg: object, buffers: object = ()) -> None:
        raise AssertionError("the state machines never send")


class Shell:
    def __init__(self) -> None:
        self.tasks: dict[bytes, PendingTask] = {}
        self.load: dict[str, int] = {}
        self.groups: dict[bytes, list[str]] = {}
        self.actors: dict[bytes, ActorState] = {}
        self.owned: dict[bytes, OwnedObject] = {}
        self.book = TaskBook(self.tasks, self.load, self.groups, self.actors, self.owned)
        self.out: list[tuple[object, ...]] = []
        self.pending: dict[int, PendingTask] = {}  # tried again or spilled: placed next

    # -- helpers

    def actor(self) -> ActorState:
        return self.actors.setdefault(ACTOR, ActorState(ACTOR))

    def fail(self, task: PendingTask, err: p.Value) -> None:
        n = int.from_bytes(self.task_id(task), "big")
        self.out.append(("fail", n, _error_name(err)))

    def task_id(self, task: PendingTask) -> bytes:
        return task.object_ids[0][:16]

    def send_task(self, task: PendingTask, node: str) -> None:
        assert task.retry is not None
        msg = task.retry.msg
        self.book.placed(task, msg.task_id, node)
        self.out.append(("send", int.from_bytes(msg.task_id, "big"), node, msg.attempt))

    def sent_calls(self, calls: list[tuple[p.CallActor, list[memoryview]]]) -> None:
        for msg, _ in calls:
            self.out.append(("send", int.from_bytes(msg.task_id, "big")))

    def settle_location(self) -> None:
        """After the head's answer: ask again, connect (send the queue) or fail the queue."""
        state = self.actor()
        if state.needs_location():
            self.out.append(("ask head",))
            return
        if state.target() is None:
            assert state.dead is not None
            for task in state.drop_queue(self.tasks):
                self.fail(task, state.dead)
            state.resolving = False
            return
        self.sent_calls(state.connected(Link(), self.tasks))
        state.resolving = False

    # -- events

    def __call__(self, event: tuple[object, ...]) -> None:
        kind, *args = event
        getattr(self, "on_" + str(kind).replace(" ", "_"))(*args)

    def on_task(self, n: int, node: str, retries: int = 0, retry_exceptions: bool = False) -> None:
        args, _ = ser.serialize(())
        msg = p.SubmitTask(_tid(n), b"f", "f", None, args, 2, {}, "me", "127.0.0.1:1")
        oids = [_tid(n) + bytes([i]) for i in range(2)]
        for oid in oids:
            self.owned[oid] = OwnedObject()
        policy = RetryPolicy(retries, retry_exceptions)
        task = self.book.submitted(msg, [], lambda: b"", oids, policy, None)
        self.send_task(task, node)

    def on_place(self, n: int, node: str) -> None:  # the shell placed a retry or a spill
        self.send_task(self.pending.pop(n), node)

    def on_no_node(self, n: int) -> None:  # no node can hold it: it waits for one
        args, _ = ser.serialize(())
        msg = p.SubmitTask(_tid(n), b"f", "f", None, args, 1, {}, "me", "127.0.0.1:1")
        task = self.book.submitted(msg, [], lambda: b"", [_tid(n)], RetryPolicy(3, False), None)
        self.book.waiting(task, msg.task_id)

    def on_call(self, n: int) -> None:
        args, _ = ser.serialize(())
        msg = p.CallActor(_tid(n), ACTOR, "m", args, 1, "me", "127.0.0.1:1")
        state = self.actor()
        step = state.submit(self.tasks, msg, [], [_tid(n)], None, None, state.conn is not None)
        if step == DEAD:
            assert state.dead is not None
            self.out.append(("fail", n, _error_name(state.dead)))
        elif step == SEND:
            self.out.append(("send", n))
        else:
            self.out.append(("queue", n) if step == QUEUED else ("queue, locate", n))

    def on_head(
        self, state: str, restarts: int, max_restarts: int = -1, retries: int = -1,
        reachable: bool = True,
    ) -> None:  # fmt: skip
        """The head answered where the actor is; ``reachable``: whether connecting there works."""
        loc = p.ActorLocation(
            ACTOR, "A" if restarts % 2 == 0 else "B", "127.0.0.1:2", state, "C", None, "", 1,
            False, death_cause="it was killed" if state == "DEAD" else None,
            max_restarts=max_restarts, max_task_retries=retries, num_restarts=restarts,
        )  # fmt: skip
        actor = self.actor()
        actor.located(loc, actor.lost_restarts)
        if reachable or actor.needs_location():
            self.settle_location()
            return
        target = actor.target()
        if target is not None and actor.unreachable(target):
            self.out.append(("ask head",))
            return
        if actor.dead is None:
            actor.die("the actor cannot be reached")
        for task in actor.drop_queue(self.tasks):
            self.fail(task, actor.dead)  # type: ignore[arg-type]

    def on_done(self, n: int, stored: bool = False) -> None:
        self.answer(n, None, stored)

    def on_raised(self, n: int) -> None:
        self.answer(n, _raised(Flaky("flaky")))

    def on_no_room(self, n: int) -> None:
        self.answer(n, ser.system_error_value(NoRoomError, "busy"))

    def on_unavailable(self, n: int) -> None:
        self.answer(n, ser.system_error_value(ActorUnavailableError, "it restarts elsewhere"))

    def answer(self, n: int, error: p.Value | None, stored: bool = False) -> None:
        got = self.book.answered(_tid(n), error)
        if got is None:
            self.out.append(("ignored", n))
            return
        step, task = got
        if step == DONE:
            for oid in task.object_ids if stored else ():
                entry = self.owned[oid]  # what resolving a Located value does
                entry.state, entry.location = READY, p.Located("A", NODES["A"], 1 << 20)
                self.book.keeps_lineage(task, oid)
            self.out.append(("resolve", n))
        elif step == FAILED:
            assert error is not None
            self.fail(task, error)
        elif step == RETRY:
            self.pending[n] = task
            self.out.append(("retry", n))
        elif step == SPILL:
            assert task.retry is not None
            self.pending[n] = task
            self.out.append(("spill", n, task.retry.msg.spills))
        elif step == RESEND:
            self.out.append(
                ("resend", n) if not self.actor().want_locate() else ("resend, locate", n)
            )
        else:
            raise AssertionError(step)

    def on_node_lost(self, node: str) -> None:
        again: set[bytes] = set()
        for state in self.actors.values():
            if state.location is not None and state.location.node_id == node:
                again |= state.node_lost(node, self.tasks)
                if state.want_locate():
                    self.out.append(("locate",))
        for task, err in self.book.node_lost(node, again):
            if err is None:
                self.pending[int.from_bytes(self.task_id(task), "big")] = task
                self.out.append(("retry", int.from_bytes(self.task_id(task), "big")))
            else:
                self.fail(task, err)

    def on_unreachable_node(self, n: int, node: str) -> None:
        got = self.book.unreachable(_tid(n), node, "connection refused")
        if got is None:
            self.out.append(("ignored", n))
        elif got[0] == RETRY:
            self.pending[n] = got[1]
            self.out.append(("retry", n))
        else:
            self.answer(n, got[1])

    def on_cancel(self, n: int) -> None:
        got = self.book.cancel(_tid(n))
        if got is None:
            self.out.append(("too late", n))
            return
        where, task = got
        self.out.append(
            (
                "cancel "
                + {CANCEL_HERE: "here", CANCEL_ACTOR: "actor", CANCEL_NODE: "node"}[where],
                n,
            )
        )
        self.answer(n, TaskBook.cancelled_error(task))

    def on_kill(self) -> None:
        state = self.actor()
        if state.kill():
            assert state.dead is not None
            for task in state.drop_queue(self.tasks):
                self.fail(task, state.dead)

    def on_object_lost(self, n: int) -> None:
        task = self.book.object_lost(self.owned[_tid(n) + b"\x00"])
        if task is None:
            self.out.append(("cannot make again", n))
            return
        self.pending[n] = task
        states = [self.owned[oid].state for oid in task.object_ids]
        self.out.append(("retry", n, "siblings pending" if set(states) == {PENDING} else states))

    def on_load(self, node: str) -> None:
        self.out.append(("load", node, self.load.get(node, 0)))

    def on_group(self, name: str, *nodes: str) -> None:  # the head said where its bundles are
        self.groups[name.encode()] = list(nodes)

    def on_groups(self) -> None:  # the groups whose bundle nodes are known
        self.out.append(("groups", *sorted(g.decode() for g in self.groups)))


def run(events: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    shell = Shell()
    for event in events:
        shell(event)
    return shell.out


def _table(*rows: tuple[str, list[tuple[object, ...]], list[tuple[object, ...]]]) -> object:
    return pytest.mark.parametrize(
        ("events", "expect"), [pytest.param(ev, ex, id=name) for name, ev, ex in rows]
    )


@_table(
    (
        "its node dies: tried again elsewhere, as the next attempt",
        [("task", 1, "A", 1), ("node lost", "A"), ("place", 1, "B"), ("done", 1),
         ("load", "A"), ("load", "B")],
        [("send", 1, "A", 0), ("retry", 1), ("send", 1, "B", 1), ("resolve", 1),
         ("load", "A", 0), ("load", "B", 0)],
    ),
    (
        "without retries its node's death fails it",
        [("task", 1, "A", 0), ("node lost", "A")],
        [("send", 1, "A", 0), ("fail", 1, "NodeDiedError")],
    ),
    (
        "once its retries are spent it fails",
        [("task", 1, "A", 1), ("node lost", "A"), ("place", 1, "B"), ("node lost", "B")],
        [("send", 1, "A", 0), ("retry", 1), ("send", 1, "B", 1), ("fail", 1, "NodeDiedError")],
    ),
    (
        "only the dead node's tasks are touched",
        [("task", 1, "A", 1), ("task", 2, "B", 1), ("node lost", "A"), ("done", 2)],
        [("send", 1, "A", 0), ("send", 2, "B", 0), ("retry", 1), ("resolve", 2)],
    ),
    (
        "a dead node's placement groups are asked for anew (their bundles move)",
        [("group", "g1", "A", "B"), ("group", "g2", "B"), ("node lost", "A"), ("groups",)],
        [("groups", "g2")],
    ),
    (
        "retry_exceptions: an error it raised tries it again, until the tries are spent",
        [("task", 1, "A", 1, True), ("raised", 1), ("place", 1, "A"), ("raised", 1)],
        [("send", 1, "A", 0), ("retry", 1), ("send", 1, "A", 1), ("fail", 1, "TaskError(Flaky)")],
    ),
    (
        "without retry_exceptions an error it raised is its result",
        [("task", 1, "A", 3), ("raised", 1)],
        [("send", 1, "A", 0), ("fail", 1, "TaskError(Flaky)")],
    ),
    (
        "a busy node sends it back: placed again, same attempt, no try spent",
        [("task", 1, "A", 0), ("no room", 1), ("place", 1, "B"), ("no room", 1),
         ("place", 1, "C"), ("done", 1), ("load", "A"), ("load", "B"), ("load", "C")],
        [("send", 1, "A", 0), ("spill", 1, 1), ("send", 1, "B", 0), ("spill", 1, 2),
         ("send", 1, "C", 0), ("resolve", 1), ("load", "A", 0), ("load", "B", 0),
         ("load", "C", 0)],
    ),
    (
        "a node that cannot be reached: tried again elsewhere",
        [("task", 1, "A", 1), ("unreachable node", 1, "A"), ("place", 1, "B"), ("done", 1)],
        [("send", 1, "A", 0), ("retry", 1), ("send", 1, "B", 1), ("resolve", 1)],
    ),
    (
        "a node that cannot be reached, no retries: it fails",
        [("task", 1, "A", 0), ("unreachable node", 1, "A"), ("load", "A")],
        [("send", 1, "A", 0), ("fail", 1, "NodeDiedError"), ("load", "A", 0)],
    ),
)  # fmt: skip
def test_retries(events: list[tuple[object, ...]], expect: list[tuple[object, ...]]) -> None:
    assert run(events) == expect


@_table(
    (
        "calls in flight go again first, in order, then the later ones",
        [("call", 1), ("call", 2), ("head", "ALIVE", 0), ("call", 3), ("node lost", "A"),
         ("call", 4), ("head", "ALIVE", 1)],
        [("queue, locate", 1), ("queue", 2), ("send", 1), ("send", 2), ("send", 3),
         ("locate",), ("queue", 4), ("send", 1), ("send", 2), ("send", 3), ("send", 4)],
    ),
    (
        "a call answered before the node died is not sent again",
        [("call", 1), ("head", "ALIVE", 0), ("call", 2), ("call", 3), ("done", 2),
         ("node lost", "A"), ("head", "ALIVE", 1)],
        [("queue, locate", 1), ("send", 1), ("send", 2), ("send", 3), ("resolve", 2),
         ("locate",), ("send", 1), ("send", 3)],
    ),
    (
        "calls that found the actor gone (ACTOR_UNAVAILABLE) go again in submission order",
        [("call", 1), ("head", "ALIVE", 0), ("call", 2), ("call", 3), ("unavailable", 3),
         ("unavailable", 1), ("call", 4), ("head", "ALIVE", 1), ("done", 2)],
        [("queue, locate", 1), ("send", 1), ("send", 2), ("send", 3), ("resend, locate", 3),
         ("resend", 1), ("queue", 4), ("send", 1), ("send", 3), ("send", 4), ("resolve", 2)],
    ),
    (
        "max_task_retries=0: calls in flight fail, the later ones go to the restarted actor",
        [("call", 1), ("head", "ALIVE", 0, -1, 0), ("call", 2), ("node lost", "A"),
         ("call", 3), ("head", "ALIVE", 1, -1, 0)],
        [("queue, locate", 1), ("send", 1), ("send", 2), ("fail", 1, "ActorDiedError"),
         ("fail", 2, "ActorDiedError"), ("queue, locate", 3), ("send", 3)],
    ),
    (
        "max_task_retries=1: a call lost twice fails",
        [("call", 1), ("head", "ALIVE", 0, -1, 1), ("node lost", "A"),
         ("head", "ALIVE", 1, -1, 1), ("node lost", "B")],
        [("queue, locate", 1), ("send", 1), ("locate",), ("send", 1),
         ("fail", 1, "ActorDiedError")],
    ),
)  # fmt: skip
def test_resends_in_order(
    events: list[tuple[object, ...]], expect: list[tuple[object, ...]]
) -> None:
    assert run(events) == expect


@_table(
    (
        "an actor that never restarts: its node's death fails the calls, and every later one",
        [("call", 1), ("head", "ALIVE", 0, 0), ("call", 2), ("node lost", "A"), ("call", 3)],
        [("queue, locate", 1), ("send", 1), ("send", 2), ("fail", 1, "ActorDiedError"),
         ("fail", 2, "ActorDiedError"), ("fail", 3, "ActorDiedError")],
    ),
    (
        "the head answers the incarnation that was lost: it did not come back",
        [("call", 1), ("head", "ALIVE", 0), ("node lost", "A"), ("head", "ALIVE", 0)],
        [("queue, locate", 1), ("send", 1), ("locate",), ("fail", 1, "ActorDiedError")],
    ),
    (
        "the actor is dead for good: the queued calls fail",
        [("call", 1), ("head", "ALIVE", 0), ("node lost", "A"), ("head", "DEAD", 0)],
        [("queue, locate", 1), ("send", 1), ("locate",), ("fail", 1, "ActorDiedError")],
    ),
    (
        "an actor not placed yet: ask again until it is",
        [("call", 1), ("head", "PENDING", 0), ("head", "ALIVE", 0)],
        [("queue, locate", 1), ("ask head",), ("send", 1)],
    ),
    (
        "its node cannot be reached: wait for the next incarnation",
        [("call", 1), ("head", "ALIVE", 0, -1, -1, False), ("head", "ALIVE", 1)],
        [("queue, locate", 1), ("ask head",), ("send", 1)],
    ),
    (
        "its node cannot be reached and it never restarts: the calls fail",
        [("call", 1), ("call", 2), ("head", "ALIVE", 0, 0, 0, False)],
        [("queue, locate", 1), ("queue", 2), ("fail", 1, "ActorDiedError"),
         ("fail", 2, "ActorDiedError")],
    ),
    (
        "runtime.kill from this process fails the queued calls and every later one",
        [("call", 1), ("kill",), ("call", 2)],
        [("queue, locate", 1), ("fail", 1, "ActorDiedError"), ("fail", 2, "ActorDiedError")],
    ),
)  # fmt: skip
def test_restarts(events: list[tuple[object, ...]], expect: list[tuple[object, ...]]) -> None:
    assert run(events) == expect


@_table(
    (
        "a queued actor call is dropped from the queue: it never goes out",
        [("call", 1), ("call", 2), ("cancel", 1), ("head", "ALIVE", 0)],
        [("queue, locate", 1), ("queue", 2), ("cancel here", 1), ("fail", 1, CANCELLED_CALL),
         ("send", 2)],
    ),
    (
        "a sent actor call is stopped on the actor and not sent again after a restart",
        [("call", 1), ("head", "ALIVE", 0), ("cancel", 1), ("node lost", "A"),
         ("head", "ALIVE", 1), ("done", 1)],
        [("queue, locate", 1), ("send", 1), ("cancel actor", 1), ("fail", 1, CANCELLED_CALL),
         ("ignored", 1)],
    ),
    (
        "a task is stopped on its node and never tried again",
        [("task", 1, "A", 3), ("cancel", 1), ("node lost", "A"), ("done", 1), ("load", "A")],
        [("send", 1, "A", 0), ("cancel node", 1), ("fail", 1, "TaskCancelledError"),
         ("ignored", 1), ("load", "A", 0)],
    ),
    (
        "a task waiting for a node to join is cancelled where it waits",
        [("no node", 1), ("cancel", 1)],
        [("cancel here", 1), ("fail", 1, "TaskCancelledError")],
    ),
    (
        "a finished task cannot be cancelled",
        [("task", 1, "A"), ("done", 1), ("cancel", 1)],
        [("send", 1, "A", 0), ("resolve", 1), ("too late", 1)],
    ),
)  # fmt: skip
def test_cancellation(events: list[tuple[object, ...]], expect: list[tuple[object, ...]]) -> None:
    assert run(events) == expect


@_table(
    (
        "a stored result that is lost is made again by its task, with its siblings",
        [("task", 1, "A", 1), ("done", 1, True), ("object lost", 1), ("place", 1, "B"),
         ("done", 1, True)],
        [("send", 1, "A", 0), ("resolve", 1), ("retry", 1, "siblings pending"),
         ("send", 1, "B", 1), ("resolve", 1)],
    ),
    (
        "each making again spends a try",
        [("task", 1, "A", 2), ("done", 1, True), ("object lost", 1), ("place", 1, "B"),
         ("done", 1, True), ("object lost", 1), ("place", 1, "C"), ("done", 1, True),
         ("object lost", 1)],
        [("send", 1, "A", 0), ("resolve", 1), ("retry", 1, "siblings pending"),
         ("send", 1, "B", 1), ("resolve", 1), ("retry", 1, "siblings pending"),
         ("send", 1, "C", 2), ("resolve", 1), ("cannot make again", 1)],
    ),
    (
        "a task without retries cannot make it again",
        [("task", 1, "A", 0), ("done", 1, True), ("object lost", 1)],
        [("send", 1, "A", 0), ("resolve", 1), ("cannot make again", 1)],
    ),
    (
        "a task that spent its tries on node deaths cannot make it again",
        [("task", 1, "A", 1), ("node lost", "A"), ("place", 1, "B"), ("done", 1, True),
         ("object lost", 1)],
        [("send", 1, "A", 0), ("retry", 1), ("send", 1, "B", 1), ("resolve", 1),
         ("cannot make again", 1)],
    ),
    (
        "a small result kept by its owner has no lineage to lose",
        [("task", 1, "A", 1), ("done", 1), ("object lost", 1)],
        [("send", 1, "A", 0), ("resolve", 1), ("cannot make again", 1)],
    ),
)  # fmt: skip
def test_lost_objects(events: list[tuple[object, ...]], expect: list[tuple[object, ...]]) -> None:
    assert run(events) == expect
