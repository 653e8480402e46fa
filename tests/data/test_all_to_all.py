"""Shuffles, sorts, group-bys, zips, unions, splits and actor pools, against pandas."""

from __future__ import annotations

import functools
import operator
import os
import threading

import numpy as np
import pandas as pd
import pytest

import runtime
from runtime import data

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(90)]


def _frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"k": rng.integers(0, 7, n), "g": rng.choice(["a", "b"], n), "v": rng.normal(size=n)}
    )


def _ds(df: pd.DataFrame) -> data.Dataset:
    return data.from_pandas([df.iloc[i : i + 50] for i in range(0, len(df), 50)])


def test_random_shuffle_permutes_all_rows_and_is_seeded() -> None:
    ds = data.range(500, override_num_blocks=5)
    a = [r["id"] for r in ds.random_shuffle(seed=3).take_all()]
    b = [r["id"] for r in ds.random_shuffle(seed=3).take_all()]
    assert sorted(a) == list(range(500)) and a != list(range(500)) and a == b


@pytest.mark.parametrize("descending", [False, True])
def test_sort_matches_pandas(descending: bool) -> None:
    df = _frame()
    got = _ds(df).sort("v", descending=descending).to_pandas()
    want = df.sort_values("v", ascending=not descending).reset_index(drop=True)
    np.testing.assert_allclose(got["v"], want["v"])
    two = _ds(df).sort(["k", "v"]).to_pandas()
    np.testing.assert_allclose(two["v"], df.sort_values(["k", "v"])["v"])


def test_groupby_aggregates_match_pandas() -> None:
    df = _frame()
    g = _ds(df).groupby("k")
    want = df.groupby("k")["v"]
    assert g.count().to_pandas()["count()"].tolist() == want.size().tolist()
    np.testing.assert_allclose(g.sum("v").to_pandas()["sum(v)"], want.sum())
    np.testing.assert_allclose(g.mean("v").to_pandas()["mean(v)"], want.mean())
    np.testing.assert_allclose(g.min("v").to_pandas()["min(v)"], want.min())
    np.testing.assert_allclose(g.max("v").to_pandas()["max(v)"], want.max())
    np.testing.assert_allclose(g.std("v").to_pandas()["std(v)"], want.std())
    multi = _ds(df).groupby(["g", "k"]).aggregate(data.Count(), data.Mean("v")).to_pandas()
    wm = df.groupby(["g", "k"])["v"].agg(["size", "mean"]).reset_index()
    assert multi[["g", "k"]].values.tolist() == wm[["g", "k"]].values.tolist()
    np.testing.assert_allclose(multi["mean(v)"], wm["mean"])


def test_map_groups_sees_whole_groups() -> None:
    df = _frame()
    out = (
        _ds(df)
        .groupby("k")
        .map_groups(lambda b: {"k": b["k"][:1], "n": [len(b["k"])], "s": [b["v"].sum()]})
        .to_pandas()
        .sort_values("k")
    )
    want = df.groupby("k")["v"].agg(["size", "sum"])
    assert out["n"].tolist() == want["size"].tolist()
    np.testing.assert_allclose(out["s"], want["sum"])


def test_unique_union_zip_repartition() -> None:
    df = _frame()
    assert sorted(_ds(df).unique("k")) == sorted(df["k"].unique().tolist())
    u = data.range(5).union(data.range(3), data.from_items([{"id": 99}]))
    assert [r["id"] for r in u.take_all()] == [0, 1, 2, 3, 4, 0, 1, 2, 99]
    assert u.count() == 9
    z = data.range(100, override_num_blocks=3).zip(
        data.range(100, override_num_blocks=7).map(lambda r: {"sq": r["id"] ** 2})
    )
    assert all(r["sq"] == r["id"] ** 2 for r in z.take_all())
    with pytest.raises(ValueError, match="same number of rows"):
        data.range(3).zip(data.range(4)).take_all()
    rep = data.range(100, override_num_blocks=9).repartition(4).materialize()
    assert rep.num_blocks() == 4 and [r["id"] for r in rep.take_all()] == list(range(100))


def test_random_sample_keeps_about_the_fraction() -> None:
    n = data.range(10_000).random_sample(0.3, seed=1).count()
    assert 2500 < n < 3500


def test_split_and_train_test_split_are_disjoint_and_complete() -> None:
    ds = data.range(103, override_num_blocks=4)
    parts = ds.split(3)
    ids = [[r["id"] for r in p.take_all()] for p in parts]
    assert sorted(functools.reduce(operator.iadd, ids, [])) == list(range(103))
    eq = ds.split(4, equal=True)
    assert [p.count() for p in eq] == [25] * 4
    train, test = ds.train_test_split(0.2)
    assert train.count() + test.count() == 103 and test.count() == 21
    tr = {r["id"] for r in train.take_all()}
    assert tr.isdisjoint({r["id"] for r in test.take_all()})


