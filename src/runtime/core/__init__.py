"""Layer 1, the actor runtime: node, mesh, protocol, actors, tasks, objects, scheduling.

Everything here is internal (``_name.py`` modules); the public names are re-exported by
:mod:`runtime`, :mod:`runtime.util` and :mod:`runtime.exceptions`.
"""
