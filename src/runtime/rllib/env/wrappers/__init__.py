"""Ray RLlib's module path ``ray.rllib.env.wrappers``: ``pettingzoo_env``."""

__all__: list[str] = []
