"""``DelegatingBlockBuilder``: rows or batches in, one block out (Ray's documented custom
datasource example builds its blocks with it)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .. import _block as B


class DelegatingBlockBuilder:
    """Collects rows (``add``) and blocks or batches (``add_batch`` / ``add_block``)."""

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._blocks: list[pa.Table] = []

    def _flush(self) -> None:
        if self._rows:
            self._blocks.append(B.block_from_rows(self._rows))
            self._rows = []

    def add(self, item: dict[str, Any]) -> None:
        """One row (a dict)."""
        self._rows.append(item)

    def add_batch(self, batch: Any) -> None:
        """A batch (dict of arrays, DataFrame or Table)."""
        self._flush()
        self._blocks.append(B.block_from_batch(batch))

    def add_block(self, block: pa.Table) -> None:
        """A block."""
        self.add_batch(block)

    def num_rows(self) -> int:
        return len(self._rows) + sum(b.num_rows for b in self._blocks)

    def build(self) -> pa.Table:
        """Everything added, as one block."""
        self._flush()
        return B.concat(self._blocks)
