"""Admission control for incoming connections: bounds on what unauthenticated peers cost,
and slots that only token holders can take.

A dialer's ``Hello`` carries a *ticket*: an HMAC over the token, its nonce, the time and its
peer id (:func:`make_ticket`). A connection whose Hello holds a fresh ticket, never seen
before, is *proven*: it is never pushed out to make room and counts against no cap below
(a token holder cannot be locked out by anyone without the token). The ticket only buys
admission; the handshake that follows still proves the token both ways. A ticket gives
nothing new to test token guesses against: whoever sees it sees the dialer's proof too.

The others, per remote host: at most ``max_pending`` may be waiting in the handshake, and
at most ``max_unproven`` from all hosts together (half the open-file limit, at most 1,024,
so a flood from many addresses cannot use up the descriptors members need). A new one
over a bound pushes out, the oldest first: one that failed its proof; else one that has
sent nothing for ``grace`` seconds; else one that sent a Hello without a ticket; else one
that connected less than ``grace`` seconds ago and has sent nothing yet (a member's
connection, accepted in a burst of the flood's, waits there for its Hello to be read), and of
those first one whose socket holds no unread bytes.

Hosts that fail the token check repeatedly are slowed down: after ``max_failures``
failures within ``window`` seconds, each further *wrong proof* is answered only after
``delay`` seconds; a handshake that proves the token is never delayed.
"""

from __future__ import annotations

import hashlib
import hmac
import select
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, Final, Protocol

#: How far a pending connection got: nothing, a failed proof, a Hello, a Hello with a ticket.
IDLE, FAILED, HELLO, PROVEN = 0, 1, 2, 3
#: How old (or how far in the future) a ticket's time may be, in seconds.
TICKET_WINDOW: Final = 60.0
_MAX_SEEN: Final = 1 << 16
#: The order in which unproven connections are pushed out (-1: idle, connected just now).
_RANK: Final = {FAILED: 0, IDLE: 1, HELLO: 2, -1: 3}
#: How many just-connected sockets a push-out looks into for unread bytes (a syscall each).
_PEEKS: Final = 16


def make_ticket(token: bytes, nonce: bytes, peer_id: str, now: float | None = None) -> bytes:
    """The ticket a dialer holding ``token`` puts in its Hello: [u64 ms][HMAC-SHA256]."""
    ms = int((time.time() if now is None else now) * 1000).to_bytes(8, "big")
    return ms + hmac.new(token, b"H" + nonce + ms + peer_id.encode(), hashlib.sha256).digest()


def _open_file_limit() -> int:
    try:
        import resource

        return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    except (ImportError, OSError, ValueError):
        return 1024


class Pending(Protocol):
    def abort(self, exc: BaseException | None = None, *, flush: bool = False) -> None: ...


def _unread(sock: Any) -> bool:
    """Whether ``sock`` holds bytes not read yet (or its end: either way it is not idle)."""
    fd = -1 if sock is None else sock.fileno()
    return fd >= 0 and bool(select.select([fd], [], [], 0)[0])


