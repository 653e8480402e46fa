"""The zygote process (``python -m runtime.core.tools.zygote_main CONTROL_FD [MODULES]``): a
warm process a node forks its dedicated processes from (see
:mod:`runtime.core.execution.zygote` for the node's side and the why). It imports the node's
modules, then serves requests on ``CONTROL_FD`` (:func:`~.zygote_server.serve`), importing
``MODULES`` (comma-separated, ``RUNTIME_ZYGOTE_PRELOAD``) as soon as it said it is ready.
"""

from __future__ import annotations

import socket
import sys

from . import node_main, zygote_server


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    ctl = socket.socket(fileno=int(args[0]))
    warm = [m for m in args[1].split(",") if m] if len(args) > 1 else []
    try:
        return zygote_server.serve(ctl, node_main.main, warm)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
