"""Run an unmodified Ray program on runtime: ``python -m runtime.compat SCRIPT [ARGS]``.

The program runs as ``__main__`` with an import hook that makes ``ray`` and every
``ray.*`` module the matching ``runtime`` module, in that process and in the node processes
it starts (they get a ``ray`` stand-in first on their path, so a function pickled by
reference from a module that does ``import ray`` unpickles there too). Nothing changes for
any other process.

A module ``runtime`` lacks fails at import with a :class:`ModuleNotFoundError` naming both
names. When the real Ray is wanted, the command refuses to run (exit status 2) and says
so: with ``RUNTIME_COMPAT=0`` in the environment, or with ``RAY_ADDRESS`` set (the program
is meant for a running Ray cluster). ``docs/compat.md`` lists which of Ray's documentation
examples run this way.

Example::

    python -m runtime.compat my_ray_program.py --its-own-flag
"""

from runtime.compat._finder import RayAliasFinder, compat_disabled, install
from runtime.compat._run import run_script

__all__ = ["RayAliasFinder", "compat_disabled", "install", "run_script"]
