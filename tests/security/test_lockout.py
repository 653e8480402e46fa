"""Issue 15, item 2 (part): a flood from a host without the token does not keep token
holders out. Wrong proofs (enough to trigger the slowdown) and a stream of idle connections
from 127.0.0.1, while 8 token-holding clients handshake from the same address: every one of
them gets in (the slowdown now applies to wrong proofs only, and idle connections are pushed
out before half-way handshakes)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from runtime.core.wire import protocol as p
from tests.conftest import HeadProcess

from . import raw

pytestmark = pytest.mark.timeout(60)


def test_a_flood_without_the_token_does_not_lock_out_token_holders(head: HeadProcess) -> None:
    wrong = os.urandom(32)
    with ThreadPoolExecutor(25) as pool:  # past the 20 failures that trigger the slowdown
        refusals = list(pool.map(lambda _: raw.handshake(head.address, wrong), range(25)))
    assert all(isinstance(r, p.Refused) for r in refusals)
    host, _, port = head.address.rpartition(":")
    stop = threading.Event()
    idle: list[socket.socket] = []

    def flood() -> None:  # ~400 idle connections, more than the 256 pending slots
        while not stop.is_set() and len(idle) < 400:
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection((host, int(port)), timeout=5))

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            verdicts = list(pool.map(lambda _: raw.handshake(head.address, head.token), range(8)))
    finally:
        stop.set()
        flooder.join()
        for s in idle:
            s.close()
    assert all(isinstance(v, p.Welcome) for v in verdicts), verdicts
