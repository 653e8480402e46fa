"""A composed pipeline of three deployments: preprocess -> model -> postprocess.

Run it with `python examples/serve_pipeline.py`. The ingress deployment receives HTTP
requests and calls the other two through DeploymentHandles (bound deployments passed to
`.bind()` become handles). The preprocessor's response is passed, unawaited, straight
into the model call, so the value travels between replicas without returning to the
ingress. The same app is also called from Python through its handle.
"""

from __future__ import annotations

import json
import urllib.request

import runtime
from runtime import serve


@serve.deployment
class Preprocess:
    def __call__(self, text: str) -> list[str]:
        return [w.strip(".,!?").lower() for w in text.split()]


@serve.deployment(num_replicas=2)
class SentimentModel:
    POSITIVE = frozenset({"good", "great", "love", "excellent", "happy"})
    NEGATIVE = frozenset({"bad", "awful", "hate", "terrible", "sad"})

    async def __call__(self, words: list[str]) -> int:
        return sum(w in self.POSITIVE for w in words) - sum(w in self.NEGATIVE for w in words)


@serve.deployment
class Postprocess:
    def __call__(self, score: int) -> str:
        return "positive" if score > 0 else "negative" if score < 0 else "neutral"


@serve.deployment
class Pipeline:
    def __init__(self, pre: serve.DeploymentHandle, model: serve.DeploymentHandle,
                 post: serve.DeploymentHandle) -> None:  # fmt: skip
        self.pre, self.model, self.post = pre, model, post

    async def classify(self, text: str) -> dict:
        words = self.pre.remote(text)  # not awaited: it goes straight into the next call
        score = self.model.remote(words)
        label = await self.post.remote(score)
        return {"text": text, "score": await score, "label": label}

    async def __call__(self, request: serve.Request) -> dict:
        return await self.classify((await request.json())["text"])


app = Pipeline.bind(Preprocess.bind(), SentimentModel.bind(), Postprocess.bind())


def main() -> None:
    runtime.init(num_cpus=2)
    try:
        serve.start(http_options={"port": 0})
        handle = serve.run(app, name="sentiment", route_prefix="/sentiment")
        url = f"http://127.0.0.1:{serve.status().http_port}/sentiment"
        for text in ("I love this, it is great!", "What an awful, sad day.", "It is a chair."):
            req = urllib.request.Request(url, data=json.dumps({"text": text}).encode())
            with urllib.request.urlopen(req, timeout=30) as resp:
                print("HTTP  ", json.loads(resp.read()))
        print("handle", handle.classify.remote("good good bad").result())
        status = serve.status().applications["sentiment"]
        print(f"app {status.status} with deployments {sorted(status.deployments)}")
    finally:
        serve.shutdown()
        runtime.shutdown()


if __name__ == "__main__":
    main()
