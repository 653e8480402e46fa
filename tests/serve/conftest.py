"""Fixtures for Serve: a local mesh with Serve started on an ephemeral HTTP port."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from runtime import serve

from ..conftest import local_mesh


@pytest.fixture(scope="module")
def serve_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A mesh of two one-CPU nodes with Serve on a free port; yields the base URL."""
    with local_mesh(tmp_path_factory.mktemp("serve-mesh"), num_cpus=2):
        try:
            serve.start(http_options={"port": 0})
            yield f"http://127.0.0.1:{serve.status().http_port}"
        finally:
            serve.shutdown()


def http(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """One real HTTP request: (status, headers, body); error statuses are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def http_json(url: str, **kwargs: Any) -> Any:
    status, _, body = http(url, **kwargs)
    assert status == 200, (status, body)
    return json.loads(body)


async def _fetch_many(
    urls: list[str], concurrency: int, method: str = "GET"
) -> list[tuple[int, bytes]]:
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(url: str) -> tuple[int, bytes]:
            async with sem, session.request(method, url) as resp:
                return resp.status, await resp.read()

        return await asyncio.gather(*(one(u) for u in urls))


def fetch_many(urls: list[str], concurrency: int = 16) -> list[tuple[int, bytes]]:
    """Many concurrent real HTTP requests (aiohttp client): [(status, body)]."""
    return asyncio.run(_fetch_many(urls, concurrency))


def touch(path: str) -> None:
    """Create an empty marker file (a cross-process signal between a test and a replica)."""
    with open(path, "w"):
        pass


def exists(path: str) -> bool:
    return os.path.exists(path)


async def until_exists(path: str, timeout: float = 30) -> None:
    """Wait (bounded) until a marker file exists."""
    for _ in range(int(timeout / 0.01)):
        if exists(path):
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{path} did not appear within {timeout} s")
