"""Ray's ``ray.experimental``: public parts that Ray marks experimental.

:mod:`runtime.experimental.internal_kv` is the head's key-value store (Ray's
``ray.experimental.internal_kv``), for state that must outlive the process that wrote it.
"""
