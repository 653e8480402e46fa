"""Ray RLlib's module path ``ray.rllib.algorithms.cql``: ``CQL``, its config."""

from runtime.rllib.cql import CQL, CQLConfig

__all__ = ["CQL", "CQLConfig"]
