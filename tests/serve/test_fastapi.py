"""A FastAPI app as a deployment's ingress (``@serve.ingress``), when fastapi is installed."""

from __future__ import annotations

import json

import pytest

from runtime import serve

from .conftest import http, http_json

fastapi = pytest.importorskip("fastapi")
pydantic = pytest.importorskip("pydantic")

pytestmark = pytest.mark.timeout(60)

api = fastapi.FastAPI()


class Item(pydantic.BaseModel):
    name: str
    price: float


@serve.deployment
@serve.ingress(api)
class Shop:
    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.items: dict[int, Item] = {}

    @api.get("/items/{item_id}")
    def get_item(self, item_id: int) -> dict:
        if item_id not in self.items:
            raise fastapi.HTTPException(status_code=404, detail="no such item")
        item = self.items[item_id]
        return {"name": item.name, "price": f"{item.price} {self.currency}"}

    @api.post("/items/{item_id}")
    async def put_item(self, item_id: int, item: Item) -> dict:
        self.items[item_id] = item
        return {"stored": item_id}


def test_fastapi_routes_bound_to_the_replica_behind_a_route_prefix(serve_cluster: str) -> None:
    serve.run(Shop.bind("EUR"), name="shop", route_prefix="/shop")
    base = f"{serve_cluster}/shop"
    body = json.dumps({"name": "pen", "price": 2.5}).encode()
    js = {"Content-Type": "application/json"}
    assert http_json(f"{base}/items/7", method="POST", body=body, headers=js) == {"stored": 7}
    assert http_json(f"{base}/items/7") == {"name": "pen", "price": "2.5 EUR"}
    assert http(f"{base}/items/8")[0] == 404
    assert http(f"{base}/items/7", method="DELETE")[0] == 405  # FastAPI's own answer
    assert http(f"{base}/items/7", method="POST", body=b'{"name": 1}', headers=js)[0] == 422
    assert http(f"{base}/items/x")[0] == 422
