"""Tune a small numpy neural network on scikit-learn's bundled digits data set.

Run it with `python examples/tune_digits.py`. A one-hidden-layer network (numpy only)
trains with mini-batch SGD; Tune searches its learning rate (log-uniform) and hidden width
(a choice), runs the trials in parallel as actors, and ASHA stops the weak ones after a few
epochs. The best validation accuracy is printed (about 0.95-0.98).
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one node per core: no thread oversubscription

import numpy as np

import runtime
from runtime import tune


def load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as load

    data = load()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return x[:split], y[:split], x[split:], y[split:]


def train_digits(config: dict[str, Any]) -> None:
    """Train for up to 15 epochs, reporting validation accuracy (and a checkpoint) each."""
    x_train, y_train, x_val, y_val = load_digits()
    rng = np.random.default_rng(config.get("seed", 0))
    width, lr = int(config["width"]), float(config["lr"])
    w1 = rng.normal(0, np.sqrt(2 / 64), (64, width)).astype(np.float32)
    b1 = np.zeros(width, np.float32)
    w2 = rng.normal(0, np.sqrt(1 / width), (width, 10)).astype(np.float32)
    b2 = np.zeros(10, np.float32)
    checkpoint = tune.get_checkpoint()
    start = 0
    if checkpoint is not None:
        state = checkpoint.to_dict()
        w1, b1, w2, b2, start = state["w1"], state["b1"], state["w2"], state["b2"], state["epoch"]
    onehot = np.eye(10, dtype=np.float32)[y_train]
    for epoch in range(start + 1, 16):
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), 32):
            batch = order[i : i + 32]
            xb, yb = x_train[batch], onehot[batch]
            h = np.maximum(xb @ w1 + b1, 0)
            logits = h @ w2 + b2
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            g_logits = (p - yb) / len(batch)
            g_h = (g_logits @ w2.T) * (h > 0)
            w2 -= lr * h.T @ g_logits
            b2 -= lr * g_logits.sum(0)
            w1 -= lr * xb.T @ g_h
            b1 -= lr * g_h.sum(0)
        hidden = np.maximum(x_val @ w1 + b1, 0)
        accuracy = float(((hidden @ w2 + b2).argmax(1) == y_val).mean())
        state = {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "epoch": epoch}
        tune.report({"accuracy": accuracy}, checkpoint=tune.Checkpoint.from_dict(state))


def main() -> None:
    runtime.init()
    results = tune.Tuner(
        train_digits,
        param_space={"lr": tune.loguniform(1e-3, 1.0), "width": tune.choice([16, 32, 64, 128])},
        tune_config=tune.TuneConfig(
            metric="accuracy",
            mode="max",
            num_samples=12,
            scheduler=tune.ASHAScheduler(max_t=15, grace_period=3, reduction_factor=3),
            search_alg=tune.BasicVariantGenerator(random_state=0),
        ),
        run_config=tune.RunConfig(
            name="tune_digits",
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="accuracy"
            ),
            verbose=0,
        ),
    ).fit()
    best = results.get_best_result()
    print(
        f"{len(results)} trials; best accuracy {best.metrics['accuracy']:.3f} with "
        f"lr={best.config['lr']:.4f}, width={best.config['width']} "
        f"after {best.metrics['training_iteration']} epochs"
    )
    print(f"best checkpoint: {best.checkpoint}")
    runtime.shutdown()


if __name__ == "__main__":
    main()
