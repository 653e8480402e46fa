"""A real head process against hostile or clumsy dialers, spoken to over raw sockets.

Every connection must pass an HMAC challenge-response over the cluster token before
anything but a handshake message is read, nothing is unpickled before that, no length
prefix makes the head allocate, and a bad peer costs its own connection, never the head.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from runtime.core.common.exceptions import AuthenticationError
from runtime.core.wire import protocol as p
from runtime.core.wire.integrity import SEAL_MARK_BIG
from runtime.core.wire.transport import Connection
from tests.security import raw

pytestmark = pytest.mark.timeout(30)

PREFIX = struct.Struct(">II")
IO_TIMEOUT = 10.0


# --- a dialer that speaks the wire protocol by hand ---------------------------------------


def _frame(msg: p._Msg, raw: bytes = b"") -> bytes:
    header = p.encode(msg)
    return PREFIX.pack(4 + len(header) + len(raw), len(header)) + header + raw


def _connect(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=IO_TIMEOUT)


def _recv_exactly(sock: socket.socket | raw.Sealed, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError(f"closed after {len(chunks)} of {n} bytes")
        chunks += chunk
    return bytes(chunks)


def _recv_message(sock: socket.socket | raw.Sealed) -> tuple[p.Message, bytes]:
    """The next message (seal frames skipped: raw.Sealed checks those)."""
    while True:
        body_len, header_len = PREFIX.unpack(_recv_exactly(sock, 8))
        body = _recv_exactly(sock, body_len - 4)
        if header_len < SEAL_MARK_BIG:
            return p.decode(body[:header_len]), body[header_len:]


def _mac(token: bytes, label: bytes, *parts: bytes) -> bytes:
    return hmac.new(token, label + b"".join(parts), hashlib.sha256).digest()


def _dial(
    address: str, token: bytes, peer_id: str = "security-test"
) -> tuple[socket.socket, bool, p.Message]:
    """Run the dialer's side of the handshake with ``token``.

    Returns the socket, whether the head proved it holds ``token`` (in its Welcome: the
    dialer proves first), and the head's verdict on our proof.
    """
    sock = _connect(address)
    nonce = os.urandom(16)
    sock.sendall(_frame(p.Hello(p.PROTOCOL_VERSION, peer_id, nonce)))
    challenge, _ = _recv_message(sock)
    assert isinstance(challenge, p.Challenge), challenge
    assert challenge.mac == b"", "a MAC in the challenge lets anyone test guesses offline"
    proof = _mac(token, b"C", challenge.nonce, nonce, peer_id.encode())
    sock.sendall(_frame(p.Proof(proof)))
    verdict, _ = _recv_message(sock)
    server_mac = _mac(token, b"S", nonce, challenge.nonce, challenge.peer_id.encode())
    head_proved = (
        isinstance(verdict, p.Welcome)
        and hmac.compare_digest(server_mac, verdict.mac)
        and challenge.nonce != nonce
    )
    return sock, head_proved, verdict


def _authenticate(address: str, token: bytes) -> raw.Sealed:
    """A socket past a correct handshake, the head's proof verified too; what is sent on it
    is sealed as the runtime seals its frames (so the head reads it)."""
    return raw.session(address, token, "security-test")


def _assert_closed_by_peer(sock: socket.socket | raw.Sealed) -> None:
    """The peer closes: EOF or a reset within IO_TIMEOUT (anything it sent is skipped)."""
    sock.settimeout(IO_TIMEOUT)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the head kept the connection open for {IO_TIMEOUT}s") from None


def _assert_head_serves(head) -> None:
    """The head is alive and completes a handshake with the cluster token."""
    assert head.proc.poll() is None, head.log()
    with _authenticate(head.address, head.token):
        pass


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class _Trap:
    """Unpickling this creates ``path``: proof that a blob was (or was not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.path,))


def _trap_task(path: Path) -> p.SubmitTask:
    blob = pickle.dumps(_Trap(path))
    args = p.Value(1, blob)  # the arguments would be unpickled too
    return p.SubmitTask(b"t" * 16, b"f" * 16, "trap", blob, args, 1, {}, "attacker", "")


# --- tests ----------------------------------------------------------------------------------


