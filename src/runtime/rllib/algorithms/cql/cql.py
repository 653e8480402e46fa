"""Ray RLlib's module path ``ray.rllib.algorithms.cql.cql``: ``CQL``, its config."""

from runtime.rllib.cql import CQL, CQLConfig

__all__ = ["CQL", "CQLConfig"]
