"""TrainContext: the facts a rank knows about itself (``train.get_context()``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainContext:
    """Where this rank stands in the worker group.

    ``local_rank`` counts the ranks on the same host (machine), ``node_rank`` numbers the
    hosts; on a one-host mesh every rank has node rank 0 and local rank == world rank.
    """

    world_rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    node_id: str
    experiment_name: str
    storage_path: str
    use_gpu: bool = False
    metadata: dict[str, Any] | None = None

    def get_world_rank(self) -> int:
        return self.world_rank

    def get_world_size(self) -> int:
        return self.world_size

    def get_local_rank(self) -> int:
        return self.local_rank

    def get_local_world_size(self) -> int:
        return self.local_world_size

    def get_node_rank(self) -> int:
        return self.node_rank

    def get_node_id(self) -> str:
        return self.node_id

    def get_experiment_name(self) -> str:
        return self.experiment_name

    def get_storage_path(self) -> str:
        return self.storage_path

    def get_metadata(self) -> dict[str, Any]:
        return dict(self.metadata or {})
