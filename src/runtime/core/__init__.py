"""Layer 1, the actor runtime: node, mesh, protocol, actors, tasks, objects, scheduling.

Everything here is internal; the public names are re-exported by :mod:`runtime`,
:mod:`runtime.util` and :mod:`runtime.exceptions`. The sub-packages are layers, each
importing only the ones below it (``docs/architecture.md``; import-linter holds it):
``tools > api > process > submission > execution > control > scheduling > objects > wire
> common``.
"""
