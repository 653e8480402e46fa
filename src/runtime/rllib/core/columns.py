"""Ray RLlib's module path ``ray.rllib.core.columns``: the names of batch columns."""

__all__ = ["Columns"]


class Columns:
    """Column names of batches and module outputs, as Ray's new stack names them."""

    OBS = "obs"
    NEXT_OBS = "new_obs"
    ACTIONS = "actions"
    REWARDS = "rewards"
    TERMINATEDS = "terminateds"
    TRUNCATEDS = "truncateds"
    ACTION_DIST_INPUTS = "action_dist_inputs"
    ACTION_LOGP = "action_logp"
    VF_PREDS = "vf_preds"
    ADVANTAGES = "advantages"
    VALUE_TARGETS = "value_targets"
    INFOS = "infos"
