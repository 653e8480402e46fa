"""Process-wide plumbing: finding the controller, and the loop that serves sync callers.

Handle calls made from plain threads (a script, a sync replica method) are routed on one
background event loop per process, so routers always live on a loop; calls made from a
running loop are routed on that loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import runtime

CONTROLLER_NAME = "SERVE_CONTROLLER"
PROXY_NAME = "SERVE_PROXY"
NAMESPACE = "serve"

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_controller: Any = None
_controller_session: str | None = None
#: Bumped by serve.start/shutdown in this process: routers of an older generation are stale.
generation = 0


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's serve loop (a daemon thread), started on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="serve-client-loop", daemon=True).start()
            started.wait(10)
            _loop = loop
        return _loop


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _session() -> str:
    return runtime.get_runtime_context().get_job_id()


def lookup_controller() -> Any:
    """The controller's handle (blocking; call off the loop). ValueError if Serve is not up."""
    global _controller, _controller_session, generation
    session = _session()
    c = _controller
    if c is not None:
        if _controller_session == session:
            return c
        _controller = None  # a handle from an earlier runtime session: its routers go too
        generation += 1
    c = runtime.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
    _controller, _controller_session = c, session
    return c


async def controller_async() -> Any:
    """The controller's handle, from async code (the name lookup runs on a thread)."""
    c = _controller
    if c is not None and _controller_session == _session():
        return c
    return await asyncio.to_thread(lookup_controller)


def set_controller(handle: Any) -> None:
    global _controller, _controller_session, generation
    _controller, _controller_session = handle, _session()
    generation += 1


def forget_controller() -> None:
    """Drop the cached handle (Serve was shut down, or the cluster changed)."""
    global _controller, generation
    _controller = None
    generation += 1


def node_id() -> str:
    """This process's node id ("" where there is none to compare: no runtime here)."""
    try:
        return runtime.get_runtime_context().get_node_id() or ""
    except RuntimeError:  # the runtime is not initialized: no replica is local to us
        return ""