class AdmissionControl:
    """Bookkeeping (its only I/O: a look, without waiting, at whether a socket holds unread
    bytes): the transport asks it, and tells it what happened."""

    def __init__(
        self,
        *,
        max_pending: int = 256,
        max_unproven: int | None = None,
        max_failures: int = 20,
        window: float = 10.0,
        delay: float = 1.0,
        grace: float = 2.0,
    ) -> None:
        self.max_pending = max_pending
        #: None: half the soft open-file limit, at most 1,024 (read again as it fills).
        self.max_unproven = max_unproven
        self.max_failures = max_failures
        self.window = window
        self.delay = delay
        self.grace = grace
        #: Per host, its pending connections, oldest first.
        self._pending: dict[str, OrderedDict[int, Pending]] = {}
        #: Every pending connection, oldest first: (host, connection).
        self._all: OrderedDict[int, tuple[str, Pending]] = OrderedDict()
        self._progress: dict[int, int] = {}
        self._opened_at: dict[int, float] = {}
        #: Sockets of pending connections, where the transport gave them (``opened``).
        self._socks: dict[int, Any] = {}
        self._unproven = 0
        self._failures: dict[str, deque[float]] = {}
        #: Tickets' nonces seen lately (nonce -> when), so that a ticket is good once.
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    @property
    def unproven(self) -> int:
        """How many pending connections hold no ticket."""
        return self._unproven

    def opened(self, host: str, conn: Pending, sock: Any = None) -> Pending | None:
        """A connection from ``host`` starts its handshake; returns one to push out, if any.
        ``sock`` (anything with ``fileno()``) lets a push-out see whether it holds unread bytes."""
        waiting = self._pending.setdefault(host, OrderedDict())
        if sock is not None:
            self._socks[id(conn)] = sock
        waiting[id(conn)] = conn
        self._all[id(conn)] = (host, conn)
        self._progress[id(conn)] = IDLE
        self._opened_at[id(conn)] = time.monotonic()
        self._unproven += 1
        if sum(1 for k in waiting if self._progress[k] < PROVEN) > self.max_pending:
            return self._push_out(waiting)
        if self._unproven > 64 and self._unproven > self._unproven_cap():
            return self._push_out(self._all)
        return None

    def _unproven_cap(self) -> int:
        if self.max_unproven is not None:
            return self.max_unproven
        return max(64, min(1024, _open_file_limit() // 2))

    def _push_out(self, candidates: Iterable[int]) -> Pending | None:
        """The oldest unproven candidate of the first rank (see the module), forgotten here."""
        young = time.monotonic() - self.grace
        best, level = None, len(_RANK)
        for key in candidates:
            progress = self._progress[key]
            if progress == PROVEN:
                continue
            if progress == IDLE and self._opened_at[key] > young:
                progress = -1  # connected just now: perhaps a member whose Hello is on its way
            rank = _RANK[progress]
            if rank < level:
                best, level = key, rank
                if level == 0:
                    break
        if best is None:
            return None
        if level == _RANK[-1]:
            best = self._youngest_silent(candidates, best, young)
        host, conn = self._all[best]
        self.settled(host, conn)
        return conn

    def _youngest_silent(self, candidates: Iterable[int], first: int, young: float) -> int:
        """Among connections that connected just now, the oldest whose socket holds no unread
        bytes: one whose Hello came in but has not been read yet (the loop accepts a burst of
        the flood's first) is not idle. Looks at up to ``_PEEKS`` of them, else ``first``."""
        peeks = 0
        for key in candidates:
            if self._progress.get(key) != IDLE or self._opened_at[key] <= young:
                continue
            if not _unread(self._socks.get(key)):
                return key
            peeks += 1
            if peeks >= _PEEKS:
                break
        return first

    def progressed(self, conn: Pending, level: int) -> None:
        """``conn`` sent a Hello (HELLO), one with a ticket (PROVEN), or failed its proof."""
        key = id(conn)
        old = self._progress.get(key)
        if old is None or old == PROVEN:
            return
        self._progress[key] = level
        if level == PROVEN:
            self._unproven -= 1

    def check_ticket(
        self, token: bytes, nonce: bytes, peer_id: str, ticket: bytes, now: float | None = None
    ) -> bool:
        """Whether ``ticket`` proves the token for this Hello (fresh, and not seen before)."""
        if len(ticket) != 40 or not nonce:
            return False
        now = time.time() if now is None else now
        sent = int.from_bytes(ticket[:8], "big") / 1000
        if abs(now - sent) > TICKET_WINDOW or nonce in self._seen:
            return False
        expect = make_ticket(token, nonce, peer_id, sent)
        if not hmac.compare_digest(expect[8:], ticket[8:]):
            return False
        while self._seen and (
            len(self._seen) >= _MAX_SEEN
            or now - next(iter(self._seen.values())) > 2 * TICKET_WINDOW
        ):
            self._seen.popitem(last=False)
        self._seen[bytes(nonce)] = now
        return True

    def settled(self, host: str, conn: Pending) -> None:
        """The handshake ended (passed, failed, or the connection closed)."""
        key = id(conn)
        progress = self._progress.pop(key, None)
        if progress is None:
            return
        if progress < PROVEN:
            self._unproven -= 1
        self._all.pop(key, None)
        self._opened_at.pop(key, None)
        self._socks.pop(key, None)
        waiting = self._pending.get(host)
        if waiting is not None:
            waiting.pop(key, None)
            if not waiting:
                del self._pending[host]

    def failed(self, host: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        times = self._failures.setdefault(host, deque())
        times.append(now)
        while times and now - times[0] > self.window:
            times.popleft()

    def hello_delay(self, host: str, now: float | None = None) -> float:
        """How long to wait before answering a wrong proof from ``host``."""
        times = self._failures.get(host)
        if not times:
            return 0.0
        now = time.monotonic() if now is None else now
        while times and now - times[0] > self.window:
            times.popleft()
        if not times:
            del self._failures[host]
            return 0.0
        return self.delay if len(times) >= self.max_failures else 0.0
