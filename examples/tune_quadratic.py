"""Tune a 2-D quadratic with Optuna's TPE sampler and ASHA early stopping.

Run it with `python examples/tune_quadratic.py`. Each trial is an actor on the local mesh;
the trainable reports a loss that falls towards (x - 3)^2 + (y + 1)^2 over 20 steps, and
ASHA stops the trials whose loss lags behind at each rung. Results go under
`~/runtime_results/tune_quadratic` (or $TUNE_RESULTS_DIR).
"""

from __future__ import annotations

import runtime
from runtime import tune


def objective(config: dict[str, float]) -> None:
    """A noisy-free toy curve: converges to the quadratic's value at (x, y)."""
    final = (config["x"] - 3) ** 2 + (config["y"] + 1) ** 2
    for step in range(1, 21):
        tune.report({"loss": final + 10.0 / step})


def main() -> None:
    runtime.init()
    results = tune.run(
        objective,
        config={"x": tune.uniform(-5, 10), "y": tune.uniform(-5, 5)},
        num_samples=30,
        metric="loss",
        mode="min",
        search_alg=tune.OptunaSearch(seed=0),
        scheduler=tune.ASHAScheduler(max_t=20, grace_period=2, reduction_factor=3),
        name="tune_quadratic",
        verbose=0,
    )
    stopped = sum(r.metrics["training_iteration"] < 20 for r in results)
    best = results.best_result
    print(f"{len(results)} trials, {stopped} stopped early by ASHA")
    print(
        f"best: x={results.best_config['x']:.3f} y={results.best_config['y']:.3f} "
        f"loss={best['loss']:.4f} (the optimum is x=3, y=-1, loss=0.5 at step 20)"
    )
    runtime.shutdown()


if __name__ == "__main__":
    main()
