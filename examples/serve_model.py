"""Serve a numpy model over HTTP: two replicas, requests batched, and a client.

Run it with `python examples/serve_model.py`. It starts a local mesh, deploys a small
linear classifier (numpy) as two replicas whose `__call__` groups concurrent requests
with `@serve.batch`, then a client (aiohttp, in this script) sends 200 concurrent JSON
requests and prints what came back. `--port` picks the HTTP port (default: a free one).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os

import numpy as np

import runtime
from runtime import serve

FEATURES = 8


@serve.deployment(num_replicas=2, max_ongoing_requests=64)
class LinearClassifier:
    """Scores = x @ W; the predicted class is the argmax. W is fixed by a seed."""

    def __init__(self, num_classes: int) -> None:
        rng = np.random.default_rng(0)
        self.weights = rng.standard_normal((FEATURES, num_classes))
        self.pid = os.getpid()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def predict(self, rows: list[np.ndarray]) -> list[dict]:
        scores = np.stack(rows) @ self.weights  # one matrix product for the whole batch
        return [
            {"class": int(s.argmax()), "batch_size": len(rows), "replica": self.pid} for s in scores
        ]

    async def __call__(self, request: serve.Request) -> dict:
        body = await request.json()
        x = np.asarray(body["features"], dtype=np.float64)
        if x.shape != (FEATURES,):
            raise serve.HTTPException(422, f"expected {FEATURES} features, got shape {x.shape}")
        return await self.predict(x)


async def client(url: str, n: int) -> list[dict]:
    """Send n requests at once (as many clients would) and collect the answers."""
    import aiohttp

    rng = np.random.default_rng(1)
    async with aiohttp.ClientSession() as session:

        async def one() -> dict:
            features = rng.standard_normal(FEATURES).tolist()
            async with session.post(url, json={"features": features}) as resp:
                resp.raise_for_status()
                answer: dict = await resp.json()
                return answer

        return await asyncio.gather(*(one() for _ in range(n)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    runtime.init(num_cpus=2)
    try:
        serve.start(http_options={"port": args.port})
        serve.run(LinearClassifier.bind(num_classes=3), name="model", route_prefix="/predict")
        url = f"http://127.0.0.1:{serve.status().http_port}/predict"
        print(f"serving on {url}")
        answers = asyncio.run(client(url, args.requests))
        classes = collections.Counter(a["class"] for a in answers)
        replicas = {a["replica"] for a in answers}
        biggest = max(a["batch_size"] for a in answers)
        print(f"{len(answers)} predictions, classes {dict(sorted(classes.items()))}")
        print(f"served by {len(replicas)} replicas; largest batch {biggest}")
    finally:
        serve.shutdown()
        runtime.shutdown()


if __name__ == "__main__":
    main()
