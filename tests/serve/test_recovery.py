"""The controller keeps its state in the head's KV store: a controller restarted from its
constructor takes its applications up from there (no file anywhere), also on another node
when its own died, and ``serve.shutdown`` deletes it (own meshes: the tests shut Serve down
and kill a node)."""

from __future__ import annotations

import os
import signal

import pytest

import runtime
from runtime import serve
from runtime.experimental import internal_kv

from .conftest import http, http_json
from .test_lifecycle import _eventually
from .test_proxies import _gone


@serve.deployment(num_replicas=2)
class Keeper:
    def __init__(self, word: str) -> None:
        self.word = word

    async def __call__(self, request: serve.Request) -> dict:
        return {"word": self.word.strip(), "pid": os.getpid()}


def _stored() -> bool:
    return internal_kv._internal_kv_exists("controller", namespace="serve")


@pytest.mark.timeout(120)
def test_a_restarted_controller_takes_its_apps_up_from_the_heads_kv(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RUNTIME_TMPDIR", str(tmp_path))
    runtime.init(num_cpus=2)
    try:
        serve.start(http_options={"port": 0})
        url = f"http://127.0.0.1:{serve.status().http_port}"
        serve.run(Keeper.bind("kept" + " " * (1 << 20)), name="keeper", route_prefix="/keep")
        assert _stored()  # serve.run returned: the state is in the head already
        # The code and arguments (over 1 MiB here) are a value of their own, written once:
        # the state that every replica change rewrites stays small.
        (code,) = internal_kv._internal_kv_list("code/", namespace="serve")
        assert len(internal_kv._internal_kv_get(code, namespace="serve")) > 1 << 20
        state = internal_kv._internal_kv_get("controller", namespace="serve")
        assert len(state) < 64 << 10
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
        assert http_json(f"{url}/keep")["word"].strip() == "kept"
        # No state file: the KV store is the only place it was kept.
        leftovers = [f for _, _, files in os.walk(tmp_path) for f in files if f.endswith(".pkl")]
        assert leftovers == []

        # The restored controller manages the app as its own: a redeploy rolls it.
        serve.run(Keeper.bind("changed"), name="keeper", route_prefix="/keep")
        assert http_json(f"{url}/keep")["word"] == "changed"

        def old_code_deleted() -> bool:  # once the old replicas are gone
            return internal_kv._internal_kv_list("code/", namespace="serve") != [code]

        _eventually(old_code_deleted, timeout=30, what="the old code deleted")
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
            assert internal_kv._internal_kv_list("code/", namespace="serve") == []
        finally:
            runtime.shutdown()


@pytest.mark.timeout(150)
def test_a_controller_whose_node_died_comes_back_on_another_node_with_its_apps(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("RUNTIME_TMPDIR", str(tmp_path))
    runtime.init(num_cpus=3)
    try:
        serve.start(http_options={"port": 0})
        url = f"http://127.0.0.1:{serve.status().http_port}/keep"
        serve.run(
            Keeper.options(ray_actor_options={"num_cpus": 0}).bind("kept"),
            name="keeper",
            route_prefix="/keep",
        )
        controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")
        victim = runtime.get(controller.ping.remote(), timeout=30)["pid"]
        head = {n["Pid"] for n in runtime.nodes() if not n["Resources"] and not n["IsDriver"]}
        if victim in head:  # pragma: no cover - the scheduler put it on the head
            pytest.skip("the controller runs in the head's process, which must not be killed")
        os.kill(victim, signal.SIGKILL)  # its node, with whatever else ran there
        _eventually(lambda: _gone(victim), timeout=30, what="the killed node's exit")

        def restored_elsewhere() -> bool:
            try:
                info = runtime.get(controller.ping.remote(), timeout=5)
                st = serve.status().applications.get("keeper")
            except Exception:
                return False
            return (
                info["pid"] != victim
                and info["restored"]
                and st is not None
                and st.status == "RUNNING"
            )

        _eventually(restored_elsewhere, timeout=90, what="the controller back on another node")
        _eventually(lambda: _answers(url), timeout=60, what="the app answering again")
        assert http_json(url)["word"] == "kept"
    finally:
        try:
            serve.shutdown()
        finally:
            runtime.shutdown()


def _answers(url: str) -> bool:
    try:
        return http(url, timeout=5)[0] == 200
    except OSError:
        return False
