"""``python -m runtime.compat SCRIPT [ARGS]``: run a Ray program on runtime, unmodified."""

from __future__ import annotations

import sys

from runtime.compat._run import CompatRefused, run_script

USAGE = "usage: python -m runtime.compat SCRIPT [ARGS...]"


def main(argv: list[str]) -> int:
    """Run ``argv[0]`` with the rest as its arguments; returns the exit status on refusal."""
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        print(__doc__ if argv else "", end="")
        return 0 if argv else 2
    try:
        run_script(argv[0], argv[1:])
    except CompatRefused as refused:
        print(f"runtime.compat: refused: {refused.why}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
