"""Stands in for Ray in the child processes of ``python -m runtime.compat``.

Importing it as ``ray`` installs :class:`runtime.compat._finder.RayAliasFinder` and leaves
``sys.modules["ray"]`` pointing at :mod:`runtime`, so ``import ray`` gives ``runtime``.
"""

if __name__ == "ray":  # imported through the path of a compat run, not as a submodule
    from runtime.compat._finder import install

    install()
