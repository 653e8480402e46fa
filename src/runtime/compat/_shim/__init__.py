"""The directory put first on the path of a compat run's child processes.

It holds only the package ``ray`` (:mod:`runtime.compat._shim.ray`), whose import installs
the alias hook, so a node process that unpickles a function from a module doing
``import ray`` gets :mod:`runtime` too.
"""
