"""The few lines a client and the head's relay exchange before a relayed connection carries
the mesh's own bytes: the relay's greeting (a fresh nonce), the client's request with its
proof of the cluster token (an HMAC over the nonce and the request), the relay's answer.

::

    relay  -> client   RUNTIME-CLIENT 1 <nonce hex>
    client -> relay    <verb> [args...] <hmac hex>     REGISTER | DIAL HOST:PORT | ACCEPT SID N
    relay  -> client   OK [args...]  |  ERR <reason>

After ``OK`` to ``DIAL`` or ``ACCEPT`` the connection is a pipe to the member; after ``OK`` to
``REGISTER`` it stays a control line on which the relay says ``ACCEPT N`` for each connection
a member opened to the client's relayed address.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

GREETING: Final = "RUNTIME-CLIENT 1"
#: Longest line either side sends (a request names one address): longer is refused.
MAX_LINE: Final = 512
#: Bound on each step of the exchange (seconds).
TIMEOUT_S: Final = 10.0
VERBS: Final = ("REGISTER", "DIAL", "ACCEPT")


def proof(token: bytes, nonce: bytes, request: str) -> str:
    """The client's proof that it holds ``token``, bound to this nonce and this request."""
    msg = b"runtime-client-relay\0" + nonce + b"\0" + request.encode()
    return hmac.new(token, msg, hashlib.sha256).hexdigest()


def signed(token: bytes, nonce: bytes, request: str) -> bytes:
    """The request line the client sends."""
    return f"{request} {proof(token, nonce, request)}\n".encode()


def check(token: bytes, nonce: bytes, line: str) -> list[str] | None:
    """The request's words if ``line`` carries a valid proof, else None."""
    request, _, mac = line.rstrip("\n").rpartition(" ")
    words = request.split()
    if not words or words[0] not in VERBS:
        return None
    if not hmac.compare_digest(proof(token, nonce, request), mac):
        return None
    return words
