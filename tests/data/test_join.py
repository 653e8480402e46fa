"""Joins (hash partitioned, each partition joined by one task) and the other all-to-all
operators added with them: sort on several keys, repartition by keys or rows per block."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from runtime import data
from tests.conftest import until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(60)]


def _sides() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(1)
    left = pd.DataFrame({"id": np.arange(200), "a": rng.random(200)})
    right = pd.DataFrame({"id": rng.integers(100, 300, 150), "b": np.arange(150)})
    return left, right


def _ds(df: pd.DataFrame, blocks: int) -> data.Dataset:
    return data.from_pandas([df.iloc[i::blocks].reset_index(drop=True) for i in range(blocks)])


@pytest.mark.parametrize(
    ("join_type", "how"),
    [("inner", "inner"), ("left_outer", "left"), ("right_outer", "right"), ("full_outer", "outer")],
)
def test_join_matches_pandas_merge(join_type: str, how: str) -> None:
    left, right = _sides()
    got = _ds(left, 4).join(_ds(right, 3), join_type, num_partitions=5, on=("id",)).to_pandas()
    want = left.merge(right, on="id", how=how)
    key = ["id", "b", "a"]
    got = got[want.columns].sort_values(key, na_position="last").reset_index(drop=True)
    want = want.sort_values(key, na_position="last").reset_index(drop=True)
    assert len(got) == len(want)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_join_on_differently_named_keys_with_suffixes() -> None:
    left = data.from_items([{"k": i, "v": i} for i in range(10)])
    right = data.from_items([{"key": i, "v": -i} for i in range(5, 15)])
    rows = left.join(
        right, "inner", 2, on=["k"], right_on=["key"], left_suffix="_l", right_suffix="_r"
    ).take_all()
    assert sorted((r["k"], r["v_l"], r["v_r"]) for r in rows) == [(i, i, -i) for i in range(5, 10)]


def test_a_join_key_missing_on_one_side_names_the_column_and_side() -> None:
    left = data.from_items([{"id": 1, "x": 2}])
    right = data.from_items([{"other": 1}])
    with pytest.raises(KeyError, match="right dataset has no key column 'id'"):
        left.join(right, "inner", 2).take_all()
    from runtime.util.state import list_tasks

    until(lambda: not list_tasks())  # nothing of the failed join keeps running
    with pytest.raises(ValueError, match="join_type"):
        left.join(right, "sideways", 2)


def test_sort_on_several_keys_with_per_key_order() -> None:
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"a": rng.integers(0, 5, 300), "b": rng.random(300)})
    got = _ds(df, 4).sort(["a", "b"], descending=[False, True]).to_pandas()
    want = df.sort_values(["a", "b"], ascending=[True, False]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    with pytest.raises(KeyError, match="no column 'zz'"):
        _ds(df, 2).sort("zz").take_all()


def test_repartition_by_keys_puts_each_key_in_one_block() -> None:
    df = pd.DataFrame({"g": np.arange(120) % 7, "v": np.arange(120)})
    mat = _ds(df, 5).repartition(3, keys="g").materialize()
    assert mat.num_blocks() == 3 and mat.count() == 120
    import runtime

    owners: dict[int, int] = {}
    for i, ref in enumerate(mat.to_arrow_refs()):
        for g in set(runtime.get(ref).column("g").to_pylist()):
            assert owners.setdefault(g, i) == i


def test_repartition_by_target_rows_per_block() -> None:
    mat = data.range(1000, override_num_blocks=3).repartition(target_num_rows_per_block=300)
    mat = mat.materialize()
    assert mat.num_blocks() == 4
    assert [r["id"] for r in mat.take_all()] == list(range(1000))


def test_random_shuffle_with_a_seed_is_reproducible() -> None:
    a = [r["id"] for r in data.range(200).random_shuffle(seed=5).take_all()]
    b = [r["id"] for r in data.range(200).random_shuffle(seed=5).take_all()]
    assert a == b and a != list(range(200)) and sorted(a) == list(range(200))


def test_join_carries_tensor_columns() -> None:
    left = data.from_items([{"id": i, "x": np.full(3, i, dtype=np.float32)} for i in range(6)])
    right = data.from_items([{"id": i, "y": i * 10} for i in range(3, 9)])
    rows = sorted(left.join(right, "inner", 2).take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == [3, 4, 5]
    assert all(r["x"].shape == (3,) and (r["x"] == r["id"]).all() for r in rows)
