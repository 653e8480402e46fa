"""Train benchmark: ours vs Ray Train 2.60 on the same workload, in the same run.

The workload: a small MLP (64-64-10) on synthetic 10-class data (4,096 rows, batch 64, so 32
steps per rank per epoch), 2 CPU ranks with DDP over gloo, `epochs` epochs (5), one report
per epoch. Measured from the call of ``fit()``:

- ``first step``: until rank 0 has finished its first optimizer step;
- ``init() + fit() to first step``: the same from before the cluster's start (``runtime.init``
  or ``ray.init``), what a script pays in all: nodes may start work of their own at init
  (ours import torch in their zygotes once ``runtime.train`` is imported), so this row
  shows what that moves out of ``fit()``;
- ``fit total``: until ``fit()`` returns;
- ``fit again``: a second ``fit()`` on the same cluster (both start fresh rank processes; ours
  are forked from each node's zygote, which imported torch during the first ``fit()``);
- ``Lightning``: the same MLP and data as a ``LightningModule`` in a ``TorchTrainer`` loop
  (``RayDDPStrategy``, ``RayLightningEnvironment``, ``prepare_trainer``), ``epochs`` epochs;
- ``XGBoost``: ``XGBoostTrainer`` with a loop: 2 ranks, each with half of 8,192 rows of 16
  features, 20 boosting rounds of depth-4 trees in one model (xgboost's collective),
  a report per round.

The cluster start (``init``) is not counted but in its own row. Each side runs in a fresh
interpreter of its own (as a script would), ours first; Ray's inside a network namespace with
only loopback up (`unshare -n`), with its dashboard and usage stats off. ``--repeat N`` runs
both sides N times, alternating, and reports medians (the load average as each run began is
printed with the table); ``--first-only`` runs only the first ``fit()``.

Run::

    .venv/bin/python benchmarks/train.py            # 5 epochs, both systems
    .venv/bin/python benchmarks/train.py --quick    # 2 epochs
    .venv/bin/python benchmarks/train.py --only ours
    .venv/bin/python benchmarks/train.py --first-only --repeat 3   # the first fit, medians
    .venv/bin/python benchmarks/train.py --ray-python /work/rayenv/bin/python

Lightning and XGBoost rows run where ``lightning`` and ``xgboost`` import (on each side).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

CHILD_ENV = "RUNTIME_BENCH_RAY_CHILD"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def data_and_net() -> tuple[Any, Any, Any]:
    """The workload of the torch loops, made in each rank: the synthetic 10-class rows as
    tensors (the same on every rank and run) and a freshly seeded 64-64-10 MLP."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 64)).astype(np.float32)
    w = rng.normal(size=(64, 10)).astype(np.float32)
    y = (x @ w).argmax(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return torch.tensor(x), torch.tensor(y), net


def make_loop(lib: str) -> Any:
    """The per-rank loop, reporting through ``lib`` (``runtime.train`` or ``ray.train``)."""

    def loop(config: dict[str, Any]) -> None:
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        train = importlib.import_module(lib)
        torch_mod = importlib.import_module(lib + ".torch")
        x, y, net = data_and_net()
        model = torch_mod.prepare_model(net)
        loader = torch_mod.prepare_data_loader(
            DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
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


def make_lightning_loop(lib: str) -> Any:
    """The Lightning loop: the MLP above as a LightningModule, DDP through ``lib``."""

    def loop(config: dict[str, Any]) -> None:
        import lightning as pl
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        train = importlib.import_module(lib)
        lit = importlib.import_module(lib + ".lightning")
        x, y, net = data_and_net()

        class MLP(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def training_step(self, batch: Any, _i: int) -> Any:
                loss = torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])
                self.log("loss", loss, on_epoch=True, on_step=False, sync_dist=False)
                return loss

            def configure_optimizers(self) -> Any:
                return torch.optim.SGD(self.parameters(), lr=0.1)

        class Stamp(pl.Callback):
            first_step: float | None = None

            def on_train_batch_end(self, *args: Any) -> None:
                if self.first_step is None:
                    self.first_step = time.time()

            def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
                loss = float(trainer.callback_metrics["loss"])
                metrics = {"loss": loss, "first_step": self.first_step}
                if train.get_context().get_world_rank() == 0:
                    with open(config["stamp"], "w") as f:
                        json.dump(metrics, f)
                train.report(metrics)

        loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
        trainer = pl.Trainer(
            max_epochs=config["epochs"],
            accelerator="cpu",
            devices="auto",
            strategy=lit.RayDDPStrategy(),
            plugins=[lit.RayLightningEnvironment()],
            callbacks=[Stamp()],
            enable_checkpointing=False,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer = lit.prepare_trainer(trainer)
        trainer.fit(MLP(), loader)

    return loop


def make_xgboost_loop(lib: str) -> Any:
    """The XGBoost loop: each rank boosts on its half of the rows, in one model."""

    def loop(config: dict[str, Any]) -> None:
        import numpy as np
        import xgboost

        train = importlib.import_module(lib)
        ctx = train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        rng = np.random.default_rng(0)
        x = rng.normal(size=(8192, 16)).astype(np.float32)
        y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.float32)
        dtrain = xgboost.DMatrix(x[rank::world], label=y[rank::world])

        class Stamp(xgboost.callback.TrainingCallback):
            first_step: float | None = None

            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                if self.first_step is None:
                    self.first_step = time.time()
                loss = float(evals_log["train"]["logloss"][-1])
                metrics = {"loss": loss, "first_step": self.first_step}
                if rank == 0:
                    with open(config["stamp"], "w") as f:
                        json.dump(metrics, f)
                train.report(metrics)
                return False

        params = {"objective": "binary:logistic", "max_depth": 4, "nthread": 1}
        params["eval_metric"] = "logloss"
        xgboost.train(
            params,
            dtrain,
            num_boost_round=config["rounds"],
            evals=[(dtrain, "train")],
            verbose_eval=False,
            callbacks=[Stamp()],
        )

    return loop


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _measured(key: str, storage: str, start: float, end: float) -> dict[str, float]:
    with open(os.path.join(storage, "stamp")) as f:
        stamp = json.load(f)
    return {
        key + "first_step": stamp["first_step"] - start,
        key + "total": end - start,
        key + "loss": stamp["loss"],
    }


def _extras(epochs: int, storage: str, lib: str) -> list[tuple[str, Any, Any, dict[str, Any]]]:
    """The Lightning and XGBoost workloads that can run here: (key, trainer, loop, config)."""
    stamp = os.path.join(storage, "stamp")
    out: list[tuple[str, Any, Any, dict[str, Any]]] = []
    if _available("lightning"):
        torch_mod = importlib.import_module(lib + ".torch")
        loop = make_lightning_loop(lib)
        out.append(("pl_", torch_mod.TorchTrainer, loop, {"epochs": epochs, "stamp": stamp}))
    else:
        log(f"[{lib}] lightning is not installed: no Lightning row")
    if _available("xgboost"):
        xgb_mod = importlib.import_module(lib + ".xgboost")
        loop = make_xgboost_loop(lib)
        out.append(("xgb_", xgb_mod.XGBoostTrainer, loop, {"rounds": 20, "stamp": stamp}))
    else:
        log(f"[{lib}] xgboost is not installed: no XGBoost row")
    return out


def run_side(lib: str, epochs: int, first_only: bool) -> dict[str, Any]:
    """Every workload on one side (``lib``: ``runtime.train`` or ``ray.train``), on a cluster
    of 2 CPUs started here; ``first_only``: only the first ``fit()``."""
    train = importlib.import_module(lib)
    torch_mod = importlib.import_module(lib + ".torch")
    if lib == "ray.train":
        import ray

        out: dict[str, Any] = {"backend": "ray", "version": ray.__version__}
        start_cluster: Any = lambda: ray.init(num_cpus=2, include_dashboard=False)  # noqa: E731
        stop_cluster: Any = ray.shutdown
        quiet: dict[str, Any] = {}
    else:
        import runtime

        out = {"backend": "runtime"}
        start_cluster, stop_cluster, quiet = (
            lambda: runtime.init(num_cpus=2),
            runtime.shutdown,
            {"verbose": 0},
        )
    with tempfile.TemporaryDirectory(prefix="bench-train-") as storage:
        stamp = os.path.join(storage, "stamp")
        runs: list[tuple[str, Any, Any, dict[str, Any]]] = [
            (key, torch_mod.TorchTrainer, make_loop(lib), {"epochs": epochs, "stamp": stamp})
            for key in (("",) if first_only else ("", "again_"))
        ]
        if not first_only:
            runs += _extras(epochs, storage, lib)
        init_start = time.time()
        start_cluster()
        out["init"] = time.time() - init_start
        for key, trainer_cls, loop, config in runs:
            trainer = trainer_cls(
                loop,
                train_loop_config=config,
                scaling_config=train.ScalingConfig(num_workers=2),
                run_config=train.RunConfig(storage_path=storage, **quiet),
            )
            start = time.time()
            result = trainer.fit()
            end = time.time()
            if result.error is not None:
                raise result.error
            out.update(_measured(key, storage, start, end))
            if key == "":  # from before the cluster's start: what a script pays in all
                out["cold_first_step"] = out["first_step"] + start - init_start
    stop_cluster()
    return out


def run_ray_isolated(epochs: int, python: str, first_only: bool) -> dict[str, Any]:
    probe = subprocess.run([python, "-c", "import ray"], capture_output=True, check=False)
    if probe.returncode != 0:
        return {"backend": "ray", "skipped": f"ray is not importable by {python}"}
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return {"backend": "ray", "skipped": "`unshare` or `ip` not found: cannot isolate Ray"}
    prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-r", "-n"]
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        path = os.path.join(tmp, "ray.json")
        cmd = [
            *prefix, "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh",
            python, os.path.abspath(__file__), "--only", "ray", "--json", path,
            "--epochs", str(epochs), *(["--first-only"] if first_only else []),
        ]  # fmt: skip
        env = {
            **os.environ,
            CHILD_ENV: "1",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        log(f"[ray] running in a loopback-only network namespace: {shlex.join(cmd)}")
        return _child_report(cmd, env, path, "ray")


def run_ours_isolated(epochs: int, first_only: bool) -> dict[str, Any]:
    """Our side in a fresh interpreter (as a script runs it: nothing imported beforehand)."""
    with tempfile.TemporaryDirectory(prefix="bench-ours-") as tmp:
        path = os.path.join(tmp, "ours.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--only", "ours", "--json", path,
               "--epochs", str(epochs), *(["--first-only"] if first_only else [])]  # fmt: skip
        return _child_report(cmd, {**os.environ, CHILD_ENV: "1"}, path, "runtime")


def _child_report(cmd: list[str], env: dict[str, str], path: str, backend: str) -> dict[str, Any]:
    """Run one half's child (600 s at most) and read the report it wrote to ``path``."""
    try:
        proc = subprocess.run(cmd, env=env, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        return {"backend": backend, "skipped": f"the {backend} half ran past 600 s"}
    if os.path.exists(path):
        with open(path) as f:
            report: dict[str, Any] = json.load(f)
        return report
    return {"backend": backend, "skipped": f"the {backend} child exited with {proc.returncode}"}


ROWS = [
    ("first_step", "fit() to first training step"),
    ("cold_first_step", "init() + fit() to first step"),
    ("total", "fit() total"),
    ("again_first_step", "2nd fit(): to first step"),
    ("again_total", "2nd fit(): total"),
    ("pl_first_step", "Lightning: fit() to first step"),
    ("pl_total", "Lightning: fit() total"),
    ("xgb_first_step", "XGBoost (20 rounds): fit() to first round"),
    ("xgb_total", "XGBoost (20 rounds): fit() total"),
]


def median_of(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the runs that have it (the first run's other keys)."""
    out = dict(reports[0])
    for key, value in reports[0].items():
        if isinstance(value, float):
            out[key] = statistics.median(r[key] for r in reports if key in r)
    return out


def table(ours: dict[str, Any], ray: dict[str, Any], epochs: int, runs: int) -> str:
    lines = [
        f"2 CPU ranks, MLP 64-64-10, 4096 rows, batch 64, {epochs} epochs"
        + (f"; medians of {runs} runs" if runs > 1 else ""),
        "| metric | runtime | Ray Train | Ray / runtime |",
        "|---|---|---|---|",
    ]
    for key, label in ROWS:
        a = ours.get(key)
        b = ray.get(key)
        if a is None and b is None:
            continue
        ratio = f"{b / a:.1f}x" if a and b else "-"
        a_s = f"{a:.2f} s" if a is not None else ours.get("skipped", "-")
        b_s = f"{b:.2f} s" if b is not None else ray.get("skipped", "-")
        lines.append(f"| {label} | {a_s} | {b_s} | {ratio} |")
    lines.append(
        f"| final loss | {ours.get('loss', float('nan')):.4f} | "
        f"{ray.get('loss', float('nan')):.4f} | |"
    )
    return "\n".join(lines)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of 5")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--only", choices=("ours", "ray"), default=None)
    parser.add_argument("--first-only", action="store_true", help="only the first fit()")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side (medians)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    default_ray = "/work/rayenv/bin/python"
    parser.add_argument(
        "--ray-python",
        default=default_ray if os.path.exists(default_ray) else sys.executable,
        help="the interpreter of an environment with Ray 2.60 (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 5)
    if args.only and os.environ.get(CHILD_ENV) == "1":
        lib = "ray.train" if args.only == "ray" else "runtime.train"
        report = run_side(lib, epochs, args.first_only)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f)
        return 0
    mine: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for i in range(args.repeat):
        # each side in a fresh process, one after the other, with the load when each began
        if args.only != "ray":
            load = _load()
            mine.append({**run_ours_isolated(epochs, args.first_only), "load": load})
            log(f"[runtime] run {i + 1}: {json.dumps(mine[-1])}")
        if args.only != "ours":
            load = _load()
            theirs.append({**run_ray_isolated(epochs, args.ray_python, args.first_only),
                           "load": load})  # fmt: skip
            log(f"[ray] run {i + 1}: {json.dumps(theirs[-1])}")
        if mine and theirs:  # this pair's ratios: both halves ran in the same minutes
            pair = [
                f"{key} {theirs[-1][key] / mine[-1][key]:.1f}x"
                for key, _ in ROWS
                if mine[-1].get(key) and theirs[-1].get(key)
            ]
            log(f"[pair] run {i + 1}, Ray / runtime: {', '.join(pair)}")
    ours = median_of(mine) if mine else {"skipped": "not run"}
    ray = median_of(theirs) if theirs else {"skipped": "not run"}
    print(table(ours, ray, epochs, args.repeat))
    print("load average (1, 5, 15 min) as each run began: runtime "
          f"{[r['load'] for r in mine]}, Ray {[r['load'] for r in theirs]}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runtime": mine, "ray": theirs}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
