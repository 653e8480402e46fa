"""The built-in preprocessors: scalers, encoders, an imputer, a concatenator, a chain."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Preprocessor


def _names(columns: Any, what: str) -> list[str]:
    if isinstance(columns, str):
        return [columns]
    if not isinstance(columns, (list, tuple)) or not columns:
        raise ValueError(f"{what} needs a non-empty list of column names, got {columns!r}")
    return [str(c) for c in columns]


def _outputs(columns: list[str], output_columns: Any, what: str) -> list[str]:
    if output_columns is None:
        return list(columns)
    out = _names(output_columns, what)
    if len(out) != len(columns):
        raise ValueError(
            f"{what}: output_columns must have one name per column, got {len(out)} for "
            f"{len(columns)}"
        )
    return out


def _check(df: Any, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{what}: no column {missing[0]!r} (the batch has {list(df.columns)})")


def _value_counts(ds: Any, column: str) -> dict[Any, int]:
    rows = ds.select_columns([column]).groupby(column).count().take_all()
    return {r[column]: int(r["count()"]) for r in rows if r[column] is not None}


class StandardScaler(Preprocessor):
    """``(x - mean) / std`` per column (population std, as in Ray); a constant column
    becomes 0."""

    def __init__(self, columns: list[str], output_columns: list[str] | None = None) -> None:
        super().__init__()
        self.columns = _names(columns, "StandardScaler")
        self.output_columns = _outputs(self.columns, output_columns, "StandardScaler")

    def _fit(self, ds: Any) -> None:
        from .. import _aggregate as agg

        aggs = []
        for c in self.columns:
            aggs += [agg.Mean(c), agg.Std(c, ddof=0)]
        assert self.stats_ is not None
        self.stats_.update(ds.aggregate(*aggs))

    def _transform_pandas(self, df: Any) -> Any:
        assert self.stats_ is not None
        _check(df, self.columns, "StandardScaler")
        for c, out in zip(self.columns, self.output_columns, strict=True):
            mean, std = self.stats_[f"mean({c})"], self.stats_[f"std({c})"]
            if not std:
                df[out] = 0.0 * df[c]
            else:
                df[out] = (df[c] - mean) / std
        return df


class MinMaxScaler(Preprocessor):
    """``(x - min) / (max - min)`` per column, into [0, 1]; a constant column becomes 0."""

    def __init__(self, columns: list[str], output_columns: list[str] | None = None) -> None:
        super().__init__()
        self.columns = _names(columns, "MinMaxScaler")
        self.output_columns = _outputs(self.columns, output_columns, "MinMaxScaler")

    def _fit(self, ds: Any) -> None:
        from .. import _aggregate as agg

        aggs = []
        for c in self.columns:
            aggs += [agg.Min(c), agg.Max(c)]
        assert self.stats_ is not None
        self.stats_.update(ds.aggregate(*aggs))

    def _transform_pandas(self, df: Any) -> Any:
        assert self.stats_ is not None
        _check(df, self.columns, "MinMaxScaler")
        for c, out in zip(self.columns, self.output_columns, strict=True):
            lo, hi = self.stats_[f"min({c})"], self.stats_[f"max({c})"]
            span = (hi - lo) or 1
            df[out] = (df[c] - lo) / span
        return df


class _Categorical(Preprocessor):
    """Fits ``unique_values(col)``: each value seen, in sorted order, mapped to its index."""

    columns: list[str]
    max_categories: dict[str, int] | None = None

    def _fit(self, ds: Any) -> None:
        assert self.stats_ is not None
        for c in self.columns:
            counts = _value_counts(ds, c)
            values = sorted(counts, key=_sort_key)
            limit = (self.max_categories or {}).get(c)
            if limit is not None:
                top = sorted(counts, key=lambda v: (-counts[v], _sort_key(v)))[:limit]
                values = sorted(top, key=_sort_key)
            self.stats_[f"unique_values({c})"] = {v: i for i, v in enumerate(values)}


def _sort_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


class OrdinalEncoder(_Categorical):
    """Each category as its index among the sorted values seen in fit (unseen: null)."""

    def __init__(
        self,
        columns: list[str],
        *,
        encode_lists: bool = True,
        output_columns: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.columns = _names(columns, "OrdinalEncoder")
        self.encode_lists = encode_lists
        self.output_columns = _outputs(self.columns, output_columns, "OrdinalEncoder")

    def _transform_pandas(self, df: Any) -> Any:
        assert self.stats_ is not None
        _check(df, self.columns, "OrdinalEncoder")
        for c, out in zip(self.columns, self.output_columns, strict=True):
            mapping = self.stats_[f"unique_values({c})"]
            df[out] = df[c].map(mapping)
        return df


class LabelEncoder(_Categorical):
    """The label column's classes as integers 0..n-1 (sorted), for classification targets."""

    def __init__(self, label_column: str, *, output_column: str | None = None) -> None:
        super().__init__()
        self.label_column = str(label_column)
        self.columns = [self.label_column]
        self.output_column = output_column or self.label_column

    def _transform_pandas(self, df: Any) -> Any:
        assert self.stats_ is not None
        _check(df, self.columns, "LabelEncoder")
        mapping = self.stats_[f"unique_values({self.label_column})"]
        df[self.output_column] = df[self.label_column].map(mapping)
        return df

    def inverse_transform_batch(self, df: Any) -> Any:
        """Integers back to the original labels."""
        assert self.stats_ is not None
        inverse = {i: v for v, i in self.stats_[f"unique_values({self.label_column})"].items()}
        out = df.copy()
        out[self.label_column] = out[self.output_column].map(inverse)
        return out


