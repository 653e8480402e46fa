"""Ray RLlib's module path ``ray.rllib.env``: episodes handed to callbacks."""

from runtime.rllib.env.single_agent_episode import SingleAgentEpisode

__all__ = ["SingleAgentEpisode"]
