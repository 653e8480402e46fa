"""Ray RLlib's module path ``ray.rllib.env``: episodes handed to callbacks, multi-agent envs."""

from runtime.rllib.env.multi_agent_env import MultiAgentEnv, make_multi_agent
from runtime.rllib.env.single_agent_episode import SingleAgentEpisode

__all__ = ["MultiAgentEnv", "SingleAgentEpisode", "make_multi_agent"]