def test_streaming_split_feeds_concurrent_consumers_disjoint_blocks() -> None:
    ds = data.range(1000, override_num_blocks=10).map(lambda r: {"id": r["id"]})
    its = ds.streaming_split(2)
    seen: list[list[int]] = [[], []]

    def consume(i: int) -> None:
        for batch in its[i].iter_batches(batch_size=None):
            seen[i].extend(batch["id"].tolist())

    for _epoch in range(2):
        seen = [[], []]
        threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(seen[0] + seen[1]) == list(range(1000))
        assert not set(seen[0]) & set(seen[1])
    eq = ds.streaming_split(2, equal=True)
    counts = [sum(len(b["id"]) for b in it.iter_batches(batch_size=None)) for it in eq]
    assert counts == [500, 500]


class _Counted:
    """A callable class that records each construction in a directory."""

    def __init__(self, directory: str, offset: int) -> None:
        self.offset = offset
        with open(os.path.join(directory, f"{os.getpid()}-{id(self)}"), "w"):
            pass

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"id": batch["id"], "y": batch["id"] + self.offset}


def test_actor_pool_constructs_each_actor_once(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    ds = data.range(2000, override_num_blocks=20).map_batches(
        _Counted, fn_constructor_args=(directory, 7), concurrency=2, batch_size=50
    )
    rows = ds.take_all()
    assert [r["y"] for r in rows] == [i + 7 for i in range(2000)]
    assert len(os.listdir(directory)) == 2  # two actors, each constructed once for 40 batches


def test_autoscaling_pool_stays_within_bounds(tmp_path: os.PathLike[str]) -> None:
    directory = str(tmp_path)
    ds = (
        data.range(600, override_num_blocks=12)
        .map_batches(
            _Counted, fn_constructor_args=(directory, 0), concurrency=(1, 3), batch_size=None
        )
        .map(lambda r: {"z": r["y"] * 2})
    )
    assert ds.sum("z") == 2 * sum(range(600))
    assert 1 <= len(os.listdir(directory)) <= 3


def test_map_batches_class_errors_carry_the_batch() -> None:
    class Bad:
        def __call__(self, batch):  # type: ignore[no-untyped-def]
            raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="model exploded") as info:
        data.range(10).map_batches(Bad, concurrency=1).take_all()
    assert "MapBatches(Bad) failed on a batch" in "".join(info.value.__notes__)


@runtime.remote
class _ShardConsumer:
    """Stands for a Train worker: gets a DataIterator and reads its shard, epoch by epoch."""

    def consume(self, it: data.DataIterator, epochs: int) -> list[list[int]]:
        out = []
        for _ in range(epochs):
            ids: list[int] = []
            for batch in it.iter_batches(batch_size=None):
                ids.extend(batch["id"].tolist())
            out.append(ids)
        return out


def test_streaming_split_shards_feed_actors_in_other_processes() -> None:
    ds = data.range(1000, override_num_blocks=10).map(lambda r: {"id": r["id"]})
    its = ds.streaming_split(2)
    workers = [_ShardConsumer.remote() for _ in range(2)]
    got = runtime.get([w.consume.remote(it, 2) for w, it in zip(workers, its, strict=True)])
    for epoch in range(2):
        a, b = got[0][epoch], got[1][epoch]
        assert sorted(a + b) == list(range(1000)) and not set(a) & set(b)


def test_custom_aggregate_fn_alone_and_mixed_with_built_ins() -> None:
    df = _frame()
    longest = data.AggregateFn(
        init=lambda key: 0,
        accumulate_row=lambda s, row: max(s, abs(row["v"])),
        merge=max,
        finalize=lambda s: round(s, 6),
        name="maxabs(v)",
    )
    got = _ds(df).groupby("k").aggregate(longest, data.Mean("v"), data.Count()).to_pandas()
    want = df.groupby("k")["v"]
    np.testing.assert_allclose(got["maxabs(v)"], want.apply(lambda v: round(v.abs().max(), 6)))
    np.testing.assert_allclose(got["mean(v)"], want.mean())
    assert got["count()"].tolist() == want.size().tolist()
    whole = _ds(df).aggregate(longest, data.Std("v"), data.Sum("v"))
    assert whole["maxabs(v)"] == pytest.approx(round(df["v"].abs().max(), 6))
    assert whole["std(v)"] == pytest.approx(df["v"].std())
    assert whole["sum(v)"] == pytest.approx(df["v"].sum())
    with pytest.raises(ValueError, match="exactly one"):
        data.AggregateFn(init=lambda k: 0, merge=max)
    with pytest.raises(TypeError, match="AggregateFn"):
        _ds(df).groupby("k").aggregate("sum")
