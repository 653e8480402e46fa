"""Layer 5: the control plane the head runs.

Membership, the actor directory, placement groups, KV and persistence.
"""
