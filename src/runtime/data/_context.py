"""DataContext: the process-wide knobs of the streaming executor (as Ray's DataContext)."""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class DataContext:
    """Execution settings; ``DataContext.get_current()`` returns the one in use.

    Attributes:
        target_max_block_size: bytes per block that sources aim for when they pick block sizes.
        target_min_rows_per_block: the fewest rows a source puts in a block it sizes itself.
        max_tasks_in_flight_per_op: tasks one operator may have running or queued
            (``None``: twice the cluster's CPUs, at least 2).
        op_output_buffer_bytes: bytes of finished, not yet consumed blocks an operator may
            hold (plus its running tasks' estimated output) before it stops launching tasks:
            the backpressure that bounds memory.
        enable_progress_bars: show a progress bar per operator (tqdm; only in a terminal or
            a notebook, and never when the ``CI`` environment variable is set).
        read_op_min_num_blocks: the fewest read tasks a reader splits its input into.
        max_block_retries: retries of a task that lost its node (lineage re-execution).
    """

    target_max_block_size: int = 64 * 1024 * 1024
    target_min_rows_per_block: int = 1
    max_tasks_in_flight_per_op: int | None = None
    op_output_buffer_bytes: int = 256 * 1024 * 1024
    enable_progress_bars: bool = True
    read_op_min_num_blocks: int = 8
    max_block_retries: int = 3
    execution_options: dict[str, object] = field(default_factory=dict)

    _current: ClassVar[DataContext | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @staticmethod
    def get_current() -> DataContext:
        """The context of this process (created with defaults on first use)."""
        with DataContext._lock:
            if DataContext._current is None:
                DataContext._current = DataContext()
            return DataContext._current

    def progress_enabled(self) -> bool:
        """Bars show in a terminal or a notebook, never in CI (``CI`` set) or when off."""
        if not self.enable_progress_bars or os.environ.get("CI"):
            return False
        return sys.stderr.isatty() or "ipykernel" in sys.modules
