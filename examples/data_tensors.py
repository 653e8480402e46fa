"""Feature vectors as tensor columns: rows holding numpy arrays, a preprocessor fit on the
dataset, a join with labels, and torch batches of shape (batch, 6) for a training loop.

Run: python examples/data_tensors.py
"""

from __future__ import annotations

import numpy as np
import torch

import runtime
from runtime import data
from runtime.data.preprocessors import Chain, Concatenator, StandardScaler


def main() -> None:
    runtime.init(num_cpus=2)
    try:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(1000, 6)).astype(np.float32)
        w = np.arange(1, 7, dtype=np.float32)
        features = data.from_items([{"id": i, "x": x[i]} for i in range(len(x))])
        labels = data.from_items(
            [{"id": i, "y": float(x[i] @ w), "noise": float(rng.normal())} for i in range(len(x))]
        )
        prep = Chain(StandardScaler(["noise"]), Concatenator(["noise"], output_column_name="n"))
        joined = features.join(labels, "inner", num_partitions=4, on=("id",))
        train = prep.fit_transform(joined).drop_columns(["id", "n"])
        print("schema:", train.schema())

        model = torch.nn.Linear(6, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for epoch in range(5):
            total = 0.0
            for batch in train.iter_torch_batches(batch_size=128):
                assert batch["x"].shape[1:] == (6,)
                loss = torch.nn.functional.mse_loss(
                    model(batch["x"]).squeeze(1), batch["y"].float()
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(batch["y"])
            print(f"epoch {epoch}: mse {total / len(x):.4f}")
        print("learned weights:", np.round(model.weight.detach().numpy().ravel(), 2).tolist())
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    main()
