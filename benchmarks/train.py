"""Train benchmark: ours vs Ray Train 2.60 on the same workload, in the same run.

The workload: a small MLP (64-64-10) on synthetic 10-class data (4,096 rows, batch 64, so 32
steps per rank per epoch), 2 CPU ranks with DDP over gloo, `epochs` epochs (5), one report
per epoch. Measured from the call of ``fit()``:

- ``first step``: until rank 0 has finished its first optimizer step;
- ``fit total``: until ``fit()`` returns;
- ``fit again``: a second ``fit()`` on the same cluster (ours reuses the warm node processes).

The cluster start (``init``) is not counted. Ray runs in a child process inside a network
namespace with only loopback up (`unshare -n`), with its dashboard and usage stats off.

Run::

    .venv/bin/python benchmarks/train.py            # 5 epochs, both systems
    .venv/bin/python benchmarks/train.py --quick    # 2 epochs
    .venv/bin/python benchmarks/train.py --only ours
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

CHILD_ENV = "RUNTIME_BENCH_RAY_CHILD"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_loop(lib: str) -> Any:
    """The per-rank loop, reporting through ``lib`` (``runtime.train`` or ``ray.train``)."""

    def loop(config: dict[str, Any]) -> None:
        import numpy as np
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        train = importlib.import_module(lib)
        torch_mod = importlib.import_module(lib + ".torch")
        torch.set_num_threads(1)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(4096, 64)).astype(np.float32)
        w = rng.normal(size=(64, 10)).astype(np.float32)
        y = (x @ w).argmax(1)
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )
        model = torch_mod.prepare_model(model)
        loader = torch_mod.prepare_data_loader(
            DataLoader(TensorDataset(torch.tensor(x), torch.tensor(y)), batch_size=64, shuffle=True)
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss_fn = torch.nn.CrossEntropyLoss()
        first_step = None
        for epoch in range(config["epochs"]):
            total, seen = 0.0, 0
            for xb, yb in loader:
                loss = loss_fn(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if first_step is None:
                    first_step = time.time()
                total += loss.item() * len(yb)
                seen += len(yb)
            metrics = {"epoch": epoch, "loss": total / seen, "first_step": first_step}
            if train.get_context().get_world_rank() == 0:
                # a file, not Result.metrics: Ray Train 2.60 keeps metrics only with checkpoints
                with open(config["stamp"], "w") as f:
                    json.dump(metrics, f)
            train.report(metrics)

    return loop


def _measured(key: str, storage: str, start: float, end: float) -> dict[str, float]:
    with open(os.path.join(storage, "stamp")) as f:
        stamp = json.load(f)
    return {
        key + "first_step": stamp["first_step"] - start,
        key + "total": end - start,
        key + "loss": stamp["loss"],
    }


def run_ours(epochs: int) -> dict[str, Any]:
    import runtime
    from runtime import train
    from runtime.train.torch import TorchTrainer

    runtime.init(num_cpus=2)
    out: dict[str, Any] = {"backend": "runtime"}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as storage:
        for key in ("", "again_"):
            trainer = TorchTrainer(
                make_loop("runtime.train"),
                train_loop_config={"epochs": epochs, "stamp": os.path.join(storage, "stamp")},
                scaling_config=train.ScalingConfig(num_workers=2),
                run_config=train.RunConfig(storage_path=storage, verbose=0),
            )
            start = time.time()
            result = trainer.fit()
            end = time.time()
            if result.error is not None:
                raise result.error
            out.update(_measured(key, storage, start, end))
    runtime.shutdown()
    return out


def run_ray(epochs: int) -> dict[str, Any]:
    import ray
    from ray import train
    from ray.train.torch import TorchTrainer

    ray.init(num_cpus=2, include_dashboard=False)
    out: dict[str, Any] = {"backend": "ray", "version": ray.__version__}
    with tempfile.TemporaryDirectory(prefix="bench-ray-train-") as storage:
        for key in ("", "again_"):
            trainer = TorchTrainer(
                make_loop("ray.train"),
                train_loop_config={"epochs": epochs, "stamp": os.path.join(storage, "stamp")},
                scaling_config=train.ScalingConfig(num_workers=2),
                run_config=train.RunConfig(storage_path=storage),
            )
            start = time.time()
            result = trainer.fit()
            end = time.time()
            if result.error is not None:
                raise result.error
            out.update(_measured(key, storage, start, end))
    ray.shutdown()
    return out


def run_ray_isolated(epochs: int) -> dict[str, Any]:
    if importlib.util.find_spec("ray") is None:
        return {"backend": "ray", "skipped": "ray is not importable in this environment"}
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return {"backend": "ray", "skipped": "`unshare` or `ip` not found: cannot isolate Ray"}
    prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-r", "-n"]
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        path = os.path.join(tmp, "ray.json")
        cmd = [
            *prefix, "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh",
            sys.executable, os.path.abspath(__file__), "--only", "ray", "--json", path,
            "--epochs", str(epochs),
        ]  # fmt: skip
        env = {
            **os.environ,
            CHILD_ENV: "1",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        log(f"[ray] running in a loopback-only network namespace: {shlex.join(cmd)}")
        try:
            proc = subprocess.run(cmd, env=env, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            return {"backend": "ray", "skipped": "the Ray half ran past 600 s"}
        if os.path.exists(path):
            with open(path) as f:
                report: dict[str, Any] = json.load(f)
            return report
        return {"backend": "ray", "skipped": f"the Ray child exited with {proc.returncode}"}


ROWS = [
    ("first_step", "fit() to first training step"),
    ("total", "fit() total"),
    ("again_first_step", "2nd fit(): to first step"),
    ("again_total", "2nd fit(): total"),
]


def table(ours: dict[str, Any], ray: dict[str, Any], epochs: int) -> str:
    lines = [
        f"2 CPU ranks, MLP 64-64-10, 4096 rows, batch 64, {epochs} epochs",
        "| metric | runtime | Ray Train | Ray / runtime |",
        "|---|---|---|---|",
    ]
    for key, label in ROWS:
        a = ours.get(key)
        b = ray.get(key)
        ratio = f"{b / a:.1f}x" if a and b else "-"
        a_s = f"{a:.2f} s" if a is not None else "-"
        b_s = f"{b:.2f} s" if b is not None else ray.get("skipped", "-")
        lines.append(f"| {label} | {a_s} | {b_s} | {ratio} |")
    lines.append(
        f"| final loss | {ours.get('loss', float('nan')):.4f} | "
        f"{ray.get('loss', float('nan')):.4f} | |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of 5")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--only", choices=("ours", "ray"), default=None)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 5)
    if args.only == "ray" and os.environ.get(CHILD_ENV) == "1":
        report = run_ray(epochs)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f)
        return 0
    ours = run_ours(epochs) if args.only != "ray" else {}
    ray = run_ray_isolated(epochs) if args.only != "ours" else {"skipped": "not run"}
    print(table(ours, ray, epochs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runtime": ours, "ray": ray}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
