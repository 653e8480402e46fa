"""Batch inference with runtime.data: a torch model in a callable class on an actor pool.

Each pool actor loads the model once (in ``__init__``) and then scores batches; the dataset
streams through the pool with bounded memory.

Run: python examples/data_batch_inference.py
"""

from __future__ import annotations

import numpy as np

import runtime
from runtime import data


class Classifier:
    """A tiny torch model, built once per actor."""

    def __init__(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        self.model = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        )
        self.model.eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.torch.no_grad():
            x = self.torch.tensor(
                batch["features"], dtype=self.torch.float32
            )  # a copy: Arrow memory is read-only
            logits = self.model(x)
        return {"id": batch["id"], "label": logits.argmax(dim=1).numpy()}


def features(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(int(batch["id"][0]))
    return {"id": batch["id"], "features": rng.normal(size=(len(batch["id"]), 8))}


def main(rows: int = 20_000) -> dict[int, int]:
    runtime.init(num_cpus=2)
    try:
        predictions = (
            data.range(rows)
            .map_batches(features)
            .map_batches(Classifier, fn_constructor_args=(0,), concurrency=2, batch_size=512)
        )
        by_label = predictions.groupby("label").count()
        counts = by_label.to_pandas()
        print(counts.to_string(index=False))
        print(by_label.stats())
        result = dict(zip(counts["label"].tolist(), counts["count()"].tolist(), strict=True))
        assert sum(result.values()) == rows
        return result
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    main()
