"""The Preprocessor base class: fit once on a Dataset, transform Datasets and batches."""

from __future__ import annotations

from typing import Any


class PreprocessorNotFittedException(RuntimeError):
    """``transform`` was called on a preprocessor that needs ``fit`` first."""


class Preprocessor:
    """Fits statistics (``stats_``) on a dataset and applies them to rows, batch by batch.

    Subclasses implement ``_fit(ds)`` (filling ``self.stats_``; not needed when
    ``_is_fittable`` is False) and ``_transform_pandas(df) -> df``.
    """

    _is_fittable = True

    def __init__(self) -> None:
        self.stats_: dict[str, Any] | None = None

    def fit_status(self) -> str:
        """ "NOT_FITTABLE", "NOT_FITTED" or "FITTED" (as in Ray)."""
        if not self._is_fittable:
            return "NOT_FITTABLE"
        return "FITTED" if self.stats_ is not None else "NOT_FITTED"

    def fit(self, ds: Any) -> Preprocessor:
        """Compute the statistics on ``ds`` (a Dataset); returns ``self``."""
        if self._is_fittable:
            self.stats_ = {}
            self._fit(ds)
        return self

    def fit_transform(self, ds: Any) -> Any:
        """``fit(ds)`` then ``transform(ds)``."""
        return self.fit(ds).transform(ds)

    def transform(self, ds: Any) -> Any:
        """A new Dataset with this preprocessor applied to every batch (lazily)."""
        self._check_fitted()
        return ds.map_batches(_Apply(self), batch_format="pandas", batch_size=None)

    def transform_batch(self, batch: Any) -> Any:
        """Apply to one batch: a pandas DataFrame, a dict of numpy arrays or an Arrow table;
        the result has the same form."""
        self._check_fitted()
        import pandas as pd
        import pyarrow as pa

        from .._block import block_from_batch, to_numpy_batch, to_pandas

        if isinstance(batch, pd.DataFrame):
            return self._transform_pandas(batch.copy())
        if isinstance(batch, pa.Table):
            return block_from_batch(self._transform_pandas(to_pandas(batch)))
        if isinstance(batch, dict):
            df = to_pandas(block_from_batch(batch))
            return to_numpy_batch(block_from_batch(self._transform_pandas(df)))
        raise TypeError(
            "transform_batch takes a pandas DataFrame, a dict of numpy arrays or a "
            f"pyarrow.Table, got {type(batch).__name__}"
        )

    def _check_fitted(self) -> None:
        if self._is_fittable and self.stats_ is None:
            raise PreprocessorNotFittedException(
                f"{type(self).__name__} must be fit before transform (call fit(ds) first)"
            )

    def _fit(self, ds: Any) -> None:
        raise NotImplementedError

    def _transform_pandas(self, df: Any) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = {k: v for k, v in vars(self).items() if k != "stats_"}
        args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return f"{type(self).__name__}({args})"


class _Apply:
    """A picklable batch function over a fitted preprocessor (Ray's transform step)."""

    def __init__(self, prep: Preprocessor) -> None:
        self.prep = prep
        self.__name__ = type(prep).__name__

    def __call__(self, df: Any) -> Any:
        return self.prep._transform_pandas(df)
