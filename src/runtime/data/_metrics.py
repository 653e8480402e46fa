"""Data's metrics, through the public ``runtime.util.metrics`` API: the rows and bytes each
operator has output (recorded in the process that runs the pipeline, as its blocks arrive)."""

from __future__ import annotations

from runtime.util.metrics import Counter

_counters: tuple[Counter, Counter] | None = None


def block_out(operator: str, rows: int, nbytes: int) -> None:
    """One block of ``rows`` rows and ``nbytes`` bytes that ``operator`` output."""
    global _counters
    if _counters is None:
        _counters = (
            Counter("runtime_data_output_rows", "Rows Data operators output", ("operator",)),
            Counter("runtime_data_output_bytes", "Bytes Data operators output", ("operator",)),
        )
    tags = {"operator": operator}
    _counters[0].inc(rows, tags)
    _counters[1].inc(nbytes, tags)
