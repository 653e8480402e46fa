"""Model multiplexing: models loaded on demand per replica, the LRU evicting with the model's
``__del__`` run, the model id from the HTTP header or the handle, routing to holders."""

from __future__ import annotations

import asyncio
import os

import pytest

import runtime
from runtime import serve

from .conftest import exists, http_json, touch, until_exists

pytestmark = pytest.mark.timeout(60)


class Model:
    def __init__(self, model_id: str, marker_dir: str) -> None:
        self.model_id = model_id
        self.dir = marker_dir

    def __del__(self) -> None:
        touch(os.path.join(self.dir, f"{self.model_id}.evicted"))


@serve.deployment(num_replicas=2, max_ongoing_requests=10)
class Models:
    def __init__(self, marker_dir: str) -> None:
        self.dir = marker_dir
        self.loads: dict[str, int] = {}

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> Model:
        self.loads[model_id] = self.loads.get(model_id, 0) + 1
        await asyncio.sleep(0.01)
        return Model(model_id, self.dir)

    async def __call__(self, request: serve.Request | None = None) -> dict:
        model_id = serve.get_multiplexed_model_id()
        model = await self.get_model(model_id)
        return {
            "model": model.model_id,
            "replica": serve.get_replica_context().replica_tag,
            "loads": self.loads[model_id],
        }


@pytest.fixture(scope="module")
def models(serve_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    d = str(tmp_path_factory.mktemp("models"))
    serve.run(Models.bind(d), name="models", route_prefix="/models")
    return d


def _get(url: str, model_id: str) -> dict:
    return http_json(url, headers={"serve_multiplexed_model_id": model_id})


def test_requests_for_a_model_go_to_the_replica_that_loaded_it(
    models: str, serve_cluster: str
) -> None:
    answers = [_get(f"{serve_cluster}/models", "alpha") for _ in range(8)]
    assert {a["model"] for a in answers} == {"alpha"}
    assert len({a["replica"] for a in answers}) == 1  # one replica holds it
    assert {a["loads"] for a in answers} == {1}  # loaded once, then served from memory


async def test_a_handle_names_its_model_and_other_routers_learn_where_it_is(
    models: str, serve_cluster: str
) -> None:
    controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")
    for model_id in ("beta", "gamma", "delta"):  # each a coin toss without the reports
        handle = serve.get_app_handle("models").options(multiplexed_model_id=model_id)
        first = await handle.remote()
        assert first["model"] == model_id
        # The replica reports what it holds; the proxy's router (another caller) follows.
        for _ in range(1000):
            held = await controller.multiplexed_models.remote("models", "Models")
            if model_id in held.get(first["replica"], []):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"the replica never reported its model: {held}")
        answers = await asyncio.gather(
            *(asyncio.to_thread(_get, f"{serve_cluster}/models", model_id) for _ in range(4))
        )
        assert {a["replica"] for a in answers} == {first["replica"]}
        assert {a["loads"] for a in answers} == {1}


OneReplica = Models.options(name="OneReplica", num_replicas=1)


async def test_the_least_recently_used_model_is_evicted_and_its_del_runs(
    serve_cluster: str, tmp_path: object
) -> None:
    d = str(tmp_path)
    handle = serve.run(OneReplica.bind(d), name="lru", route_prefix=None)

    async def use(model_id: str) -> dict:
        return await handle.options(multiplexed_model_id=model_id).remote()

    assert (await use("m1"))["loads"] == 1
    assert (await use("m2"))["loads"] == 1
    assert (await use("m1"))["loads"] == 1  # m1 is now the most recently used
    assert not exists(os.path.join(d, "m1.evicted"))
    await use("m3")  # two at most: m2 (least recently used) goes
    await until_exists(os.path.join(d, "m2.evicted"))
    assert not exists(os.path.join(d, "m1.evicted"))
    assert (await use("m2"))["loads"] == 2  # loaded again
    await until_exists(os.path.join(d, "m1.evicted"))


def test_a_missing_model_id_is_a_clear_error(models: str) -> None:
    handle = serve.get_app_handle("models")
    with pytest.raises(ValueError, match="serve_multiplexed_model_id"):
        handle.remote().result(timeout_s=30)
    with pytest.raises(ValueError, match="max_num_models_per_replica"):
        serve.multiplexed(max_num_models_per_replica=0)
