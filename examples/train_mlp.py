"""Data-parallel training: a small MLP on scikit-learn's digits with 2 ranks, checkpoints
every epoch, and a final evaluation of the best checkpoint on held-out data.

Run it with `python examples/train_mlp.py [storage_dir]`. Each rank is an actor in its own
node process; `torch.distributed` (gloo) averages the gradients, `prepare_data_loader`
gives each rank half of every epoch, and rank 0 writes the checkpoints.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

import runtime
from runtime import train
from runtime.train.torch import TorchConfig, TorchTrainer, prepare_data_loader, prepare_model


def load(split: str) -> tuple[Any, Any]:
    """Digits as tensors; the first 1500 rows train, the rest are held out."""
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    return (x[:1500], y[:1500]) if split == "train" else (x[1500:], y[1500:])


def make_model() -> Any:
    import torch

    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def train_loop(config: dict[str, Any]) -> None:
    """Runs in every rank."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)  # the same initial weights on every rank
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    start = 0
    checkpoint = train.get_checkpoint()  # set when resuming after a failure
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "model.pt"))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"] + 1
    model = prepare_model(model)  # DistributedDataParallel
    loader = prepare_data_loader(
        DataLoader(TensorDataset(*load("train")), batch_size=50, shuffle=True)
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    rank = train.get_context().get_world_rank()
    for epoch in range(start, config["epochs"]):
        total, right, seen = 0.0, 0, 0
        for xb, yb in loader:
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
            right += int((out.argmax(1) == yb).sum())
            seen += len(yb)
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:
                state = {"model": model.module.state_dict(), "opt": opt.state_dict()}
                torch.save({**state, "epoch": epoch}, os.path.join(d, "model.pt"))
                ckpt = train.Checkpoint.from_directory(d)
            metrics = {"epoch": epoch, "loss": total / seen, "accuracy": right / seen}
            train.report(metrics, checkpoint=ckpt)


def evaluate(checkpoint: train.Checkpoint) -> float:
    """Accuracy of a checkpoint on the held-out rows, in the driver."""
    import torch

    model = make_model()
    with checkpoint.as_directory() as d:
        model.load_state_dict(torch.load(os.path.join(d, "model.pt"))["model"])
    x, y = load("test")
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    storage = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="train-mlp-")
    runtime.init(num_cpus=2)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"lr": 0.05, "epochs": 4},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(
            name="digits_mlp",
            storage_path=storage,
            checkpoint_config=train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="accuracy"
            ),
            failure_config=train.FailureConfig(max_failures=2),
        ),
        torch_config=TorchConfig(timeout_s=60),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    best, metrics = max(result.best_checkpoints, key=lambda cm: cm[1]["accuracy"])
    print(
        f"final train loss {result.metrics['loss']:.3f}, accuracy {result.metrics['accuracy']:.3f}"
    )
    print(
        f"checkpoints kept: {sorted(os.path.basename(c.path) for c, _ in result.best_checkpoints)}"
    )
    print(
        f"held-out accuracy of the best checkpoint (epoch {metrics['epoch']}): {evaluate(best):.3f}"
    )
    runtime.shutdown()


if __name__ == "__main__":
    main()
