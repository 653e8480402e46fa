"""Messages to one peer gathered over one loop pass and sent as one frame.

A pipelined caller sends thousands of calls in a row, and a node answers them as fast: one
frame per call cost each side a frame's header, its parse, its decode call and its dispatch.
A :class:`Gather` sends the first message of a loop pass to a connection at once (a lone call
or answer waits for nothing: a blocked caller's round trip is what it was), holds the ones
after it in the same pass, and at the end of the pass sends them as one frame (``wrap`` of the
list: :class:`~.protocol.CallBatch`, :class:`~.protocol.SubmitBatch`,
:class:`~.protocol.DoneBatch`) with the raw buffers of every message in order; the receiver
(:mod:`runtime.core.process.dispatch`) hands each message on with its own buffers, as if it
had come alone. The connection's write seal covers the frame, so one seal covers them all.

Order: the messages a gather sends to one connection keep their order (the first goes at
once, the rest follow in one frame, before anything the gather takes later). A message sent
on the connection directly while some are held can overtake them: a sender whose message must
not overtake (a cancel after its call, calls sent again after a reconnect) calls
:meth:`Gather.flush` first.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from . import protocol as p
from .transport import Connection


class Link(Protocol):
    """Where a gather sends: a :class:`~.transport.Connection` (or what stands for one)."""

    closed: bool

    def send(self, msg: Any, buffers: Sequence[Any] = ...) -> None: ...


#: What the receiver gets for a message that has no raw buffers.
NO_RAW = memoryview(b"")
#: The most messages one frame carries: a longer run (calls queued while their actor was
#: being located, sent at once when it is) goes in several frames.
MAX_BATCH = 1024


class Gather:
    """Messages held per connection until the end of the loop pass (loop thread only)."""

    __slots__ = ("_armed", "_held", "_loop", "_wrap", "batches", "largest")

    def __init__(self, wrap: Callable[[list[Any]], p._Msg]) -> None:
        self._wrap = wrap
        #: Frames sent with more than one message, and the most messages one carried (held
        #: for one pass at most: the loop's inbox runs a bounded number of posts per pass).
        self.batches = 0
        self.largest = 0
        #: conn -> (held messages, their raw buffers in order); an empty list: the pass's
        #: first message to it went at once.
        self._held: dict[Link, tuple[list[Any], list[Any]]] = {}
        self._armed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def send(self, conn: Link, msg: p._Msg, buffers: Sequence[Any] = ()) -> None:
        """Send ``msg`` to ``conn`` now if it is the first this pass, else at its end."""
        held = self._held.get(conn)
        if held is not None:
            msgs = held[0]
            msgs.append(msg)
            if buffers:
                held[1].extend(buffers)
            if len(msgs) >= MAX_BATCH:
                self._held[conn] = ([], [])
                self._send(conn, msgs, held[1])
            return
        if not self._armed:
            loop = asyncio.get_running_loop()
            self._loop, self._armed = loop, True
            loop.call_soon(self.flush)
        self._held[conn] = ([], [])
        conn.send(msg, buffers)

    def flush(self) -> None:
        """Send what is held (the end of the pass, or a sender that must not overtake)."""
        self._armed = False
        held, self._held = self._held, {}
        for conn, (msgs, buffers) in held.items():
            if msgs:
                self._send(conn, msgs, buffers)

    def _send(self, conn: Link, msgs: list[Any], buffers: list[Any]) -> None:
        n = len(msgs)
        if n == 1:
            conn.send(msgs[0], buffers)
            return
        self.batches += 1
        self.largest = max(self.largest, n)
        conn.send(self._wrap(msgs), buffers)

    def reset(self) -> None:
        """Forget what is held (its loop is gone)."""
        self._held, self._armed, self._loop = {}, False, None


#: How long a task's answer may wait for the answers after it (``Linger``), at most.
LINGER_S = 0.001
#: The most answers that wait together.
LINGER_MOST = 64


class Linger:
    """Answers of tasks that wait a little for the ones after them (loop thread only).

    A node runs a one-CPU task at a time, so its answers leave one per loop pass and a
    :class:`Gather` never puts two in one frame. When more work is under way on the node
    (``more``), an answer waits, at most :data:`LINGER_S` and for at most
    :data:`LINGER_MOST` answers, for the ones that follow; an answer with nothing under way
    after it goes at once, and so does every answer waiting (to any peer). A caller waiting
    on one task at a time is answered as before; a pipelined one gets its answers in frames
    of many, each up to a millisecond later."""

    __slots__ = ("_held", "_loop", "_timer", "batches")

    def __init__(self) -> None:
        self._held: dict[Link, tuple[list[Any], list[Any]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0

    def send(self, conn: Link, done: p.TaskDone, buffers: Sequence[Any], more: bool) -> None:
        held = self._held.get(conn)
        if held is None:
            if not more and not self._held:
                conn.send(done, buffers)
                return
            held = self._held[conn] = ([], [])
        msgs = held[0]
        msgs.append(done)
        if buffers:
            held[1].extend(buffers)
        if not more:  # nothing under way: every answer waiting goes now (a draining node
            self.flush()  # may exit once its last task is answered)
        elif len(msgs) >= LINGER_MOST:
            del self._held[conn]
            self._send(conn, msgs, held[1])
        elif self._timer is None:
            loop = self._loop = asyncio.get_running_loop()
            self._timer = loop.call_later(LINGER_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, {}
        for conn, (msgs, buffers) in held.items():
            self._send(conn, msgs, buffers)

    def _send(self, conn: Link, msgs: list[Any], buffers: list[Any]) -> None:
        if len(msgs) == 1:
            conn.send(msgs[0], buffers)
        else:
            self.batches += 1
            conn.send(p.DoneBatch(msgs), buffers)

    def reset(self) -> None:
        self._held, self._timer, self._loop = {}, None, None


class _Answers(threading.local):
    gather: Gather | None = None
    linger: Linger | None = None


_answers = _Answers()


def send_answer(conn: Connection, done: p.TaskDone, buffers: Sequence[Any] = ()) -> None:
    """Answer a task or actor call on ``conn``, gathered with the other answers of this loop
    pass (one gather per loop thread: the node's executor and its hosted actors share it)."""
    answer_gather().send(conn, done, buffers)


def answer_gather() -> Gather:
    """This loop thread's gather of answers (``send_answer``'s; for a run of answers)."""
    gather = _answers.gather
    if gather is None:
        gather = _answers.gather = Gather(_done_batch)
    elif gather._armed and gather._loop is not None and gather._loop.is_closed():
        gather.reset()  # armed by a loop that closed before its pass ended (a shutdown)
    return gather


def send_task_answer(
    conn: Connection, done: p.TaskDone, buffers: Sequence[Any], more: bool
) -> None:
    """Answer a task on ``conn``; ``more``: other work is under way on this node, so this
    answer may wait a little for the ones after it (:class:`Linger`)."""
    linger = _answers.linger
    if linger is None:
        linger = _answers.linger = Linger()
    elif linger._loop is not None and linger._loop.is_closed():
        linger.reset()
    linger.send(conn, done, buffers, more)


def _done_batch(done: list[p.TaskDone]) -> p.DoneBatch:
    return p.DoneBatch(done)


def buffers_size(value: p.Value | p.Located | None) -> int:
    """The bytes of raw buffers that follow a frame's header for ``value``."""
    if isinstance(value, p.Value) and value.bufs:
        return sum(value.bufs)
    return 0


def unbatch(
    items: Sequence[Any],
    raw: memoryview,
    size: Callable[[Any], int],
    handle: Callable[[Any, memoryview], None],
    conn: Connection,
) -> None:
    """Hand each message of a batch on with its own slice of the frame's raw buffers
    (``size``: a message's bytes of them). A message whose sizes run past the frame gets what
    is left: its own handler fails it (the others are not affected)."""
    offset = 0
    for item in items:
        n = size(item)
        if n:
            handle(item, raw[offset : offset + n])
            offset += n
        else:
            handle(item, NO_RAW)
        if conn.closed:
            return
