"""Byte-compile a source tree of the runtime before its processes are timed.

Ray and every dependency come from wheels that pip byte-compiled at install time; this
runtime is installed editable, so its modules are compiled from source by every process
that imports them unless ``__pycache__`` holds them. A normal environment writes those
files on the first run, but one with ``PYTHONDONTWRITEBYTECODE=1`` (this machine's, and
CI's) never does, and then every node process a benchmark starts pays the compile again.
Compiling once up front measures what a user sees from the second run on, as Ray's half is.
"""

from __future__ import annotations

import compileall
import os


def compile_tree(path: str) -> None:
    """Write the bytecode of every module under ``path`` (a ``src`` folder or a package)."""
    compileall.compile_dir(path, quiet=1)


def compile_runtime() -> None:
    """Byte-compile the ``runtime`` package this interpreter imports."""
    import runtime

    compile_tree(os.path.dirname(runtime.__file__))
