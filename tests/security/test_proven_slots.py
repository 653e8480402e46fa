"""Issue 15, item 2: slots that only token holders can take. A dialer's Hello carries a
ticket (an HMAC over the token, its nonce, the time and its id); a connection with a fresh
ticket is never pushed out, and unproven connections from all hosts together are capped
below the open-file limit, so a flood without the token can neither push out a member's
handshake nor use up the descriptors members need.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading
import time
from pathlib import Path

import pytest

import runtime
from runtime.core.wire import protocol as p
from runtime.core.wire.admission import HELLO, PROVEN, AdmissionControl, make_ticket
from tests.conftest import HeadProcess, stop_process

from . import raw

TOKEN = os.urandom(32)


class Conn:
    """A pending connection as admission sees it: something it may push out."""

    def __init__(self) -> None:
        self.aborted = False

    def abort(self, exc: BaseException | None = None, *, flush: bool = False) -> None:
        self.aborted = True


def _hello(adm: AdmissionControl, host: str, ticket: bytes = b"", nonce: bytes = b"") -> Conn:
    """A connection from ``host`` that sent a Hello (with ``ticket``); pushes out as told."""
    conn = Conn()
    pushed = adm.opened(host, conn)
    if pushed is not None:
        pushed.abort()
    nonce = nonce or os.urandom(16)
    proven = adm.check_ticket(TOKEN, nonce, "member", ticket) if ticket else False
    adm.progressed(conn, PROVEN if proven else HELLO)
    return conn


def test_a_member_with_a_ticket_outlasts_2000_hellos_from_eight_hosts() -> None:
    adm = AdmissionControl(max_pending=16, max_unproven=64)
    nonce = os.urandom(16)
    member = _hello(adm, "127.0.0.2", make_ticket(TOKEN, nonce, "member"), nonce)
    flood = [_hello(adm, f"127.0.0.{2 + i % 8}") for i in range(2000)]
    assert not member.aborted  # before: the oldest Hello of its host, pushed out first
    assert adm.unproven <= 64  # from all hosts together
    assert sum(not c.aborted for c in flood) <= 64


def test_a_ticket_is_good_once_fresh_and_only_with_the_token() -> None:
    adm = AdmissionControl()
    nonce = os.urandom(16)
    ticket = make_ticket(TOKEN, nonce, "member")
    assert not adm.check_ticket(TOKEN, nonce, "someone else", ticket)  # bound to the id
    assert not adm.check_ticket(TOKEN, os.urandom(16), "member", ticket)  # and the nonce
    assert adm.check_ticket(TOKEN, nonce, "member", ticket)
    assert not adm.check_ticket(TOKEN, nonce, "member", ticket)  # replayed
    stale = os.urandom(16)
    assert not adm.check_ticket(
        TOKEN, stale, "member", make_ticket(TOKEN, stale, "member", time.time() - 120)
    )
    forged = os.urandom(16)
    assert not adm.check_ticket(TOKEN, forged, "member", make_ticket(b"w" * 32, forged, "member"))
    assert not adm.check_ticket(TOKEN, forged, "member", b"")


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(120)
def test_a_node_joins_and_calls_succeed_through_a_flood_at_1024_open_files(
    head: HeadProcess,
) -> None:
    """2,400 connections from 127.0.0.2-9 that send a Hello and never prove anything (fewer
    than 256 per host: the per-host cap alone let them in), against a head whose open-file
    limit is 1,024: before, the head ran out of descriptors and nothing more got in."""
    resource.prlimit(head.proc.pid, resource.RLIMIT_NOFILE, (1024, 1024))
    host, _, port = head.address.rpartition(":")
    hello = raw.frame(p.Hello(p.PROTOCOL_VERSION, "flood", os.urandom(16)))
    held: list[socket.socket] = []
    stop = threading.Event()

    def flood() -> None:
        i = 0
        while not stop.is_set() and i < 2400:
            with contextlib.suppress(OSError):
                s = socket.socket()
                held.append(s)
                s.bind((f"127.0.0.{2 + i % 8}", 0))
                s.connect((host, int(port)))
                s.sendall(hello)
            i += 1

    flooder = threading.Thread(target=flood)
    flooder.start()
    node = None
    try:
        while len(held) < 1200 and flooder.is_alive():  # the head is well into the flood
            time.sleep(0.05)
        node = head.start_node("--num-cpus", "1")
        runtime.init(address=head.address, token=head.token)
        try:

            @runtime.remote(num_cpus=1)
            def where() -> int:
                return os.getpid()

            pids = runtime.get([where.remote() for _ in range(4)], timeout=60)
            assert node.pid in pids or len(set(pids)) >= 1
            assert runtime.get(runtime.put(b"x" * 100), timeout=30) == b"x" * 100
        finally:
            runtime.shutdown()
        flooder.join(60)
        assert _open_fds(head.proc.pid) < 1024 - 64, "the flood used up the head's descriptors"
        assert "Too many open files" not in Path(head.log_path).read_text()
    finally:
        stop.set()
        flooder.join(60)
        for s in held:
            s.close()
        if node is not None:
            stop_process(node)


def test_a_members_fresh_connection_goes_after_stalled_and_old_idle_ones() -> None:
    adm = AdmissionControl(max_pending=1000, max_unproven=64, grace=0.5)
    old = [_hello(adm, "127.0.0.2") for _ in range(40)]  # Hellos that never prove
    idle = [Conn() for _ in range(24)]
    for c in idle:
        assert adm.opened("127.0.0.3", c) is None
    time.sleep(0.6)  # all of them are past the grace period now
    member = Conn()  # accepted, its Hello not read yet
    pushed = adm.opened("127.0.0.1", member)
    assert pushed is idle[0]  # idle past the grace go first, the oldest first
    pushed.abort()
    for _ in range(63):  # a burst of the flood's, accepted right after it
        pushed = adm.opened("127.0.0.4", Conn())
        assert pushed is not None and pushed is not member
        pushed.abort()
    assert not member.aborted
    assert all(c.aborted for c in idle + old)  # then the Hellos that never proved
    assert adm.opened("127.0.0.4", Conn()) is member  # only young ones are left: the oldest


def test_a_just_accepted_connection_whose_hello_waits_unread_goes_after_silent_ones() -> None:
    # A member's connection accepted in a burst of the flood's: its Hello is in the socket,
    # but the loop has not read it yet. Admission looks into the socket before pushing out.
    adm = AdmissionControl(max_pending=2, grace=30.0)
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        member, silent = Conn(), Conn()
        pairs[0][1].sendall(b"a Hello on its way")
        assert adm.opened("127.0.0.1", member, pairs[0][0]) is None
        assert adm.opened("127.0.0.1", silent, pairs[1][0]) is None
        assert adm.opened("127.0.0.1", Conn(), pairs[2][0]) is silent  # not the oldest
        pairs[2][1].sendall(b"another")
        pairs[3][1].sendall(b"and another")
        # Every young one holds unread bytes: the oldest goes, as without the look.
        assert adm.opened("127.0.0.1", Conn(), pairs[3][0]) is member
    finally:
        for a, b in pairs:
            a.close()
            b.close()
