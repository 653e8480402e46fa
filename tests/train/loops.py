"""Training loops the tests run (importable, so node processes load them by reference)."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from typing import Any

from runtime import train


def _parent_and_cmdline(pid: int) -> tuple[int, bytes]:
    with open(f"/proc/{pid}/stat") as f:
        parent = int(f.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{parent}/cmdline", "rb") as f:
        return parent, f.read()


def node_pid() -> int:
    """The node process that started this rank's process: its parent, or the parent of the
    node's zygote when the process was forked from it or from one of its helpers (a zygote
    started for the node runs zygote_main; one the node forked as it started, and its helpers,
    have the node's own command line)."""
    parent, cmdline = _parent_and_cmdline(os.getpid())
    for _ in range(2):  # the zygote, and a helper of it
        grandparent, above = _parent_and_cmdline(parent)
        if b"runtime.core.tools.zygote_main" not in cmdline and cmdline != above:
            break
        parent, cmdline = grandparent, above
    return parent


def make_model() -> Any:
    import torch

    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def digits() -> tuple[Any, Any]:
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


def _wait_for(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)


def ddp_digits(config: dict[str, Any]) -> None:
    """A small MLP on scikit-learn digits with DDP; records parameters per rank per epoch.

    ``fail_at``/``kill_at``: rank 1 raises / SIGKILLs its own process after reporting that
    epoch (once: a marker file in ``out`` remembers it happened); with ``kill: "node"`` it
    SIGKILLs its parent, the node process that started its process (its own dies with it);
    with ``kill: "outside"`` it writes ``doomed`` and waits for the test to kill it.
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from runtime.train.torch import get_device, prepare_data_loader, prepare_model

    out = config["out"]
    ctx = train.get_context()
    rank = ctx.get_world_rank()
    x, y = digits()
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=config.get("lr", 0.5))
    start = 0
    checkpoint = train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "model.pt"))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"] + 1
    model = prepare_model(model)
    loader = prepare_data_loader(DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True))
    loss_fn = torch.nn.CrossEntropyLoss()
    with open(os.path.join(out, f"ctx_r{rank}.json"), "w") as f:
        json.dump(
            {
                "world_rank": rank,
                "world_size": ctx.get_world_size(),
                "local_rank": ctx.get_local_rank(),
                "node_rank": ctx.get_node_rank(),
                "node_id": ctx.get_node_id(),
                "pid": os.getpid(),
                "ppid": node_pid(),
                "device": str(get_device()),
                "threads": torch.get_num_threads(),
                "batches": len(loader),
            },
            f,
        )
    for epoch in range(start, config.get("epochs", 3)):
        total, count = 0.0, 0
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
            count += len(yb)
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        torch.save(flat, os.path.join(out, f"params_r{rank}_e{epoch}.pt"))
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:
                inner = model.module if hasattr(model, "module") else model
                state = {"model": inner.state_dict(), "opt": opt.state_dict(), "epoch": epoch}
                torch.save(state, os.path.join(d, "model.pt"))
                ckpt = train.Checkpoint.from_directory(d)
            metrics = {"epoch": epoch, "loss": total / count, "start": start, "rank": rank}
            train.report(metrics, checkpoint=ckpt)
        marker = os.path.join(out, "failed_once")
        if rank == 1 and epoch == config.get("fail_at") and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("injected failure in rank 1")
        if rank == 1 and epoch == config.get("kill_at") and not os.path.exists(marker):
            open(marker, "w").close()
            # wait until this epoch's checkpoint is persisted, then die like kill -9
            name = f"checkpoint_{epoch + 1:06d}"
            _wait_for(os.path.join(ctx.get_storage_path(), name))
            how = config.get("kill", "process")
            if how == "outside":
                open(os.path.join(out, "doomed"), "w").close()
                time.sleep(60)  # the test SIGKILLs this process or its node meanwhile
                raise RuntimeError("nobody killed this rank")
            os.kill(node_pid() if how == "node" else os.getpid(), signal.SIGKILL)
    if rank == 0:
        inner = model.module if hasattr(model, "module") else model
        with torch.no_grad():
            torch.save(inner(x[:50]), os.path.join(out, "predictions.pt"))


def always_fails(config: dict[str, Any]) -> None:
    train.report({"step": 0})
    if train.get_context().get_world_rank() == 1:
        raise ValueError("rank 1 always fails")


def read_shards(config: dict[str, Any]) -> None:
    """Each rank records the ids of its train shard per epoch, and the whole valid set."""
    ctx = train.get_context()
    rank = ctx.get_world_rank()
    shard = train.get_dataset_shard("train")
    seen = []
    for _ in range(config["epochs"]):
        ids: list[int] = []
        for batch in shard.iter_batches(batch_size=16):
            ids.extend(int(i) for i in batch["id"])
        seen.append(ids)
    valid = [int(i) for b in train.get_dataset_shard("valid").iter_batches() for i in b["id"]]
    torch_rows = sum(len(b["id"]) for b in shard.iter_torch_batches(batch_size=8))
    with open(os.path.join(config["out"], f"shard_r{rank}.json"), "w") as f:
        json.dump({"epochs": seen, "valid": valid, "torch_rows": torch_rows}, f)
    train.report({"rows": sum(len(s) for s in seen)})


def slow_rank(config: dict[str, Any]) -> None:
    """Rank 1 goes quiet for a while before its first report (a stand-in for a hung rank)."""
    if train.get_context().get_world_rank() == 1:
        time.sleep(config["quiet_s"])
    train.report({"done": 1})


def linear(config: dict[str, Any]) -> None:
    """A linear regression per trial: loss depends on lr; reports and checkpoints each step."""
    import torch

    from runtime.train.torch import prepare_model

    torch.manual_seed(0)
    model = prepare_model(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    gen = torch.Generator().manual_seed(train.get_context().get_world_rank())
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])
    for step in range(config.get("steps", 3)):
        x = torch.randn(64, 4, generator=gen)
        loss = ((model(x).squeeze(-1) - x @ w) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ckpt = train.Checkpoint.from_dict({"step": step})
        train.report({"loss": loss.item(), "step": step}, checkpoint=ckpt)


def counting(config: dict[str, Any]) -> None:
    """Reports ``steps`` times, a checkpoint every time (named if ``names`` is set)."""
    rank = train.get_context().get_world_rank()
    start = 0
    if (ckpt := train.get_checkpoint()) is not None:
        start = ckpt.to_dict()["step"] + 1
    for step in range(start, config.get("steps", 5)):
        checkpoint = None
        if config.get("checkpoint", True):
            checkpoint = train.Checkpoint.from_dict({"step": step, "rank": rank})
        name = f"{config['names']}-{step}" if config.get("names") else None
        metrics = {
            "step": step,
            "score": config.get("scores", [step] * 100)[step],
            "env": os.environ.get("TRAIN_TEST_FLAG"),
            "start": start,
        }
        train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        if step == config.get("fail_at") and rank == 1:
            marker = os.path.join(config["out"], "failed_once")
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("injected failure in rank 1")


def timed_reports(config: dict[str, Any]) -> None:
    """Reports a big-ish checkpoint per step and records how long each report call took."""
    rank = train.get_context().get_world_rank()
    took = []
    for step in range(config["steps"]):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, f"weights-rank{rank}.bin"), "wb") as f:
                f.write(os.urandom(64 * 1024))
            t0 = time.monotonic()
            train.report({"step": step}, checkpoint=train.Checkpoint.from_directory(d))
            took.append(time.monotonic() - t0)
    with open(os.path.join(config["out"], f"report_times_r{rank}.json"), "w") as f:
        json.dump(took, f)


def hangs_a_collective(config: dict[str, Any]) -> None:
    """Rank 1 sleeps (in user code) while rank 0 waits in an all-reduce."""
    import torch
    import torch.distributed as dist

    rank = train.get_context().get_world_rank()
    if rank == 1:
        time.sleep(config["sleep_s"])
    t = torch.ones(1)
    dist.all_reduce(t)
    train.report({"sum": float(t.item())})


def reproducible(config: dict[str, Any]) -> None:
    """Dropout, a shuffled loader and random init, after enable_reproducibility(seed)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from runtime.train.torch import (
        enable_reproducibility,
        get_devices,
        prepare_data_loader,
        prepare_model,
    )

    enable_reproducibility(config["seed"])
    x = torch.randn(256, 8)
    y = (x.sum(dim=1, keepdim=True) > 0).float()
    model = prepare_model(
        torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1))
    )
    loader = prepare_data_loader(DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for xb, yb in loader:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    train.report(
        {
            "params": flat.tolist(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "devices": [str(d) for d in get_devices()],
        }
    )


def fsdp_regression(config: dict[str, Any]) -> None:
    """A 2-layer net sharded with FSDP2; reports loss and whether parameters are sharded;
    rank 0 checkpoints the full (gathered) state dict."""
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.tensor import DTensor

    from runtime.train.torch import prepare_model

    rank = train.get_context().get_world_rank()
    torch.manual_seed(0)
    model = prepare_model(
        torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)),
        parallel_strategy="fsdp",
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(rank)
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])
    for _ in range(config["steps"]):
        xb = torch.randn(64, 4, generator=gen)
        loss = ((model(xb).squeeze(-1) - xb @ w) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sharded = all(isinstance(p, DTensor) for p in model.parameters())
        local = sum(p.to_local().numel() for p in model.parameters())  # type: ignore[attr-defined]
        full = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:
                torch.save(full, os.path.join(d, "model.pt"))
                ckpt = train.Checkpoint.from_directory(d)
            metrics = {"loss": loss.item(), "sharded": sharded, "local_numel": local}
            train.report(metrics, checkpoint=ckpt)


def amp_loop(config: dict[str, Any]) -> None:
    """accelerate(amp=True): forward under autocast (bfloat16 on CPU)."""
    import torch

    from runtime.train.torch import accelerate, backward, prepare_model, prepare_optimizer

    accelerate(amp=True)
    torch.manual_seed(0)
    model = prepare_model(torch.nn.Linear(4, 1))
    opt = prepare_optimizer(torch.optim.SGD(model.parameters(), lr=0.05))
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])
    losses = []
    dtype = ""
    for _ in range(30):
        xb = torch.randn(32, 4)
        out = model(xb)
        dtype = str(out.dtype)
        loss = ((out.float().squeeze(-1) - xb @ w) ** 2).mean()
        opt.zero_grad()
        backward(loss)
        opt.step()
        losses.append(loss.item())
    accelerate(amp=False)
    train.report({"dtype": dtype, "first": losses[0], "last": losses[-1]})


