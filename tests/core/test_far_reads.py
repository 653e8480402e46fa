"""Reads of large objects from another host, end to end: the object lands in the reader's
store byte for byte (under TLS too), and a stream cut midway (its holder killed) fails with
a typed error and leaves nothing reserved in the reader's store.

One machine: a node started with ``RUNTIME_HOST_ID`` set claims another host, so it
streams objects over the mesh rather than mapping their files (tests/hosts does the same
across real network namespaces).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtime
from runtime.core.objects.store import shm_root
from runtime.exceptions import ObjectLostError, OwnerDiedError
from tests.conftest import local_mesh, node_on_another_host, start_head, stop_process
from tests.core.test_tls import make_certificates

MB = 1 << 20
pytestmark = pytest.mark.timeout(120)


def _wait(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.002)


@pytest.fixture
def far_mesh(tmp_path: Path) -> Iterator[None]:
    """A mesh of one one-CPU node, and a node that claims another host (resource "far")."""
    with local_mesh(tmp_path / "mesh", num_cpus=1), node_on_another_host(tmp_path / "far.log"):
        yield


@runtime.remote(num_cpus=0, resources={"far": 1})
def far_read(refs: list[Any]) -> dict[str, Any]:
    """On the far node: read the object; its digest and what this node's store holds."""
    from runtime.core.api.blocking import current_worker

    store = current_worker().store
    try:
        arr = runtime.get(refs[0])
    except (ObjectLostError, OwnerDiedError) as exc:
        return {"error": type(exc).__name__, "text": str(exc), "store": store.stats()}
    return {"sha": hashlib.sha256(arr).hexdigest(), "store": store.stats()}


@runtime.remote(num_cpus=0, resources={"far": 1})
def far_store() -> dict[str, Any]:
    from runtime.core.api.blocking import current_worker

    worker = current_worker()
    return {"node": worker.peer_id, "stats": worker.store.stats()}


class Holder:
    """Makes and owns an object on the mesh's own node (so killing that node cuts it)."""

    def make(self, n: int, seed: int) -> list[Any]:
        arr = np.random.default_rng(seed).integers(0, 255, n, dtype=np.uint8)
        return [runtime.put(arr), hashlib.sha256(arr).hexdigest()]

    def pid(self) -> int:
        return os.getpid()


def test_an_object_read_on_another_host_lands_in_its_store_byte_for_byte(far_mesh: None) -> None:
    holder = runtime.remote(num_cpus=1)(Holder).remote()
    ref, digest = runtime.get(holder.make.remote(40 * MB + 12345, 1))
    seen = runtime.get(far_read.remote([ref]))
    assert seen.get("sha") == digest, seen
    stats = seen["store"]
    assert stats["objects"] == 1 and 40 * MB < stats["used"] < 41 * MB, stats  # one copy kept
    again = runtime.get(far_read.remote([ref]))  # its own copy now: nothing streamed
    assert again["sha"] == digest and again["store"]["used"] == stats["used"]


def test_a_stream_cut_midway_fails_with_a_typed_error_and_leaves_nothing_reserved(
    far_mesh: None,
) -> None:
    holder = runtime.remote(num_cpus=1)(Holder).remote()
    pid = runtime.get(holder.pid.remote())
    assert pid != os.getpid()
    ref, _ = runtime.get(holder.make.remote(256 * MB, 2))
    far = runtime.get(far_store.remote())
    (far_dir,) = glob.glob(os.path.join(shm_root(), f"{far['node']}.*"))
    landing = os.path.join(far_dir, ref.hex() + ".*")
    reading = far_read.remote([ref])
    _wait(lambda: glob.glob(landing), "the far node reserved the object's file")
    os.kill(pid, signal.SIGSTOP)  # the holder freezes midway (its socket buffers hold little)
    try:
        time.sleep(0.2)
        assert glob.glob(landing)
    finally:
        os.kill(pid, signal.SIGKILL)
    seen = runtime.get(reading, timeout=60)
    assert seen.get("error") in ("ObjectLostError", "OwnerDiedError"), seen
    # Nothing kept, nothing counted: the reservation was given back, its file removed.
    assert seen["store"]["used"] == 0 and seen["store"]["objects"] == 0, seen
    assert not glob.glob(landing)
    assert runtime.get(far_store.remote())["stats"]["used"] == 0


TLS_DRIVER = """
import hashlib, json
import numpy as np
import runtime
from runtime.core.api.blocking import current_worker

runtime.init(address={address!r}, token=bytes.fromhex({token!r}))

@runtime.remote(num_cpus=0, resources={{"far": 1}})
def read(refs):
    arr = runtime.get(refs[0])
    stats = current_worker().store.stats()
    return hashlib.sha256(arr).hexdigest(), stats["objects"], stats["used"]

for _ in range(600):  # until the far node has joined (bounded)
    if runtime.cluster_resources().get("far"):
        break
    import time; time.sleep(0.05)
arr = np.random.default_rng(3).integers(0, 255, 24 << 20, dtype=np.uint8)
ref = runtime.put(arr)
sha, objects, used = runtime.get(read.remote([ref]), timeout=60)
print("RESULT", json.dumps([sha == hashlib.sha256(arr).hexdigest(), objects, used]))
runtime.shutdown()
"""


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_an_object_streams_to_another_host_under_tls_too(tmp_path: Path) -> None:
    """Under TLS the frames carry no seals: chunks are read into their place all the same."""
    tls = make_certificates(tmp_path)
    flags = ("--tls-cert", tls["RUNTIME_TLS_CERT"], "--tls-key", tls["RUNTIME_TLS_KEY"],
             "--tls-ca", tls["RUNTIME_TLS_CA"])  # fmt: skip
    head = start_head(tmp_path, *flags, "--num-cpus", "0")
    far = dataclasses.replace(head, env={**head.env, "RUNTIME_HOST_ID": "another-host"})
    node = far.start_node(*flags, "--num-cpus", "1", "--resources", '{"far": 1}')
    try:
        code = TLS_DRIVER.format(address=head.address, token=head.token.hex())
        out = subprocess.run([sys.executable, "-c", code], env={**head.env, **tls},
                             capture_output=True, text=True, timeout=90, check=False)  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
        same, objects, used = json.loads(line[7:])
        assert same and objects == 1 and used > 24 * MB, line  # byte for byte, kept there
    finally:
        stop_process(node)
        stop_process(head.proc)
