"""Running a script as ``__main__`` with ``ray`` mapped to ``runtime``."""

from __future__ import annotations

import os
import runpy
import sys

from runtime.compat._finder import ENV_SWITCH, SHIM_DIR, compat_disabled, install


class CompatRefused(SystemExit):
    """The real Ray is wanted here: runtime.compat will not stand in for it (exit status 2)."""

    def __init__(self, why: str) -> None:
        super().__init__(2)
        self.why = why


def refusal() -> str | None:
    """Why this environment asks for the real Ray, or ``None`` when runtime may stand in."""
    if compat_disabled():
        return (
            f"{ENV_SWITCH}={os.environ[ENV_SWITCH]} asks for the real ray: run the program "
            "with `python SCRIPT` and Ray installed, or unset it to run it on runtime"
        )
    if os.environ.get("RAY_ADDRESS"):
        return (
            f"RAY_ADDRESS={os.environ['RAY_ADDRESS']} points the program at a running Ray "
            "cluster, which runtime cannot join: run it with `python SCRIPT` and Ray "
            "installed, or unset RAY_ADDRESS to run it on a local runtime mesh"
        )
    return None


def run_script(path: str, args: list[str]) -> None:
    """Run the file ``path`` as ``__main__`` with ``sys.argv == [path, *args]`` on runtime.

    Raises:
        CompatRefused: the environment asks for the real Ray (see :func:`refusal`).
        FileNotFoundError: there is no such file.
    """
    why = refusal()
    if why is not None:
        raise CompatRefused(why)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"runtime.compat: no such script: {path!r}")
    install()
    # Child processes (the nodes of a local mesh get this process's sys.path) import the
    # stand-in `ray`, which installs the same hook there.
    if SHIM_DIR not in sys.path:
        sys.path.insert(0, SHIM_DIR)
    parts = [SHIM_DIR, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    # As `python SCRIPT` does: the script's directory comes first on the path.
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    sys.argv = [path, *args]
    runpy.run_path(path, run_name="__main__")
