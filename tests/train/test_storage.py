"""Checkpoints anywhere: storage through any pyarrow or fsspec filesystem (ranks upload to
it directly), uploads in the background so a step never waits on slow storage, retention
by score, a restart resuming from a checkpoint on that filesystem, and a run read back
later with ``Result.from_path``."""

from __future__ import annotations

import json
import os

import pytest

from runtime import train

from . import loops
from .slowfs import SlowFS

pytestmark = pytest.mark.timeout(120)


def _trainer(loop, config, **run):  # type: ignore[no-untyped-def]
    return train.DataParallelTrainer(
        loop,
        train_loop_config=config,
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(verbose=0, **run),
    )


def test_a_pyarrow_filesystem_object_holds_the_run_and_a_restart_resumes_from_it(
    cluster, tmp_path, out
):
    import pyarrow.fs as pafs

    remote = tmp_path / "bucket"
    remote.mkdir()
    fs = pafs.SubTreeFileSystem(str(remote), pafs.LocalFileSystem())
    result = _trainer(
        loops.counting,
        {"steps": 3, "fail_at": 1, "out": out},
        name="run",
        storage_path="experiments",
        storage_filesystem=fs,
        failure_config=train.FailureConfig(max_failures=1),
    ).fit()
    assert result.error is None, result.error
    # the paths are the filesystem's: everything landed under the subtree's base
    assert result.path == "experiments/run" and result.filesystem is fs
    on_disk = remote / "experiments" / "run"
    names = sorted(p.name for p in on_disk.iterdir() if p.name.startswith("checkpoint_"))
    # three reports completed on both ranks; (a report rank 0 alone made before the failure
    # takes a number, and its upload is deleted)
    assert len(names) == 3 and names[:2] == ["checkpoint_000001", "checkpoint_000002"]
    # the restarted group read the step-1 checkpoint through the filesystem
    assert [(m["step"], m["start"]) for m in result.metrics_history] == [(0, 0), (1, 0), (2, 2)]
    assert result.checkpoint is not None and result.checkpoint.path.endswith(names[-1])
    assert result.checkpoint.to_dict()["step"] == 2  # downloaded from the filesystem
    with result.checkpoint.as_directory() as local:
        assert os.path.isdir(local) and not local.startswith(str(remote))


def test_an_fsspec_filesystem_and_a_uri_work_as_storage(cluster, tmp_path):
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem

    base = tmp_path / "fsspec"
    base.mkdir()
    fs = DirFileSystem(path=str(base), fs=LocalFileSystem())
    result = _trainer(
        loops.counting, {"steps": 2}, name="run", storage_path="runs", storage_filesystem=fs
    ).fit()
    assert result.error is None
    assert (base / "runs" / "run" / "checkpoint_000002").is_dir()
    assert result.checkpoint is not None and result.checkpoint.to_dict()["step"] == 1

    uri = f"file://{tmp_path / 'by-uri'}"
    result = _trainer(loops.counting, {"steps": 2}, name="run", storage_path=uri).fit()
    assert result.error is None
    assert (tmp_path / "by-uri" / "run" / "checkpoint_000002").is_dir()
    with pytest.raises(TypeError, match="storage_filesystem"):
        _trainer(loops.counting, {}, storage_path="x", storage_filesystem=object()).fit()


def test_a_step_does_not_wait_for_slow_storage(cluster, tmp_path, out):
    # every file written to this storage takes 1 s; each rank writes one file per step
    fs = SlowFS(delay_s=1.0)
    result = _trainer(
        loops.timed_reports,
        {"steps": 2, "out": out},
        name="slow",
        storage_path=str(tmp_path / "slow"),
        storage_filesystem=fs,
    ).fit()
    assert result.error is None
    for rank in (0, 1):
        with open(os.path.join(out, f"report_times_r{rank}.json")) as f:
            took = json.load(f)
        assert len(took) == 2 and max(took) < 0.5, took  # a local copy, not the upload
    # and every upload still finished before fit() returned, with both ranks' files
    final = tmp_path / "slow" / "slow" / "checkpoint_000002"
    assert sorted(os.listdir(final)) == ["weights-rank0.bin", "weights-rank1.bin"]


