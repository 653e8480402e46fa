"""Ray RLlib's module path ``ray.rllib.connectors``: env-to-module and module-to-env pipelines."""

from runtime.rllib.connectors.connector_v2 import ConnectorV2

__all__ = ["ConnectorV2"]
