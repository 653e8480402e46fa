"""The wire protocol: every message two peers exchange, as one tagged union of structs.

A frame is ``[u32 body length][u32 header length][msgpack header][raw buffers...]``.
The header is one of the structs below, encoded by msgspec as a tagged array. The raw
buffers that follow it are the out-of-band buffers (pickle protocol 5) of the user
values the message carries, in the order the values appear; each :class:`Value`
records the sizes of its own buffers, so big numpy arrays are never re-encoded.

Decoding is strict: an unknown tag, a missing or extra field, or a wrong type raises
:class:`~runtime.core.common.exceptions.ProtocolError` and the connection is closed.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ..common.errors import error_class
from ..common.exceptions import ProtocolError, RuntimeBaseError
from .groups import CreatePlacementGroup as CreatePlacementGroup  # noqa: PLC0414 (re-exported)
from .groups import PlacementGroupSpec as PlacementGroupSpec  # noqa: PLC0414 (re-exported)
from .groups import ReleaseBundles as ReleaseBundles  # noqa: PLC0414 (re-exported)
from .groups import RemovePlacementGroup as RemovePlacementGroup  # noqa: PLC0414 (re-exported)
from .groups import ReserveBundles as ReserveBundles  # noqa: PLC0414 (re-exported)
from .groups import WaitPlacementGroup as WaitPlacementGroup  # noqa: PLC0414 (re-exported)
from .msgbase import _Msg as _Msg  # noqa: PLC0414 (re-exported)
from .observe import Inspect as Inspect  # noqa: PLC0414 (re-exported)
from .observe import ListObjects as ListObjects  # noqa: PLC0414 (re-exported)
from .observe import ListTasks as ListTasks  # noqa: PLC0414 (re-exported)
from .observe import ReadMetrics as ReadMetrics  # noqa: PLC0414 (re-exported)

#: 3: frames after the handshake are sealed (see integrity.py) unless TLS is on; 4: big
#: writes are sealed with AES-GMAC instead of HMAC-SHA256; 5: calls, tasks and answers sent
#: in one loop pass travel in one frame (CallBatch, SubmitBatch, DoneBatch), and actors are
#: created in batches (CreateActors, ActorsPlaced).
PROTOCOL_VERSION: Final = 5
#: Largest frame a peer may send; checked before anything is allocated for it.
MAX_FRAME_SIZE: Final = 1 << 31
PREFIX_SIZE: Final = 8


# --- user values -------------------------------------------------------------------


# ``gc=False`` on the structs made per call (a value, a call, a task, an answer): they hold
# only bytes, numbers, strings and lists of those, so they are never part of a cycle, and the
# collector need not track (and scan) the thousands of them a pipelined caller keeps alive.


class Value(msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=100, gc=False):
    """A serialized user value: ``kind`` says how ``data`` is encoded (see _serialization).

    ``bufs`` are the sizes of the value's out-of-band buffers that follow the header.
    ``refs`` lists the object refs nested in the value: (object id, owner id, owner address).
    """

    kind: int
    data: bytes
    bufs: list[int] = []
    refs: list[tuple[bytes, str, str]] = []


class Located(msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=101):
    """A value that stays in the store of ``node_id`` (at ``address``) until fetched.

    ``host`` names the machine of that store; a reader on the same host maps ``segment``
    (its shared-memory or spill file) instead of fetching bytes, and asks the node again
    (``FetchObject(same_host=True)``) if the file has moved.
    """

    node_id: str
    address: str
    size: int
    host: str = ""
    segment: str = ""


# --- handshake (the only messages accepted before authentication) ------------------


class Hello(_Msg, tag=1):
    version: int
    peer_id: str
    nonce: bytes
    #: The dialer's admission ticket (``admission.make_ticket``); empty: none.
    ticket: bytes = b""


class Challenge(_Msg, tag=2):
    peer_id: str
    nonce: bytes
    #: Empty since version 2: the dialer proves first, so that a Challenge gives an attacker
    #: nothing to test token guesses against offline.
    mac: bytes = b""


class Proof(_Msg, tag=3):
    mac: bytes


class Welcome(_Msg, tag=4):
    #: The head's proof, sent only after the dialer's proof passed (mutual authentication).
    mac: bytes = b""


class Refused(_Msg, tag=5):
    reason: str


# --- generic replies ----------------------------------------------------------------


class Reply(_Msg, tag=10):
    """Answer to a request carrying ``rid``: ``error`` set, or ``value`` (msgpack data)."""

    rid: int
    error: str | None = None
    error_type: str | None = None  # the class name, for the message of an unknown code
    value: Any = None
    code: int = 0  # the ErrorCode of ``error``: what the receiver raises


# --- control plane (to and from the head) -------------------------------------------


class NodeInfo(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    node_id: str
    address: str
    is_driver: bool
    resources: dict[str, float]
    available: dict[str, float]
    pid: int
    alive: bool = True
    labels: dict[str, str] = {}
    reserved: dict[str, float] = {}
    #: The host this process belongs to: processes of one host share ``resources`` (the
    #: host's), ``available`` and ``reserved`` (docs/core.md, the resource model).
    host_id: str = ""
    #: The CPU this process runs at once (its share of the host's CPUs); 0: no limit.
    slot: float = 0.0
    #: What this process holds now, and the CPU it holds for long (actors, bundles).
    used: dict[str, float] = {}
    pinned: float = 0.0
    #: Leaving on SIGTERM: no new work is placed here (docs/deploy.md, drain).
    draining: bool = False


class NodeLoad(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """What changes of a member with its load (``NodeInfo``'s fields of the same names)."""

    node_id: str
    available: dict[str, float]
    reserved: dict[str, float] = {}
    used: dict[str, float] = {}
    pinned: float = 0.0


class RegisterNode(_Msg, tag=20):
    rid: int
    info: NodeInfo


class ClusterView(_Msg, tag=21):
    """The head's view of the members, pushed to members when it changes; ``departed``:
    members that left or were declared dead lately (absence alone means nothing: a
    restarted head does not know every node yet). ``base`` < 0: the whole view (on joining,
    or after a gap), replacing what the member had; else a delta: the members that changed
    and those that left since version ``base``, which the member applies only when it holds
    ``base`` (``control.views``). ``version``: the view's version after it. ``loads``
    (with ``base`` -2, a refresh): the load of members whose availability changed, applied
    to the entries the member has, whatever its version."""

    nodes: list[NodeInfo]
    departed: list[str] = []
    version: int = 0
    base: int = -1
    loads: list[NodeLoad] = []


class ViewResync(_Msg, tag=34):
    """Member -> head: a view delta did not start from the version ``have`` this member
    holds (it missed one): send the whole view."""

    have: int


class ReportResources(_Msg, tag=22):
    node_id: str
    available: dict[str, float]
    #: Held for long by actors and placement group bundles (tasks cannot count on it).
    reserved: dict[str, float] = {}
    #: What the reporting process itself holds now, and the CPU it holds for long.
    used: dict[str, float] = {}
    pinned: float = 0.0


class ActorSpec(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    actor_id: bytes
    class_name: str
    cls_id: bytes
    cls_blob: bytes
    args: Value
    resources: dict[str, float]
    owner_id: str
    name: str | None = None
    namespace: str = ""
    detached: bool = False
    max_concurrency: int = 1
    is_async: bool = False
    strategy: Any = None
    max_pending_calls: int = -1
    max_restarts: int = 0
    max_task_retries: int = 0
    runtime_env: Any = None
    concurrency_groups: dict[str, int] = {}
    #: In a node process of its own (``dedicated_process=True``): its crash takes nothing
    #: else down. A list names modules that process finds imported (forked from a zygote).
    dedicated: bool | list[str] = False
    #: ``max_concurrency=1`` given: a thread of its own, not a strand (execution.hosted).
    own_thread: bool = False


class CreateActor(_Msg, tag=23):
    """Driver/node -> head: place this actor; head -> node: start it here."""

    rid: int
    spec: ActorSpec
    get_if_exists: bool = False


class CreateActors(_Msg, tag=38):
    """CreateActor for many (control.actors): each class blob once, in ``blobs`` by class id
    (a spec with an empty ``cls_blob`` takes its class's); a Reply with one item per spec."""

    rid: int
    specs: list[ActorSpec]
    blobs: dict[bytes, bytes] = {}
    get_if_exists: list[bool] = []


class ActorsPlaced(_Msg, tag=39):
    """Head -> the creator of these actors: they left PENDING (ALIVE, or DEAD)."""

    locations: list[ActorLocation]


class GetActor(_Msg, tag=24):
    """Look an actor up by name (in a namespace) or by id; ``wait`` until it is placed."""

    rid: int
    name: str
    namespace: str
    actor_id: bytes = b""
    wait: bool = False
    #: Also wait while the actor has restarted no more than this many times (-1: don't).
    after_restarts: int = -1


class KillActor(_Msg, tag=25):
    rid: int
    actor_id: bytes
    no_restart: bool = True
    reason: str = ""  # why (for the actor's death cause); "" means runtime.kill


class ActorGone(_Msg, tag=26):
    """Node -> head: the actor stopped (killed, constructor failed, or exited)."""

    actor_id: bytes
    reason: str
    error: Value | None = None


class ListState(_Msg, tag=27):
    rid: int
    what: str


class KvOp(_Msg, tag=28):
    rid: int
    op: str
    namespace: str
    key: str
    value: bytes | None = None
    overwrite: bool = True


class StopCluster(_Msg, tag=29):
    rid: int


class DrainNode(_Msg, tag=33):
    """Node -> head: this node is leaving; place no new work on it."""

    rid: int
    node_id: str


class Shutdown(_Msg, tag=30):
    """Head -> node: stop now (``evicted``: you were declared dead; rejoin as a new node)."""

    reason: str
    evicted: bool = False


class Heartbeat(_Msg, tag=31):
    """Node -> head, on the node's heartbeat channel: still alive."""

    node_id: str
    seq: int


class LogLines(_Msg, tag=32):
    """Output of tasks on node ``node_id``: (who printed it, line, on stderr)."""

    node_id: str
    lines: list[tuple[str, str, bool]]


class ActorLocation(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    actor_id: bytes
    node_id: str
    address: str
    state: str
    class_name: str
    name: str | None
    namespace: str
    max_concurrency: int
    is_async: bool
    death_cause: str | None = None
    death_error: Value | None = None
    max_restarts: int = 0
    max_task_retries: int = 0
    num_restarts: int = 0


# --- tasks and actor calls ----------------------------------------------------------


#: ``num_returns`` of a generator task or method whose items stream back (StreamItem).
STREAMING = -1


class SubmitTask(_Msg, tag=40, gc=False):
    """Run function ``fn_id`` (pickled in ``fn_blob`` the first time a peer sees it)."""

    task_id: bytes
    fn_id: bytes
    fn_name: str
    fn_blob: bytes | None
    args: Value
    num_returns: int
    resources: dict[str, float]
    owner_id: str
    owner_address: str
    #: Streaming: how many items may wait unconsumed before the generator pauses.
    stream_window: int = 0
    #: Placement group bundle to run in: (group id, bundle index or -1 for any), or None.
    bundle: tuple[bytes, int] | None = None
    #: The scheduling strategy as the submitter places it (["spread"], ["node", id, soft]).
    strategy: Any = None
    #: runtime_env in wire form (see _runtime_env.prepare), or None.
    runtime_env: Any = None
    #: Which try this is: (task_id, attempt) is the idempotency key of a task.
    attempt: int = 0
    #: How often nodes sent it back (their free capacity was held by actors or bundles).
    spills: int = 0
    #: The tasks and actors it submits with no strategy go to its placement group too.
    capture: bool = False


class CallActor(_Msg, tag=41, gc=False):
    task_id: bytes
    actor_id: bytes
    method: str
    args: Value
    num_returns: int
    owner_id: str
    owner_address: str
    stream_window: int = 0
    #: The caller's thread blocks on it (the first call since it last blocked): the callee
    #: answers it from the thread that runs it (``execution.calls.answer_now``).
    blocked: bool = False


class TaskDone(_Msg, tag=42, gc=False):
    """The results of task ``task_id``: one entry per return, or an error for all."""

    task_id: bytes
    returns: list[Value | Located] = []
    error: Value | None = None


class CallBatch(_Msg, tag=47, gc=False):
    """Actor calls sent in one loop pass to one peer, in order (``wire.gather``); the raw
    buffers of each call's arguments follow the header in the same order."""

    calls: list[CallActor]


class SubmitBatch(_Msg, tag=48, gc=False):
    """Tasks sent in one loop pass to one peer, in order (as :class:`CallBatch`)."""

    tasks: list[SubmitTask]


class DoneBatch(_Msg, tag=49, gc=False):
    """Answers sent in one loop pass to one peer, in order; the raw buffers of each answer's
    returns follow the header in the same order."""

    done: list[TaskDone]


class StreamItem(_Msg, tag=43):
    """Item ``index`` (from 1) of streaming task ``task_id``, sent to its owner as produced."""

    task_id: bytes
    index: int
    value: Value | Located


class StreamAck(_Msg, tag=44):
    """To the node running a streaming task: the owner consumed items up to ``consumed``."""

    task_id: bytes
    consumed: int


class LendResources(_Msg, tag=46):
    """A runtime_env process to the node that relayed it task ``task_id``: the task blocks in
    get() (``lent``: its resources may serve others meanwhile), or runs again."""

    task_id: bytes
    lent: bool


class CancelTask(_Msg, tag=45):
    """To the node running task ``task_id``: cancel it (and the tasks it submitted)."""

    task_id: bytes
    force: bool = False
    recursive: bool = True


# --- objects ---------------------------------------------------------------------------


class GetObject(_Msg, tag=50):
    """Ask the owner for an object; it answers with ObjectReply when the object is ready.
    ``lost``: the borrower could not read it where the owner said it was (the owner makes
    it again from its lineage when that holder lost it)."""

    rid: int
    object_id: bytes
    lost: Located | None = None
    #: The asker's store host (``Located.host``): a copy there is mapped, not fetched.
    host: str = ""


class FetchObject(_Msg, tag=51):
    """Ask the node holding an object for its bytes.

    ``offset >= 0``: bytes [offset, offset + length) of the object's blob, answered with an
    ObjectReply whose Value (kind 3, data: the blob's total size) carries them as one buffer;
    ``same_host``: where its file is now, answered with a Located.
    """

    rid: int
    object_id: bytes
    offset: int = -1
    length: int = 0
    same_host: bool = False


class ObjectReply(_Msg, tag=52):
    rid: int
    value: Value | Located | None = None
    error: Value | None = None


class UpdateRefs(_Msg, tag=53):
    """To an object's owner: changes to the counts of remote holders, applied in order."""

    deltas: list[tuple[bytes, int]]


class ObjectCopied(_Msg, tag=54):
    """To an object's owner: the sender fetched the object from another host and keeps a
    copy (``location``; None: it keeps none), which the owner may give other readers and
    frees with the object."""

    object_id: bytes
    location: Located | None


class FreeObjects(_Msg, tag=55):
    object_ids: list[bytes]


class Unmapped(_Msg, tag=57):
    """To the node holding these objects: a reader on its host no longer maps their files."""

    object_ids: list[bytes]


HandshakeMessage = Hello | Challenge | Proof | Welcome | Refused
Message = (
    Hello
    | Challenge
    | Proof
    | Welcome
    | Refused
    | Reply
    | RegisterNode
    | ClusterView
    | ViewResync
    | ReportResources
    | CreateActor
    | CreateActors
    | ActorsPlaced
    | GetActor
    | KillActor
    | ActorGone
    | ListState
    | KvOp
    | StopCluster
    | DrainNode
    | Shutdown
    | Heartbeat
    | LogLines
    | SubmitTask
    | CallActor
    | TaskDone
    | CallBatch
    | SubmitBatch
    | DoneBatch
    | StreamItem
    | StreamAck
    | LendResources
    | CancelTask
    | GetObject
    | FetchObject
    | ObjectReply
    | UpdateRefs
    | FreeObjects
    | ListObjects
    | ListTasks
    | ReadMetrics
    | Unmapped
    | ObjectCopied
    | Inspect
    | CreatePlacementGroup
    | WaitPlacementGroup
    | RemovePlacementGroup
    | ReserveBundles
    | ReleaseBundles
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)
_hs_decoder: msgspec.msgpack.Decoder[HandshakeMessage] = msgspec.msgpack.Decoder(HandshakeMessage)


def encode(msg: _Msg) -> bytes:
    """Encode a message header."""
    return _encoder.encode(msg)


def decode(data: bytes | memoryview, *, handshake: bool = False) -> Message:
    """Decode a header strictly; raise ProtocolError on anything unexpected."""
    try:
        if handshake:
            return _hs_decoder.decode(data)
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    except RecursionError:
        raise ProtocolError("malformed message: nested too deeply") from None
    except UnicodeDecodeError as exc:  # msgspec raises it for a str that is not UTF-8
        raise ProtocolError(f"malformed message: {exc}") from None


def unwrap_reply(reply: Reply) -> Any:
    """The value of a Reply, or the error it carries raised with its original type."""
    if reply.error is None:
        return reply.value
    cls = error_class(reply.code)
    if cls is not None:
        raise cls(reply.error)
    raise RuntimeBaseError(f"{reply.error_type}: {reply.error}")
