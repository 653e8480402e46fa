"""Preprocessors: statistics fit on a Dataset match numpy/pandas, transforms apply to
Datasets and single batches alike, and the fitted state pickles."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from runtime import data
from runtime.data.preprocessors import (
    Chain,
    Concatenator,
    LabelEncoder,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PreprocessorNotFittedException,
    SimpleImputer,
    StandardScaler,
)

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(60)]


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "x": rng.normal(5, 2, 60),
            "y": rng.integers(0, 100, 60).astype(np.float64),
            "color": rng.choice(["red", "green", "blue"], 60),
            "label": rng.choice(["cat", "dog"], 60),
        }
    )


def _ds(df: pd.DataFrame) -> data.Dataset:
    return data.from_pandas([df.iloc[:25], df.iloc[25:]])


def test_standard_scaler_matches_numpy_and_transforms_datasets_and_batches() -> None:
    df = _frame()
    scaler = StandardScaler(["x", "y"])
    out = scaler.fit_transform(_ds(df)).to_pandas()
    for c in ("x", "y"):
        want = (df[c] - df[c].mean()) / df[c].std(ddof=0)
        np.testing.assert_allclose(out[c], want)
    assert scaler.stats_["mean(x)"] == pytest.approx(df["x"].mean())
    batch = scaler.transform_batch(df.head(3))
    np.testing.assert_allclose(batch["x"], out["x"][:3])
    as_dict = scaler.transform_batch({"x": df["x"].to_numpy()[:3], "y": df["y"].to_numpy()[:3]})
    np.testing.assert_allclose(as_dict["x"], out["x"][:3])


def test_min_max_scaler_maps_into_zero_one() -> None:
    df = _frame()
    out = MinMaxScaler(["y"]).fit_transform(_ds(df)).to_pandas()
    assert out["y"].min() == 0.0 and out["y"].max() == 1.0


def test_encoders_use_sorted_categories_seen_in_fit() -> None:
    df = _frame()
    ordinal = OrdinalEncoder(["color"]).fit(_ds(df))
    assert ordinal.stats_["unique_values(color)"] == {"blue": 0, "green": 1, "red": 2}
    got = ordinal.transform_batch(pd.DataFrame({"color": ["red", "blue", "purple"]}))
    assert got["color"].tolist()[:2] == [2, 0] and pd.isna(got["color"].iloc[2])
    labels = LabelEncoder("label").fit(_ds(df))
    enc = labels.transform(_ds(df)).to_pandas()
    assert set(enc["label"]) == {0, 1}
    assert labels.inverse_transform_batch(enc.head(5))["label"].tolist() == df["label"][:5].tolist()


def test_one_hot_encoder_makes_a_vector_column() -> None:
    df = _frame()
    enc = OneHotEncoder(["color"]).fit(_ds(df))
    rows = enc.transform(_ds(df)).take_batch(60)
    assert rows["color"].shape == (60, 3)
    want = np.array([[c == k for k in ("blue", "green", "red")] for c in df["color"]])
    np.testing.assert_array_equal(rows["color"], want.astype(np.int64))
    unseen = enc.transform_batch(pd.DataFrame({"color": ["purple"]}))
    assert unseen["color"].iloc[0].tolist() == [0, 0, 0]


def test_simple_imputer_fills_with_mean_most_frequent_or_constant() -> None:
    df = pd.DataFrame({"a": [1.0, np.nan, 3.0, np.nan], "b": ["u", None, "u", "v"]})
    ds = data.from_pandas(df)
    mean = SimpleImputer(["a"]).fit_transform(ds).to_pandas()
    assert mean["a"].tolist() == [1.0, 2.0, 3.0, 2.0]
    freq = SimpleImputer(["b"], strategy="most_frequent").fit_transform(ds).to_pandas()
    assert freq["b"].tolist() == ["u", "u", "u", "v"]
    const = SimpleImputer(["a"], strategy="constant", fill_value=-1.0)
    assert const.fit_status() == "NOT_FITTABLE"
    assert const.transform(ds).to_pandas()["a"].tolist() == [1.0, -1.0, 3.0, -1.0]


def test_chain_with_concatenator_feeds_torch_a_feature_matrix() -> None:
    torch = pytest.importorskip("torch")
    df = _frame()
    chain = Chain(StandardScaler(["x", "y"]), Concatenator(["x", "y"], output_column_name="f"))
    out = chain.fit_transform(_ds(df).select_columns(["x", "y", "label"]))
    feats = out.drop_columns(["label"])
    batch = next(iter(feats.iter_torch_batches(batch_size=60, dtypes={"f": torch.float32})))
    assert tuple(batch["f"].shape) == (60, 2)
    assert out.columns() == ["label", "f"]


def test_transform_before_fit_raises_and_fitted_state_pickles() -> None:
    scaler = StandardScaler(["x"])
    with pytest.raises(PreprocessorNotFittedException):
        scaler.transform_batch(pd.DataFrame({"x": [1.0]}))
    scaler.fit(_ds(_frame()))
    copy = pickle.loads(pickle.dumps(scaler))
    assert copy.stats_ == scaler.stats_
    assert copy.transform_batch(pd.DataFrame({"x": [1.0]}))["x"].iloc[0] == pytest.approx(
        scaler.transform_batch(pd.DataFrame({"x": [1.0]}))["x"].iloc[0]
    )


def test_an_unknown_column_names_the_column() -> None:
    with pytest.raises(KeyError, match="'nope'"):
        StandardScaler(["nope"]).fit(_ds(_frame()))


def test_a_custom_preprocessor_and_ray_module_paths() -> None:
    from runtime.data.aggregate import Max
    from runtime.data.preprocessor import Preprocessor
    from runtime.data.preprocessors.chain import Chain as ChainAgain
    from runtime.data.preprocessors.encoder import OneHotEncoder as OneHotAgain
    from runtime.data.preprocessors.scaler import StandardScaler as ScalerAgain

    assert (ScalerAgain, OneHotAgain, ChainAgain) == (StandardScaler, OneHotEncoder, Chain)

    class TimesMax(Preprocessor):
        def _fit(self, ds: data.Dataset) -> None:
            self.stats_ = ds.aggregate(Max("id"))

        def _transform_pandas(self, df: pd.DataFrame) -> pd.DataFrame:
            return df * self.stats_["max(id)"]

    out = TimesMax().fit_transform(data.range(4)).take_all()
    assert [r["id"] for r in out] == [0, 3, 6, 9]
