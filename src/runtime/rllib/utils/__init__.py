"""Ray RLlib's module path ``ray.rllib.utils`` (``utils.metrics`` holds the result keys)."""

__all__: list[str] = []