class OneHotEncoder(_Categorical):
    """Each categorical column becomes a one-hot vector (a tensor column of length n
    categories, as Ray 2.60 does); a value not seen in fit is all zeros.

    ``max_categories``: ``{column: k}`` keeps only the k most frequent values of a column.
    """

    def __init__(
        self,
        columns: list[str],
        *,
        max_categories: dict[str, int] | None = None,
        output_columns: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.columns = _names(columns, "OneHotEncoder")
        self.max_categories = dict(max_categories or {})
        self.output_columns = _outputs(self.columns, output_columns, "OneHotEncoder")

    def _transform_pandas(self, df: Any) -> Any:
        assert self.stats_ is not None
        _check(df, self.columns, "OneHotEncoder")
        for c, out in zip(self.columns, self.output_columns, strict=True):
            mapping = self.stats_[f"unique_values({c})"]
            idx = df[c].map(mapping).to_numpy(dtype=np.float64, na_value=np.nan)
            onehot = np.zeros((len(df), len(mapping)), dtype=np.int64)
            ok = ~np.isnan(idx)
            onehot[np.flatnonzero(ok), idx[ok].astype(np.int64)] = 1
            cells = np.empty(len(df), dtype=object)
            for i in range(len(df)):
                cells[i] = onehot[i]
            df[out] = cells
        return df


class SimpleImputer(Preprocessor):
    """Fill missing values with the column's mean, most frequent value, or a constant."""

    _STRATEGIES = ("mean", "most_frequent", "constant")

    def __init__(
        self,
        columns: list[str],
        strategy: str = "mean",
        fill_value: Any = None,
        *,
        output_columns: list[str] | None = None,
    ) -> None:
        super().__init__()
        if strategy not in self._STRATEGIES:
            raise ValueError(f"strategy must be one of {self._STRATEGIES}, got {strategy!r}")
        if strategy == "constant" and fill_value is None:
            raise ValueError('strategy="constant" needs a fill_value')
        self.columns = _names(columns, "SimpleImputer")
        self.strategy = strategy
        self.fill_value = fill_value
        self.output_columns = _outputs(self.columns, output_columns, "SimpleImputer")
        if strategy == "constant":
            self._is_fittable = False

    def _fit(self, ds: Any) -> None:
        from .. import _aggregate as agg

        assert self.stats_ is not None
        if self.strategy == "mean":
            self.stats_.update(ds.aggregate(*[agg.Mean(c) for c in self.columns]))
        else:
            for c in self.columns:
                counts = _value_counts(ds, c)
                best = max(counts, key=lambda v: (counts[v], -_rank(v))) if counts else None
                self.stats_[f"most_frequent({c})"] = best

    def _transform_pandas(self, df: Any) -> Any:
        _check(df, self.columns, "SimpleImputer")
        for c, out in zip(self.columns, self.output_columns, strict=True):
            if self.strategy == "constant":
                value = self.fill_value
            else:
                assert self.stats_ is not None
                value = self.stats_[f"{self.strategy}({c})"]
            df[out] = df[c].fillna(value)
        return df


def _rank(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


class Concatenator(Preprocessor):
    """Several numeric columns into one tensor column (``concat_out`` by default), dropping
    them: the usual last step before a model."""

    _is_fittable = False

    def __init__(
        self,
        columns: list[str],
        output_column_name: str = "concat_out",
        dtype: Any = None,
        raise_if_missing: bool = False,
        flatten: bool = False,
    ) -> None:
        super().__init__()
        self.columns = _names(columns, "Concatenator")
        self.output_column_name = output_column_name
        self.dtype = dtype
        self.raise_if_missing = raise_if_missing
        self.flatten = flatten

    def _transform_pandas(self, df: Any) -> Any:
        missing = [c for c in self.columns if c not in df.columns]
        if missing and self.raise_if_missing:
            raise ValueError(f"Concatenator: missing columns {missing}")
        cols = [c for c in self.columns if c in df.columns]
        parts = []
        for c in cols:
            values = df[c].to_numpy()
            if values.dtype == object:
                values = np.stack([np.asarray(v).reshape(-1) for v in values])
            parts.append(values.reshape(len(df), -1))
        matrix = np.concatenate(parts, axis=1) if parts else np.zeros((len(df), 0))
        if self.dtype is not None:
            matrix = matrix.astype(self.dtype)
        out = df.drop(columns=cols)
        cells = np.empty(len(df), dtype=object)
        for i in range(len(df)):
            cells[i] = matrix[i]
        out[self.output_column_name] = cells
        return out


class Chain(Preprocessor):
    """Preprocessors applied in order; ``fit`` fits each on the output of the ones before."""

    def __init__(self, *preprocessors: Preprocessor) -> None:
        super().__init__()
        for p in preprocessors:
            if not isinstance(p, Preprocessor):
                raise TypeError(f"Chain takes preprocessors, got {type(p).__name__}")
        self.preprocessors = list(preprocessors)

    def fit_status(self) -> str:
        statuses = {p.fit_status() for p in self.preprocessors}
        if statuses <= {"NOT_FITTABLE"}:
            return "NOT_FITTABLE"
        return "NOT_FITTED" if "NOT_FITTED" in statuses else "FITTED"

    def fit(self, ds: Any) -> Preprocessor:
        for i, p in enumerate(self.preprocessors):
            p.fit(ds)
            if i < len(self.preprocessors) - 1:
                ds = p.transform(ds)
        self.stats_ = {}
        return self

    def transform(self, ds: Any) -> Any:
        self._check_fitted()
        for p in self.preprocessors:
            ds = p.transform(ds)
        return ds

    def transform_batch(self, batch: Any) -> Any:
        for p in self.preprocessors:
            batch = p.transform_batch(batch)
        return batch

    def _check_fitted(self) -> None:
        for p in self.preprocessors:
            p._check_fitted()

    def _transform_pandas(self, df: Any) -> Any:
        for p in self.preprocessors:
            df = p._transform_pandas(df)
        return df
