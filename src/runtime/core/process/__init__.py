"""Layer 8: one process of the runtime.

The worker that composes the parts below, and the launcher that starts nodes.
"""
