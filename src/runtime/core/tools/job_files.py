"""Files of the job manager: unpacking a job's working directory, reading its log, signalling
its process group, and finding the node's state directory and token file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import tempfile
import zipfile


def is_dir(path: str) -> bool:
    return os.path.isdir(path)  # a stat of a local directory: does not block the loop for long


def read_chunk(path: str, offset: int, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, offset))
            return f.read(limit)
    except OSError:
        return b""


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


#: The most a job's working_dir package may hold unpacked (``RUNTIME_MAX_WORKING_DIR_BYTES``
#: overrides), and the most it may expand beyond 64 MiB per byte sent: a 300 KB zip once
#: expanded to 300 MB.
DEFAULT_MAX_UNPACKED = 1 << 30
MAX_RATIO = 100
MAX_MEMBERS = 100_000


def check_package(zf: zipfile.ZipFile, packed: int) -> None:
    """Refuse a package whose unpacked size or member count is out of bounds (before any
    byte is written; zipfile stops each member at its declared size and checks its CRC)."""
    members = zf.infolist()
    total = sum(m.file_size for m in members)
    cap = int(os.environ.get("RUNTIME_MAX_WORKING_DIR_BYTES") or DEFAULT_MAX_UNPACKED)
    limit = min(cap, MAX_RATIO * packed + (64 << 20))
    if len(members) > MAX_MEMBERS or total > limit:
        raise ValueError(
            f"the working directory package unpacks to {total} bytes in {len(members)} files "
            f"from {packed} bytes; the limit is {limit} bytes (at most {cap}, "
            f"RUNTIME_MAX_WORKING_DIR_BYTES) and {MAX_MEMBERS} files"
        )


def extract_package(blob: bytes, pkg_hash: str, dest: str) -> None:
    if hashlib.sha256(blob).hexdigest() != pkg_hash:
        raise ValueError("the working directory package does not match its hash")
    tmp = tempfile.mkdtemp(prefix=".unpack-", dir=os.path.dirname(dest))
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            check_package(zf, len(blob))
            for member in zf.infolist():
                path = zf.extract(member, tmp)
                mode = (member.external_attr >> 16) & 0o777
                if mode and not member.is_dir():
                    os.chmod(path, mode)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not os.path.isdir(dest):  # not lost to a concurrent unpack of the same hash
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def node_state_dir() -> str:
    """The state directory of the node process this runs in (``RUNTIME_NODE_STATE_DIR``, set
    by ``python -m runtime.node``), else the one its head file records, else a fresh directory
    under the runtime's base directory."""
    state = os.environ.get("RUNTIME_NODE_STATE_DIR")
    if state:
        return state
    base = os.environ.get("RUNTIME_TMPDIR") or os.path.join(
        tempfile.gettempdir(), f"runtime-{os.getuid()}"
    )
    with contextlib.suppress(OSError, ValueError, TypeError):
        with open(os.path.join(base, "head.json")) as f:
            head = json.load(f)
        if int(head.get("pid", 0)) == os.getpid() and os.path.isdir(head["state_dir"]):
            return str(head["state_dir"])
    os.makedirs(base, mode=0o700, exist_ok=True)
    return tempfile.mkdtemp(prefix="jobs_", dir=base)


def node_token_file(state_dir: str) -> str | None:
    """A file with the cluster token for the drivers: the node's ``--token-file``, its
    ``RUNTIME_AUTH_TOKEN_FILE``, or the token its head wrote in the state directory."""
    for candidate in (
        os.environ.get("RUNTIME_NODE_TOKEN_FILE"),
        os.environ.get("RUNTIME_AUTH_TOKEN_FILE"),
        os.path.join(state_dir, "token"),
    ):
        if candidate and os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None