def test_a_dialer_with_the_token_is_welcomed(head) -> None:
    _assert_head_serves(head)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: head\r\n\r\n",
        b"\xff" * 64,
        PREFIX.pack(20, 16) + b"\xc1" * 16,  # a well-sized frame of nonsense
        PREFIX.pack(8, 100),  # a header longer than its frame
    ],
    ids=["http", "ff", "bad-header", "header-past-frame"],
)
def test_garbage_bytes_close_the_connection_and_the_head_lives_on(head, garbage: bytes) -> None:
    with _connect(head.address) as sock:
        sock.sendall(garbage)
        _assert_closed_by_peer(sock)
    _assert_head_serves(head)


def test_a_huge_length_prefix_before_the_handshake_allocates_nothing(head) -> None:
    # The high-water mark catches an allocation even if it was freed again at once.
    peak_before = _memory_kib(head.proc.pid, "VmHWM")
    with _connect(head.address) as sock:
        sock.sendall(PREFIX.pack(2**31 - 1, 16))
        _assert_closed_by_peer(sock)
    assert _memory_kib(head.proc.pid, "VmRSS") < 200 * 1024
    assert _memory_kib(head.proc.pid, "VmHWM") - peak_before < 64 * 1024
    _assert_head_serves(head)


def test_a_frame_over_4096_bytes_before_the_handshake_is_refused(head) -> None:
    hello = p.encode(p.Hello(p.PROTOCOL_VERSION, "x" * 5000, os.urandom(16)))
    with _connect(head.address) as sock:
        sock.sendall(PREFIX.pack(4 + len(hello), len(hello)))  # the prefix alone is enough
        _assert_closed_by_peer(sock)
    _assert_head_serves(head)


def test_a_wrong_token_is_refused_and_the_connection_closed(head) -> None:
    sock, head_proved, verdict = _dial(head.address, b"not the cluster token")
    with sock:
        assert not head_proved
        assert verdict == p.Refused("wrong cluster token")
        _assert_closed_by_peer(sock)
    _assert_head_serves(head)


def test_a_dialer_with_a_wrong_token_fails_with_an_authentication_error(head) -> None:
    async def dial() -> None:
        loop = asyncio.get_running_loop()
        host, _, port = head.address.rpartition(":")
        closed: asyncio.Future[BaseException | None] = loop.create_future()
        _, conn = await loop.create_connection(
            lambda: Connection(
                local_id="intruder",
                token=b"not the cluster token",
                on_message=lambda *_: None,
                on_close=lambda _, exc: closed.set_result(exc),
                dialer=True,
            ),
            host,
            int(port),
        )
        async with asyncio.timeout(IO_TIMEOUT):
            with pytest.raises(AuthenticationError, match="wrong cluster token"):
                await conn.authenticated
            assert isinstance(await closed, AuthenticationError)

    asyncio.run(dial())
    _assert_head_serves(head)


def test_another_protocol_version_is_refused(head) -> None:
    with _connect(head.address) as sock:
        sock.sendall(_frame(p.Hello(p.PROTOCOL_VERSION + 1, "future", os.urandom(16))))
        verdict, _ = _recv_message(sock)
        assert isinstance(verdict, p.Refused)
        assert str(p.PROTOCOL_VERSION + 1) in verdict.reason
        _assert_closed_by_peer(sock)
    _assert_head_serves(head)


def test_a_task_before_the_handshake_is_dropped_unread(head, tmp_path: Path) -> None:
    # The trap is live: unpickling its blob here does create the file.
    armed = tmp_path / "armed"
    pickle.loads(_trap_task(armed).fn_blob or b"")
    assert armed.exists()

    trap = tmp_path / "unpickled-before-the-handshake"
    frame = _frame(_trap_task(trap))
    assert len(frame) <= 4096  # small enough to be read before the handshake
    with _connect(head.address) as sock:
        sock.sendall(frame)
        _assert_closed_by_peer(sock)
    _assert_head_serves(head)
    assert not trap.exists()


