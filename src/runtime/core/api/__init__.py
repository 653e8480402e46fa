"""Layer 9: the driver-facing API.

The session (init, get, put, wait), remote functions and actor classes, placement groups.
"""
