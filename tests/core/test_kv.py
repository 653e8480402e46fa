"""The head's key-value store through Ray's ``internal_kv`` names, on a real mesh."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

import runtime
from runtime.experimental import internal_kv as kv
from runtime.experimental.internal_kv import KVLimitError

from ..conftest import cpus_back, start_head, stop_process, until

SRC = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src"
)


def test_the_module_exports_rays_names_their_async_twins_and_the_bounds() -> None:
    ops = ("put", "get", "exists", "del", "list")
    assert set(kv.__all__) == {
        "KVLimitError", "MAX_KEY_LEN", "MAX_NAMESPACE_LEN", "MAX_TOTAL_BYTES", "MAX_VALUE_BYTES",
        "_internal_kv_initialized",
        *(f"_internal_kv_{op}" for op in ops), *(f"_internal_kv_{op}_async" for op in ops),
    }  # fmt: skip
    for name in kv.__all__:
        if not name.startswith("MAX_"):
            assert getattr(kv, name).__doc__, name


def test_calls_without_a_runtime_say_so() -> None:
    if runtime.is_initialized():  # pragma: no cover - another module's cluster
        pytest.skip("a runtime is running in this process")
    assert not kv._internal_kv_initialized()
    with pytest.raises(RuntimeError, match=r"runtime\.init"):
        kv._internal_kv_get(b"k")


def test_a_full_store_refuses_puts_until_entries_are_deleted(monkeypatch) -> None:
    monkeypatch.setenv("RUNTIME_KV_MAX_BYTES", "1000")  # read by the head this init starts
    runtime.init(num_cpus=1)
    try:
        kv._internal_kv_put(b"big", bytes(900))
        with pytest.raises(KVLimitError, match="full"):
            kv._internal_kv_put(b"more", bytes(200))
        assert kv._internal_kv_put(b"big", bytes(950)) is True  # replacing may still fit
        kv._internal_kv_del(b"big")
        assert kv._internal_kv_put(b"more", bytes(200)) is False
    finally:
        runtime.shutdown()


@pytest.mark.timeout(90)
def test_entries_survive_a_restart_of_a_head_with_a_state_dir(tmp_path) -> None:
    head = start_head(tmp_path, "--num-cpus", "0")
    restarted = None
    try:
        runtime.init(address=head.address, token=head.token)
        kv._internal_kv_put(b"kept", b"across restarts", namespace="durable")
        kv._internal_kv_put(b"gone", b"deleted before", namespace="durable")
        kv._internal_kv_del(b"gone", namespace="durable")
        head.proc.kill()
        head.proc.wait(10)
        restarted = head.restart()
        until(lambda: cpus_back(0), timeout=60)  # the head answers again
        assert kv._internal_kv_get(b"kept", namespace="durable") == b"across restarts"
        assert kv._internal_kv_list(b"", namespace="durable") == [b"kept"]
    finally:
        runtime.shutdown()
        if restarted is not None:
            stop_process(restarted)
        stop_process(head.proc)


def test_put_get_exists_list_and_delete_from_the_driver(cluster) -> None:
    assert kv._internal_kv_initialized()
    assert kv._internal_kv_put(b"a/1", b"one") is False  # it did not exist
    assert kv._internal_kv_put("a/2", "two") is False  # str is taken as UTF-8 bytes
    assert kv._internal_kv_get(b"a/2") == b"two"
    assert kv._internal_kv_put(b"a/1", b"uno") is True  # existed, overwritten
    assert kv._internal_kv_get("a/1") == b"uno"
    assert kv._internal_kv_put(b"a/1", b"ein", overwrite=False) is True  # existed, kept
    assert kv._internal_kv_get(b"a/1") == b"uno"
    assert kv._internal_kv_exists(b"a/1") and not kv._internal_kv_exists(b"a/3")
    assert kv._internal_kv_get(b"missing") is None
    assert sorted(kv._internal_kv_list(b"a/")) == [b"a/1", b"a/2"]
    assert kv._internal_kv_del(b"a/1") == 1
    assert kv._internal_kv_del(b"a/1") == 0
    assert kv._internal_kv_get(b"a/1") is None
    kv._internal_kv_put(b"a/3", b"three")
    assert kv._internal_kv_del(b"a/", del_by_prefix=True) == 2
    assert kv._internal_kv_list(b"a/") == []


def test_keys_are_any_bytes_and_namespaces_keep_entries_apart(cluster) -> None:
    key = bytes(range(256))  # not UTF-8: kept byte for byte
    kv._internal_kv_put(key, b"\x00\xff", namespace=b"ns-1")
    kv._internal_kv_put(key, b"other", namespace="ns-2")
    assert kv._internal_kv_get(key, namespace="ns-1") == b"\x00\xff"
    assert kv._internal_kv_get(key, namespace=b"ns-2") == b"other"
    assert kv._internal_kv_get(key) is None  # the default (empty) namespace is another one
    assert kv._internal_kv_list(b"\x00", namespace="ns-1") == [key]
    assert kv._internal_kv_list("ключ", namespace="ns-1") == []
    kv._internal_kv_put("ключ", "значение", namespace="ns-1")
    assert kv._internal_kv_list("ключ", namespace="ns-1") == ["ключ".encode()]
    assert kv._internal_kv_del(b"", del_by_prefix=True, namespace="ns-1") == 2
    assert kv._internal_kv_get(key, namespace="ns-2") == b"other"


def test_an_actor_uses_the_async_twins_and_its_entries_outlive_it(cluster) -> None:
    @runtime.remote
    class Writer:
        async def write(self, n: int) -> list[bytes]:
            for i in range(n):
                await kv._internal_kv_put_async(f"w/{i}", str(i), namespace="actor")
            assert await kv._internal_kv_exists_async(b"w/0", namespace="actor")
            assert await kv._internal_kv_get_async(b"w/1", namespace="actor") == b"1"
            assert await kv._internal_kv_del_async(b"w/2", namespace="actor") == 1
            return sorted(await kv._internal_kv_list_async(b"w/", namespace="actor"))

        def write_sync(self) -> bytes | None:  # a sync method runs off the loop: it may block
            kv._internal_kv_put(b"sync", b"from a thread", namespace="actor")
            return kv._internal_kv_get(b"sync", namespace="actor")

        async def blocks_on_the_loop(self) -> None:
            kv._internal_kv_get(b"sync", namespace="actor")

    writer = Writer.remote()
    assert runtime.get(writer.write.remote(4), timeout=30) == [b"w/0", b"w/1", b"w/3"]
    assert runtime.get(writer.write_sync.remote(), timeout=30) == b"from a thread"
    with pytest.raises(RuntimeError, match="await"):
        runtime.get(writer.blocks_on_the_loop.remote(), timeout=30)
    runtime.kill(writer)
    assert kv._internal_kv_get(b"w/3", namespace="actor") == b"3"
    assert kv._internal_kv_del(b"", del_by_prefix=True, namespace="actor") == 4


def test_the_async_twins_work_on_a_loop_of_the_drivers_own(cluster) -> None:
    async def main() -> bytes | None:
        await kv._internal_kv_put_async(b"loop", b"mine")
        try:
            return await kv._internal_kv_get_async(b"loop")
        finally:
            await kv._internal_kv_del_async(b"loop")

    assert asyncio.run(main()) == b"mine"


def test_entries_over_a_bound_are_refused_with_a_typed_error(cluster) -> None:
    with pytest.raises(KVLimitError, match="key holds at most 1024 bytes"):
        kv._internal_kv_put(b"k" * (kv.MAX_KEY_LEN + 1), b"v")
    with pytest.raises(KVLimitError, match="namespace"):
        kv._internal_kv_get(b"k", namespace=b"n" * (kv.MAX_NAMESPACE_LEN + 1))
    with pytest.raises(KVLimitError, match="value holds at most"):
        kv._internal_kv_put(b"k", bytes(kv.MAX_VALUE_BYTES + 1))
    assert issubclass(KVLimitError, ValueError)
    with pytest.raises(TypeError, match="str or bytes"):
        kv._internal_kv_put(3, b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or bytes"):
        kv._internal_kv_put(b"k", {"not": "bytes"})  # type: ignore[arg-type]
    assert kv._internal_kv_get(b"k") is None  # nothing was stored


RAY_PROGRAM = """
import ray
from ray.experimental import internal_kv

ray.init(num_cpus=1)


@ray.remote
class Writer:
    async def write(self):
        await internal_kv._internal_kv_put_async(b"from", b"an actor", namespace="job")


ray.get(Writer.remote().write.remote())
print(internal_kv._internal_kv_get(b"from", namespace="job"))
ray.shutdown()
"""


@pytest.mark.timeout(120)
def test_a_ray_program_reaches_the_kv_by_rays_module_path(tmp_path) -> None:
    script = tmp_path / "program.py"
    script.write_text(RAY_PROGRAM)
    env = {k: v for k, v in os.environ.items() if k not in {"RAY_ADDRESS", "RUNTIME_COMPAT"}}
    env["PYTHONPATH"] = SRC
    out = subprocess.run(
        [sys.executable, "-m", "runtime.compat", str(script)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "b'an actor'"