def lightgbm_own_loop(config: dict[str, Any]) -> None:
    """Your own lightgbm.train on this rank's shard, joined by network_params(); reports a
    digest of the model so the test can see every rank built the same one."""
    import hashlib

    import lightgbm
    import numpy as np

    from runtime.train.lightgbm import network_params

    rows = list(train.get_dataset_shard("train").iter_rows())
    x = np.array([[r["x0"], r["x1"], r["x2"], r["x3"]] for r in rows])
    y = np.array([r["label"] for r in rows])
    params = {"objective": "binary", "num_threads": 1, "verbose": -1, **network_params()}
    booster = lightgbm.train(params, lightgbm.Dataset(x, label=y), num_boost_round=5)
    text = booster.model_to_string()
    digest = hashlib.sha256(
        text[text.index("Tree=0") : text.index("end of trees")].encode()
    ).hexdigest()
    train.report({"model": digest, "rows": len(rows), "ids": sorted(r["id"] for r in rows)})


def lightning_loop(config: dict[str, Any]) -> None:
    """A Lightning regression with RayDDPStrategy, RayLightningEnvironment and the report
    callback; resumes from the reported checkpoint after a restart."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from runtime.train.lightning import (
        RayDDPStrategy,
        RayLightningEnvironment,
        RayTrainReportCallback,
        prepare_trainer,
    )

    class Regression(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, _: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)
            self.log("train_loss", loss, on_epoch=True, on_step=False, sync_dist=True)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([1.0, -2.0, 3.0, 0.5])
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    trainer = pl.Trainer(
        max_epochs=config["epochs"],
        accelerator="cpu",
        devices="auto",
        strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()],
        callbacks=[RayTrainReportCallback()],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    trainer = prepare_trainer(trainer)
    ckpt_path = None
    if (ckpt := train.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            ckpt_path = os.path.join(d, RayTrainReportCallback.CHECKPOINT_NAME)
            trainer.fit(Regression(), train_dataloaders=loader, ckpt_path=ckpt_path)
    else:
        trainer.fit(Regression(), train_dataloaders=loader)
    marker = os.path.join(config["out"], "world")
    with open(f"{marker}_r{train.get_context().get_world_rank()}.json", "w") as f:
        facts = {"world_size": trainer.world_size, "rank": trainer.global_rank}
        json.dump({**facts, "threads": torch.get_num_threads()}, f)


def transformers_loop(config: dict[str, Any]) -> None:
    """A tiny GPT-2 built from a config (no download), trained by transformers.Trainer on
    two ranks, reporting at each epoch's save; records the final parameters per rank."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from runtime.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    rank = train.get_context().get_world_rank()

    class Sequences(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int) -> dict[str, Any]:
            ids = torch.tensor([(i + 3 * j) % 32 for j in range(8)])
            return {"input_ids": ids, "labels": ids}

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=32, n_positions=8)
    )
    args = TrainingArguments(
        output_dir=os.path.join(config["out"], f"hf_r{rank}"),
        use_cpu=True,
        num_train_epochs=config["epochs"],
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        save_strategy="epoch",
        logging_strategy="epoch",
        report_to=[],
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Sequences())
    trainer.add_callback(RayTrainReportCallback())
    trainer = prepare_trainer(trainer)
    trainer.train()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.save(flat, os.path.join(config["out"], f"hf_params_r{rank}.pt"))
    with open(os.path.join(config["out"], f"hf_r{rank}.json"), "w") as f:
        json.dump({"world_size": args.world_size, "steps": trainer.state.global_step}, f)


