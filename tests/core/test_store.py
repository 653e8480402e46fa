"""The object store: large objects in shared memory, mapped (not copied) by readers on the
same host, streamed in chunks to readers on another host, and gone when freed.

Zero-copy is checked by measurement in the receiving process: the array's memory lies
inside a mapping of the producer's /dev/shm file (read from /proc/self/maps), and the
receiver's private memory (RssAnon) does not grow by the array's size.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import runtime
from runtime.core.api import state as _state
from runtime.core.api.blocking import current_worker
from runtime.core.objects import blob
from runtime.core.objects.store import shm_root
from tests.conftest import cli_json, local_mesh, node_on_another_host

MB = 1 << 20
pytestmark = pytest.mark.timeout(90)


def mapping_of(address: int) -> str:
    """The file mapped at ``address`` in this process ('' for anonymous memory)."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= address < hi:
                return parts[5] if len(parts) > 5 else ""
    raise AssertionError(f"address {address:#x} is not mapped")


def rss_anon() -> int:
    """Private (anonymous) resident memory of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def describe(arr: Any) -> dict[str, Any]:
    """What a receiver reports about an array it got."""
    return {
        "path": mapping_of(arr.ctypes.data),
        "writeable": bool(arr.flags.writeable),
        "sum": int(arr.sum(dtype=np.int64)),
        "nbytes": int(arr.nbytes),
        "rss_anon": rss_anon(),
        "pid": os.getpid(),
    }


class Probe:
    """A one-CPU actor: two of them on a two-node mesh live on different nodes."""

    def rss_anon(self) -> int:
        return rss_anon()

    def node(self) -> str:
        return runtime.get_runtime_context().get_node_id()

    def look(self, arr: Any) -> dict[str, Any]:
        return describe(arr)

    def make(self, n: int, fill: int) -> Any:
        return np.full(n, fill, dtype=np.uint8)

    def digest(self, arr: Any) -> str:
        return hashlib.sha256(arr).hexdigest()

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def keep(self, arr: Any) -> int:
        self.kept = arr
        return int(arr[0])

    def kept_sum(self) -> int:
        return int(self.kept.sum(dtype=np.int64))


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    with local_mesh(tmp_path_factory.mktemp("store"), num_cpus=2):
        cls = runtime.remote(num_cpus=1)(Probe)
        a, b = cls.remote(), cls.remote()
        assert runtime.get(a.node.remote()) != runtime.get(b.node.remote())
        yield a, b


def wait_until(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


def test_put_get_maps_the_segment_in_the_driver(probes: tuple[Any, Any]) -> None:
    arr = np.arange(8 * MB // 8, dtype=np.int64)
    ref = runtime.put(arr)
    before = rss_anon()
    got = runtime.get(ref)
    assert not got.flags.writeable
    path = mapping_of(got.ctypes.data)
    assert path.startswith(shm_root()), path
    assert rss_anon() - before < arr.nbytes // 4
    assert np.array_equal(got, arr)
    arr[0] = -1  # put copied: the stored value does not change with the caller's array
    assert runtime.get(ref)[0] == 0


def test_array_passed_to_another_node_is_mapped_not_copied(probes: tuple[Any, Any]) -> None:
    a, _ = probes
    arr = np.ones(64 * MB, dtype=np.uint8)
    base = runtime.get(a.rss_anon.remote())
    seen = runtime.get(a.look.remote(arr))  # large argument: put once, passed by ref
    assert seen["pid"] != os.getpid()
    assert seen["path"].startswith(shm_root()), seen
    assert current_worker().peer_id in seen["path"]  # the driver's segment, mapped there
    assert not seen["writeable"]
    assert seen["sum"] == arr.nbytes
    growth = seen["rss_anon"] - base
    assert growth < arr.nbytes // 4, f"the receiver's private memory grew by {growth} bytes"


def test_result_read_by_another_node_maps_the_producers_segment(probes: tuple[Any, Any]) -> None:
    a, b = probes
    ref = a.make.remote(32 * MB, 3)
    base = runtime.get(b.rss_anon.remote())
    seen = runtime.get(b.look.remote(ref))
    node_a = runtime.get(a.node.remote())
    assert seen["path"].startswith(shm_root()) and node_a in seen["path"], seen
    assert not seen["writeable"] and seen["sum"] == 3 * 32 * MB
    assert seen["rss_anon"] - base < 8 * MB
    local = runtime.get(ref)  # the driver maps it too
    assert node_a in mapping_of(local.ctypes.data) and not local.flags.writeable


def test_freed_objects_leave_no_segment(probes: tuple[Any, Any]) -> None:
    a, b = probes
    ref = a.make.remote(4 * MB, 1)
    path = runtime.get(b.look.remote(ref))["path"]
    assert runtime.get(a.exists.remote(path))
    del ref  # the owner (this driver) frees it: the node holding it unlinks the file
    wait_until(lambda: not runtime.get(a.exists.remote(path)), f"{path} is removed")

    put_ref = runtime.put(np.zeros(4 * MB, dtype=np.uint8))
    put_path = runtime.get(b.look.remote(put_ref))["path"]  # read elsewhere: never reused
    assert os.path.exists(put_path)
    del put_ref
    wait_until(lambda: not os.path.exists(put_path), f"{put_path} is removed")


def test_list_objects_shows_what_pins_memory(probes: tuple[Any, Any]) -> None:
    a, _ = probes
    put_ref = runtime.put(np.zeros(2 * MB, dtype=np.uint8))
    small = runtime.put(b"x")
    result = a.make.remote(3 * MB, 2)
    runtime.get(result)
    me = current_worker().peer_id
    node_a = runtime.get(a.node.remote())
    rows = {r["object_id"]: r for r in _state.list_state("objects")}
    r = rows[put_ref.hex()]
    assert r["owner"] == me and r["stored_on"] == me and r["where"] == "shm"
    assert r["size"] >= 2 * MB and r["local_refs"] == 1
    assert rows[small.hex()]["where"] == "inline"
    r = rows[result.hex()]
    assert r["owner"] == me and r["stored_on"] == node_a and r["where"] == "shm"

    # The CLI, from another process, sees the same table.
    rows_out = cli_json("list", "objects")
    assert isinstance(rows_out, list)
    listed = {r["object_id"]: r for r in rows_out}
    assert listed[put_ref.hex()]["owner"] == me
    assert listed[result.hex()]["where"] == "shm"


@pytest.fixture
def far_node(probes: tuple[Any, Any], tmp_path: Any) -> Iterator[None]:
    """A node of the same mesh that claims to be on another host (RUNTIME_HOST_ID)."""
    with node_on_another_host(tmp_path / "far.log"):
        yield


def test_another_host_streams_in_chunks_and_keeps_a_copy_in_its_own_store(
    far_node: None,
) -> None:
    look = runtime.remote(num_cpus=0, resources={"far": 1})(describe)
    arr = np.arange(20 * MB // 8, dtype=np.int64)  # three 8 MiB chunks
    seen = runtime.get(look.remote(arr))
    # Streamed, not mapped from this driver's file: the far node reads its own copy, kept
    # in its own store (its host's shared memory) for the next reader on its host.
    mine = current_worker().peer_id
    assert seen["path"].startswith(shm_root()) and mine not in seen["path"], seen
    assert not seen["writeable"] and seen["sum"] == int(arr.sum())

    @runtime.remote(num_cpus=0, resources={"far": 1})
    def make(n: int) -> Any:
        return np.arange(n, dtype=np.int64)

    got = runtime.get(make.remote(20 * MB // 8))  # the result comes back over the mesh
    assert np.array_equal(got, np.arange(20 * MB // 8, dtype=np.int64))
    assert mine in mapping_of(got.ctypes.data)  # into this driver's own store: a copy


def test_a_freed_segment_is_never_reused_under_a_reader(probes: tuple[Any, Any]) -> None:
    a, _ = probes
    ref = runtime.put(np.full(8 * MB, 7, dtype=np.uint8))
    assert runtime.get(a.keep.remote(ref)) == 7  # another process keeps the array
    mine = runtime.get(ref)  # and so does this one
    del ref  # freed: its file must not be reused while either maps it
    for i in range(4):  # same-size objects, each freed at once: candidates for reuse
        other = runtime.put(np.full(8 * MB, i, dtype=np.uint8))
        assert runtime.get(a.look.remote(other))["sum"] == i * 8 * MB
        del other
    assert runtime.get(a.kept_sum.remote()) == 7 * 8 * MB
    assert int(mine.sum(dtype=np.int64)) == 7 * 8 * MB


def test_parallel_copy_writes_every_byte_in_place() -> None:
    """Big buffers are copied into a mapping in slices by several threads: every byte lands
    where it belongs, at any offset and for sizes that are not whole pages."""
    for size, offset in [(blob.PARALLEL_COPY_MIN, 0), (3 * blob.PARALLEL_COPY_MIN + 17, 64)]:
        src = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
        target = mmap.mmap(-1, offset + size + 64)
        target[:] = b"\xee" * len(target)
        copied = blob._copy_parallel(target, offset, memoryview(src))
        if not copied:  # one core: the plain copy does it
            target[offset : offset + size] = memoryview(src)
        out = np.frombuffer(target, dtype=np.uint8)
        assert np.array_equal(out[offset : offset + size], src)
        assert (out[:offset] == 0xEE).all() and (out[offset + size :] == 0xEE).all()
        del out
        target.close()


def test_same_size_arguments_reuse_segments_with_the_right_contents(
    probes: tuple[Any, Any],
) -> None:
    """A big argument passed call after call: each freed segment (read by the callee,
    which reports its mapping gone before it answers) is written again for the next call,
    through the writer's own mapping, and each callee sees exactly its own array."""
    a, _ = probes
    store = current_worker().store
    before = store.stats()["reused_segments"]
    n = 24 * MB + 123  # several copy slices, not whole pages
    base = np.arange(n, dtype=np.uint32).astype(np.uint8)
    for i in range(8):
        arr = base + np.uint8(i)
        assert runtime.get(a.digest.remote(arr)) == hashlib.sha256(arr).hexdigest()
        del arr
    assert store.stats()["reused_segments"] - before >= 4
