"""Layer 7: the caller's side.

Pending tasks and retries, actor call ordering and resends, streaming generators.
"""
