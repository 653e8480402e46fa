"""Bottom layer: what every layer shares.

The exception tree, the per-process context (the current worker, the running task), the
thread pool and the loop inbox.
"""
