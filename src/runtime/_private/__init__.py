"""Ray's ``ray._private``: the few internal names Ray's own documentation uses.

Only :mod:`runtime._private.internal_api` (``memory_summary``, ``free``) is here; Ray's
other internals are not (see docs/compat.md).
"""