def test_a_task_between_hello_and_proof_is_dropped_unread(head, tmp_path: Path) -> None:
    trap = tmp_path / "unpickled-during-the-handshake"
    with _connect(head.address) as sock:
        sock.sendall(_frame(p.Hello(p.PROTOCOL_VERSION, "sly", os.urandom(16))))
        challenge, _ = _recv_message(sock)
        assert isinstance(challenge, p.Challenge)
        sock.sendall(_frame(_trap_task(trap)))
        _assert_closed_by_peer(sock)
    _assert_head_serves(head)
    assert not trap.exists()


def test_the_same_task_is_unpickled_once_authenticated(head, tmp_path: Path) -> None:
    """The control for the two tests above: their frame is one the head would act on."""
    trap = tmp_path / "unpickled-after-the-handshake"
    with _authenticate(head.address, head.token) as sock:
        sock.sendall(_frame(_trap_task(trap)))
        done, _ = _recv_message(sock)
        while not isinstance(done, p.TaskDone):  # skip anything else the head says
            done, _ = _recv_message(sock)
        assert done.error is not None  # what the trap unpickles to is not callable
    assert trap.exists()


@pytest.mark.parametrize(
    "header",
    [
        msgspec.msgpack.encode([99, "who knows"]),  # an unknown message type
        msgspec.msgpack.encode([10, "not an int"]),  # a Reply with a text rid
        p.encode(p.Hello(p.PROTOCOL_VERSION, "again", os.urandom(16))),  # a second handshake
        p.encode(p.Reply(1))[:-1] + b"\x91" * 100_000 + b"\xc0",  # nested past any sane depth
    ],
    ids=["unknown-type", "wrong-type", "second-hello", "deeply-nested"],
)
def test_a_bad_message_after_the_handshake_closes_only_that_connection(head, header: bytes) -> None:
    with _authenticate(head.address, head.token) as bystander:
        with _authenticate(head.address, head.token) as sock:
            sock.sendall(PREFIX.pack(4 + len(header), len(header)) + header)
            _assert_closed_by_peer(sock)
        assert head.proc.poll() is None, head.log()
        # The other authenticated connection still works: a request gets its answer.
        bystander.sendall(_frame(p.GetActor(1, "no such actor", "", wait=False)))
        reply, _ = _recv_message(bystander)
        assert isinstance(reply, p.Reply)
        assert reply.rid == 1
    _assert_head_serves(head)


@pytest.mark.timeout(60)
def test_a_head_on_a_public_address_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RUNTIME_AUTH_TOKEN", "RUNTIME_AUTH_TOKEN_FILE")
    }
    env["RUNTIME_TMPDIR"] = str(tmp_path)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.node", "--head", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode != 0
    assert "token" in proc.stderr.lower()
    assert time.monotonic() - started < 30
    assert not (tmp_path / "head.json").exists()


def test_a_host_that_keeps_failing_the_token_check_is_slowed_down(head) -> None:
    for _ in range(20):
        sock, _, verdict = _dial(head.address, b"guess")
        sock.close()
        assert verdict == p.Refused("wrong cluster token")
    start = time.monotonic()
    sock, _, verdict = _dial(head.address, b"guess again")
    sock.close()
    assert time.monotonic() - start >= 0.9  # the head waited before it answered
    # The real token still gets in (only later).
    _assert_head_serves(head)


def test_admission_pushes_out_the_oldest_handshake_and_tracks_failures() -> None:
    from runtime.core.wire.admission import AdmissionControl

    class Conn:
        def __init__(self) -> None:
            self.aborted = False

        def abort(self, exc: BaseException | None = None, *, flush: bool = False) -> None:
            self.aborted = True

    adm = AdmissionControl(max_pending=2, max_failures=3, window=10.0, delay=1.0)
    a, b, c = Conn(), Conn(), Conn()
    assert adm.opened("h", a) is None
    assert adm.opened("h", b) is None
    assert adm.opened("h", c) is a  # the oldest goes; the newcomer is served
    adm.settled("h", b)
    assert adm.opened("h", Conn()) is None
    assert adm.opened("other", Conn()) is None  # bounds are per host
    for t in (0.0, 1.0, 2.0):
        assert adm.hello_delay("h", now=t) == 0.0
        adm.failed("h", now=t)
    assert adm.hello_delay("h", now=3.0) == 1.0
    assert adm.hello_delay("h", now=12.5) == 0.0  # the failures aged out of the window