def elastic_steps(config: dict[str, Any]) -> None:
    """Reports ``steps`` steps (rank 0 checkpoints each) with the world size; optionally the
    last of 3 ranks kills its node (the node process that started the rank's own process) at
    ``kill_at``, or rank 0 kills the actor
    named ``blocker`` at ``free_at`` (freeing a node for the group to grow into). With
    ``grown_steps``, a group of 3 ends after that many steps: a smaller one goes on (up to
    ``steps``) until the controller grows it, however long its view of the freed node lags."""
    import runtime

    ctx = train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    start = 0
    if (ckpt := train.get_checkpoint()) is not None:
        start = ckpt.to_dict()["step"] + 1
    for step in range(start, config["steps"]):
        time.sleep(config.get("pause_s", 0.2))
        ckpt = train.Checkpoint.from_dict({"step": step}) if rank == 0 else None
        train.report({"step": step, "world_size": world, "start": start}, checkpoint=ckpt)
        if world == 3 and step - start + 1 >= config.get("grown_steps", config["steps"]):
            return
        marker = os.path.join(config["out"], "acted")
        if os.path.exists(marker):
            continue
        if step == config.get("kill_at") and world == 3 and rank == 2:
            open(marker, "w").close()
            time.sleep(0.5)  # let this step's report reach the controller
            os.kill(node_pid(), signal.SIGKILL)
        if step == config.get("free_at") and rank == 0:
            open(marker, "w").close()
            runtime.kill(runtime.get_actor(config["blocker"]))


def process_facts(config: dict[str, Any]) -> None:
    """Writes where this rank runs to ``out``: its pid, its parent's, the GPUs it sees and
    its devices; then reports once."""
    import runtime
    from runtime.train.torch import get_device, get_devices

    rank = train.get_context().get_world_rank()
    with open(os.path.join(config["out"], f"facts_r{rank}.json"), "w") as f:
        json.dump(
            {
                "pid": os.getpid(),
                "ppid": node_pid(),
                "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "gpu_ids": [str(i) for i in runtime.get_gpu_ids()],
                "device": str(get_device()),
                "devices": [str(d) for d in get_devices()],
            },
            f,
        )
    train.report({"rank": rank})