def test_result_from_path_reads_a_finished_run_back_with_its_best_checkpoints(cluster, tmp_path):
    scores = [0.3, 0.9, 0.1, 0.5]
    result = _trainer(
        loops.counting,
        {"steps": 4, "scores": scores},
        name="scored",
        storage_path=str(tmp_path),
        checkpoint_config=train.CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute="score", checkpoint_score_order="max"
        ),
    ).fit()
    assert result.error is None
    # the two best by score (steps 1 and 3), and the latest (step 3) which is among them
    kept = [m["step"] for _, m in result.best_checkpoints]
    assert kept == [1, 3]
    best = result.get_best_checkpoint("score", "max")
    assert best is not None and best.to_dict()["step"] == 1
    worst_kept = result.get_best_checkpoint("score", "min")
    assert worst_kept is not None and worst_kept.to_dict()["step"] == 3
    assert result.get_best_checkpoint("no-such-metric", "max") is None
    with pytest.raises(ValueError, match="mode"):
        result.get_best_checkpoint("score", "best")

    again = train.Result.from_path(result.path)
    assert again.metrics == result.metrics
    assert again.metrics_history == result.metrics_history
    assert [m for _, m in again.best_checkpoints] == [m for _, m in result.best_checkpoints]
    assert again.checkpoint == result.checkpoint and again.error is None
    restored = again.get_best_checkpoint("score", "max")
    assert restored is not None and restored.to_dict()["step"] == 1
    with pytest.raises(FileNotFoundError):
        train.Result.from_path(str(tmp_path / "nothing-here"))


def test_a_failed_run_leaves_its_error_for_from_path(cluster, tmp_path):
    result = _trainer(loops.always_fails, {}, name="failed", storage_path=str(tmp_path)).fit()
    assert isinstance(result.error, train.TrainingFailedError)
    again = train.Result.from_path(result.path)
    assert again.error is not None and "rank 1 always fails" in str(again.error)
    assert again.metrics == {"step": 0}


def test_restore_continues_a_failed_run_in_its_folder_from_its_latest_checkpoint(
    cluster, tmp_path, out
):
    from runtime.train.torch import TorchTrainer

    first = _trainer(
        loops.counting,
        {"steps": 5, "fail_at": 1, "out": out},
        name="crashed",
        storage_path=str(tmp_path),
    ).fit()
    assert isinstance(first.error, train.TrainingFailedError)
    assert [m["step"] for m in first.metrics_history] == [0, 1]
    assert train.DataParallelTrainer.can_restore(first.path)
    assert not train.DataParallelTrainer.can_restore(str(tmp_path / "nothing"))

    trainer = train.DataParallelTrainer.restore(first.path)
    result = trainer.fit()
    assert result.error is None, result.error
    assert result.path == first.path
    # the old reports, then the new ones from the step-1 checkpoint on
    assert [(m["step"], m["start"]) for m in result.metrics_history] == [
        (0, 0),
        (1, 0),
        (2, 2),
        (3, 2),
        (4, 2),
    ]
    names = sorted(d for d in os.listdir(result.path) if d.startswith("checkpoint_"))
    assert len(names) == 5 and names[:2] == ["checkpoint_000001", "checkpoint_000002"]
    assert result.checkpoint is not None and result.checkpoint.path.endswith(names[-1])
    assert train.Result.from_path(result.path).metrics == {**result.metrics}

    with pytest.raises(TypeError, match="DataParallelTrainer"):
        TorchTrainer.restore(first.path)
    with pytest.raises(FileNotFoundError):
        train.DataParallelTrainer.restore(str(tmp_path / "nothing"))
