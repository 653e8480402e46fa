"""Ray RLlib's module path ``ray.rllib.core``: the id of the single module."""

#: The id of an algorithm's one module (Ray's ``DEFAULT_MODULE_ID``).
DEFAULT_MODULE_ID = "default_policy"

__all__ = ["DEFAULT_MODULE_ID"]
