"""The logical plan: what a Dataset means, as a chain of operators (nothing runs here).

Each Dataset method returns a new Dataset whose plan ends in one more :class:`LogicalOp`.
The executor (``_executor``) turns the chain into physical stages, fusing map-like steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._block import BlockMetadata
from ._transforms import Transform

if TYPE_CHECKING:
    from ._datasource import Datasource


@dataclass
class RefBundle:
    """One block in the object store: its ref and what is known about it."""

    ref: Any
    meta: BlockMetadata
    #: Makes the block again from its source when its copy was lost (set by the executor).
    recover: Callable[[], RefBundle] | None = field(default=None, repr=False, compare=False)


@dataclass
class ActorPoolStrategy:
    """Run a ``map_batches`` callable class on a pool of actors.

    ``ActorPoolStrategy(size=n)`` is a fixed pool; ``min_size``/``max_size`` let the pool grow
    while work waits. ``concurrency=n`` or ``(min, max)`` in ``map_batches`` is the same.
    """

    size: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    max_tasks_in_flight_per_actor: int = 2

    def __post_init__(self) -> None:
        if self.size is not None:
            if self.min_size is not None or self.max_size is not None:
                raise ValueError("give either size or min_size/max_size, not both")
            self.min_size = self.max_size = self.size
        self.min_size = 1 if self.min_size is None else self.min_size
        self.max_size = max(self.min_size, 4) if self.max_size is None else self.max_size
        if not 1 <= self.min_size <= self.max_size:
            raise ValueError(
                f"actor pool sizes must satisfy 1 <= min_size <= max_size, got "
                f"min_size={self.min_size}, max_size={self.max_size}"
            )
        if self.max_tasks_in_flight_per_actor < 1:
            raise ValueError("max_tasks_in_flight_per_actor must be >= 1")


class LogicalOp:
    """One step of a plan; ``input`` is the step before it (None for sources)."""

    name: str
    input: LogicalOp | None

    def inputs(self) -> list[LogicalOp]:
        return [self.input] if self.input is not None else []


@dataclass(eq=False)
class ReadOp(LogicalOp):
    datasource: Datasource
    parallelism: int
    name: str = "Read"
    input: LogicalOp | None = None


@dataclass(eq=False)
class InputDataOp(LogicalOp):
    bundles: list[RefBundle]
    name: str = "FromItems"
    input: LogicalOp | None = None


@dataclass(eq=False)
class MapOp(LogicalOp):
    input: LogicalOp | None
    transform: Transform
    remote_args: dict[str, Any] = field(default_factory=dict)
    compute: ActorPoolStrategy | None = None
    udf_class: Any = None
    ctor_args: tuple[Any, ...] = ()
    ctor_kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = "Map"


@dataclass(eq=False)
class LimitOp(LogicalOp):
    input: LogicalOp | None
    limit: int
    name: str = "Limit"


@dataclass(eq=False)
class AllToAllOp(LogicalOp):
    """A barrier: all input blocks, then ``fn(bundles) -> bundles`` (tasks it launches)."""

    input: LogicalOp | None
    fn: Callable[[list[RefBundle]], list[RefBundle]]
    name: str = "AllToAll"
    preserves_rows: bool = False


@dataclass(eq=False)
class UnionOp(LogicalOp):
    children: list[LogicalOp]
    name: str = "Union"
    input: LogicalOp | None = None

    def inputs(self) -> list[LogicalOp]:
        return list(self.children)


def known_row_count(op: LogicalOp) -> int | None:
    """Rows the plan yields when metadata alone tells (no execution), else None."""
    if isinstance(op, InputDataOp):
        return sum(b.meta.num_rows for b in op.bundles)
    if isinstance(op, ReadOp):
        tasks = op.datasource.get_read_tasks(op.parallelism)
        if all(t.metadata is not None for t in tasks):
            return sum(t.metadata.num_rows for t in tasks if t.metadata is not None)
        return None
    if isinstance(op, MapOp) and op.transform.preserves_rows() and op.input is not None:
        return known_row_count(op.input)
    if isinstance(op, LimitOp) and op.input is not None:
        n = known_row_count(op.input)
        return None if n is None else min(n, op.limit)
    if isinstance(op, AllToAllOp) and op.preserves_rows and op.input is not None:
        return known_row_count(op.input)
    if isinstance(op, UnionOp):
        counts = [known_row_count(c) for c in op.children]
        return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)
    return None


def plan_string(op: LogicalOp) -> str:
    parts = []
    cur: LogicalOp | None = op
    while cur is not None:
        parts.append(cur.name)
        cur = cur.input if not isinstance(cur, UnionOp) else None
    return " -> ".join(reversed(parts))
