"""The controller keeps its state in the head's KV store: a controller restarted from its
constructor takes its applications up from there (no file anywhere), and ``serve.shutdown``
deletes it (its own mesh, as the test shuts Serve down)."""

from __future__ import annotations

import os

import pytest

import runtime
from runtime import serve
from runtime.experimental import internal_kv

from .conftest import http, http_json
from .test_lifecycle import _eventually


@serve.deployment(num_replicas=2)
class Keeper:
    def __init__(self, word: str) -> None:
        self.word = word

    async def __call__(self, request: serve.Request) -> dict:
        return {"word": self.word, "pid": os.getpid()}


def _stored() -> bool:
    return internal_kv._internal_kv_exists("controller", namespace="serve")


@pytest.mark.timeout(120)
def test_a_restarted_controller_takes_its_apps_up_from_the_heads_kv(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RUNTIME_TMPDIR", str(tmp_path))
    runtime.init(num_cpus=2)
    try:
        serve.start(http_options={"port": 0})
        url = f"http://127.0.0.1:{serve.status().http_port}"
        serve.run(Keeper.bind("kept"), name="keeper", route_prefix="/keep")
        assert _stored()  # serve.run returned: the state is in the head already
        pids = {http_json(f"{url}/keep")["pid"] for _ in range(20)}
        controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")
        first = runtime.get(controller.ping.remote(), timeout=30)
        assert not first["restored"]

        runtime.kill(controller, no_restart=False)  # the constructor runs again
        _eventually(
            lambda: "keeper" in serve.status().applications, timeout=60, what="restored apps"
        )
        again = runtime.get(controller.ping.remote(), timeout=30)
        assert again["restored"]
        st = serve.status().applications["keeper"]
        assert st.status == "RUNNING" and st.route_prefix == "/keep"
        assert {http_json(f"{url}/keep")["pid"] for _ in range(20)} <= pids  # same replicas
        # No state file: the KV store is the only place it was kept.
        leftovers = [f for _, _, files in os.walk(tmp_path) for f in files if f.endswith(".pkl")]
        assert leftovers == []

        # The restored controller manages the app as its own: a redeploy rolls it.
        serve.run(Keeper.bind("changed"), name="keeper", route_prefix="/keep")
        assert http_json(f"{url}/keep")["word"] == "changed"
        serve.delete("keeper")
        assert http(f"{url}/keep")[0] == 404

        # An app too large to keep there is refused, not silently unrecoverable.
        big = bytes(internal_kv.MAX_VALUE_BYTES)
        with pytest.raises(ValueError, match="pass large data"):
            serve.run(Keeper.bind(big), name="big", route_prefix="/big")
        assert "big" not in serve.status().applications
    finally:
        try:
            serve.shutdown()
            assert not _stored()  # shutdown deletes the state
        finally:
            runtime.shutdown()
