"""``python -m runtime.node``: start a head (``--head``) or join a cluster (``--address``).

The work is in :mod:`runtime.core.tools.node_main`; this module is the command's entry point.
"""

from runtime.core.tools.node_main import main

if __name__ == "__main__":
    raise SystemExit(main())
