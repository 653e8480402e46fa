"""Issue 15, item 3: frames after the handshake are sealed, so an on-path relay that
forwarded a real handshake can neither alter, replay, reorder nor inject a frame.

A real head process; raw.Sealed speaks the protocol by hand with the token (as a member
does), and each attack is what a relay holding the socket, but not the token, can do with
the bytes it forwards: the head drops that connection, logs why, and lives on.
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest

import runtime
from runtime.core.wire import protocol as p
from tests.conftest import HeadProcess

from . import raw

pytestmark = pytest.mark.timeout(60)


def _request(rid: int) -> bytes:
    """A request the head answers with Reply(rid): look up an actor that does not exist."""
    return raw.frame(p.GetActor(rid, "no such actor", "", wait=False))


def _reply(sess: raw.Sealed) -> int:
    msg = raw.recv(sess)
    while not isinstance(msg, p.Reply):  # skip anything else the head says
        msg = raw.recv(sess)
    return msg.rid


def _dropped(sess: raw.Sealed) -> list[int]:
    """Wait until the head closes ``sess``; the rids it answered before that."""
    answered = []
    try:
        while True:
            answered.append(_reply(sess))
    except (ConnectionError, TimeoutError) as exc:
        assert not isinstance(exc, TimeoutError), "the head kept the connection open"
    return answered


def _reason(head: HeadProcess, sess: raw.Sealed, timeout: float = 10.0) -> str:
    """The head's log line about closing ``sess`` (it names our socket address)."""
    host, port = sess.sock.getsockname()[:2]
    marker = f"({host}:{port})"
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in head.log().splitlines() if marker in line]
        if lines:
            return lines[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing about {marker} in the log:\n{head.log()[-3000:]}")
        time.sleep(0.02)


def _assert_head_serves(head: HeadProcess) -> None:
    assert head.proc.poll() is None, head.log()
    # Under another peer id: a peer whose only connection failed counts as gone.
    with raw.session(head.address, head.token, "bystander") as sess:
        sess.sendall(_request(7))
        assert _reply(sess) == 7


class _Trap:
    """Unpickling this creates ``path``: proof that a blob was (or was not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.path,))


def _trap_task(path: Path) -> bytes:
    blob = pickle.dumps(_Trap(path))
    task = p.SubmitTask(b"t" * 16, b"f" * 16, "trap", blob, p.Value(1, blob), 1, {}, "relay", "")
    return raw.frame(task)


def test_sealed_writes_of_one_or_many_frames_are_answered(head: HeadProcess) -> None:
    with raw.session(head.address, head.token) as sess:
        sess.sendall(_request(1))
        assert _reply(sess) == 1
        sess.sendall(_request(2) + _request(3) + _request(4))  # one write, one seal
        assert [_reply(sess) for _ in range(3)] == [2, 3, 4]
        sess.sendall(_request(5))
        assert _reply(sess) == 5


def test_big_writes_are_sealed_too_and_a_flipped_payload_byte_is_caught(
    head: HeadProcess,
) -> None:
    """Writes of 64 KiB and more take AES-GMAC (faster for bulk) instead of BLAKE2b."""
    payload = os.urandom(200_000)
    with raw.session(head.address, head.token) as sess:
        big = raw.frame(p.GetActor(1, "no such actor", "", wait=False), payload)
        write = sess.seal(big)
        assert raw.PREFIX.unpack_from(write, len(big))[1] == 0xFFFFFFFE  # the AES-GMAC mark
        sess.send_unsealed(write)
        assert _reply(sess) == 1
        write = bytearray(sess.seal(big))
        write[150_000] ^= 1  # deep in the payload, which the head would not even read
        sess.send_unsealed(bytes(write))
        assert _dropped(sess) == []
        assert "write 1 failed its integrity check" in _reason(head, sess)
    _assert_head_serves(head)


def test_a_flipped_byte_drops_the_connection_with_the_reason_logged(head: HeadProcess) -> None:
    with raw.session(head.address, head.token) as sess:
        sess.sendall(_request(1))
        assert _reply(sess) == 1
        write = bytearray(sess.seal(_request(2)))
        assert write[10] == 2  # the rid, after the prefix, the array marker and the tag
        write[10] = 3  # still a valid request, for rid 3
        sess.send_unsealed(bytes(write))
        assert _dropped(sess) == []
        line = _reason(head, sess)
    assert "write 1 failed its integrity check" in line, line
    _assert_head_serves(head)


def test_a_replayed_write_drops_the_connection(head: HeadProcess) -> None:
    with raw.session(head.address, head.token) as sess:
        write = sess.seal(_request(1))
        sess.send_unsealed(write)
        assert _reply(sess) == 1
        sess.send_unsealed(write)  # the same bytes again, as a relay would replay them
        assert _dropped(sess) == []
        assert "failed its integrity check" in _reason(head, sess)
    _assert_head_serves(head)


def test_reordered_writes_drop_the_connection(head: HeadProcess) -> None:
    with raw.session(head.address, head.token) as sess:
        first, second = sess.seal(_request(1)), sess.seal(_request(2))
        sess.send_unsealed(second + first)
        assert _dropped(sess) == []  # neither is acted on
        assert "write 0 failed its integrity check" in _reason(head, sess)
    _assert_head_serves(head)


def test_frames_within_one_write_cannot_be_swapped(head: HeadProcess) -> None:
    with raw.session(head.address, head.token) as sess:
        write = sess.seal(_request(1) + _request(2))
        a, b = _request(1), _request(2)
        swapped = b + a + write[len(a) + len(b) :]
        sess.send_unsealed(swapped)
        assert _dropped(sess) == []
    _assert_head_serves(head)


def test_a_task_injected_after_a_real_handshake_never_runs(
    head: HeadProcess, tmp_path: Path
) -> None:
    """The relay attack of the issue: the handshake was a real member's; the relay slips a
    SubmitTask in ahead of the member's next write (or alone, with a made-up seal)."""
    trap = tmp_path / "unpickled"
    with raw.session(head.address, head.token) as sess:
        sess.sendall(_request(1))
        assert _reply(sess) == 1
        sess.send_unsealed(_trap_task(trap) + sess.seal(_request(2)))
        assert _dropped(sess) == []
        assert "integrity check" in _reason(head, sess)
    with raw.session(head.address, head.token) as sess:
        sess.send_unsealed(_trap_task(trap) + raw.PREFIX.pack(20, 0xFFFFFFFF) + os.urandom(16))
        assert _dropped(sess) == []
    assert not trap.exists()
    _assert_head_serves(head)


def test_the_same_task_sealed_does_run(head: HeadProcess, tmp_path: Path) -> None:
    """The control for the test above: sealed with the key, the head unpickles that frame."""
    trap = tmp_path / "unpickled"
    with raw.session(head.address, head.token) as sess:
        sess.sendall(_trap_task(trap))
        deadline = time.monotonic() + 10
        while not trap.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert trap.exists()


def test_a_member_works_through_the_sealed_mesh(head: HeadProcess) -> None:
    runtime.init(address=head.address, token=head.token)
    try:

        @runtime.remote(num_cpus=0)
        class Counter:
            def __init__(self) -> None:
                self.n = 0

            def add(self, k: int) -> int:
                self.n += k
                return self.n

        counter = Counter.remote()
        refs = [counter.add.remote(1) for _ in range(200)]
        assert runtime.get(refs, timeout=30) == list(range(1, 201))
        big = os.urandom(3 * 1024 * 1024)  # a frame of its own on the wire
        assert runtime.get(runtime.put(big), timeout=30) == big
    finally:
        runtime.shutdown()
