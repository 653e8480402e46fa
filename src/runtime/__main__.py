"""``python -m runtime status | list nodes|actors | stop``."""

from runtime.core.tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
