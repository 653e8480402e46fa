"""ETL with runtime.data: generate Parquet with numpy, read it, transform, aggregate, write.

Run: python examples/data_etl.py [output_dir]
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import runtime
from runtime import data


def generate(directory: str, files: int = 4, rows: int = 50_000) -> pd.DataFrame:
    """Write ``files`` Parquet files of sales records; return them as one DataFrame."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(files):
        df = pd.DataFrame(
            {
                "store": rng.integers(0, 10, rows),
                "price": rng.uniform(1, 100, rows).round(2),
                "quantity": rng.integers(1, 5, rows),
            }
        )
        pq.write_table(pa.Table.from_pandas(df), os.path.join(directory, f"sales_{i}.parquet"))
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def add_revenue(batch: pd.DataFrame) -> pd.DataFrame:
    batch["revenue"] = batch["price"] * batch["quantity"]
    return batch


def main(out_dir: str | None = None) -> pd.DataFrame:
    runtime.init(num_cpus=2)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            raw = os.path.join(tmp, "raw")
            os.makedirs(raw)
            truth = generate(raw)
            ds = (
                data.read_parquet(raw)
                .map_batches(add_revenue, batch_format="pandas")
                .filter(lambda row: row["quantity"] >= 2)
            )
            summary = ds.groupby("store").aggregate(
                data.Count(), data.Sum("revenue"), data.Mean("price")
            )
            target = out_dir or os.path.join(tmp, "summary")
            summary.write_parquet(target)
            result = data.read_parquet(target).sort("store").to_pandas()
            print(result.to_string(index=False))
            print(summary.stats())

            kept = truth[truth["quantity"] >= 2]
            want = (kept["price"] * kept["quantity"]).groupby(kept["store"]).sum()
            np.testing.assert_allclose(result["sum(revenue)"], want.to_numpy())
            return result
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
