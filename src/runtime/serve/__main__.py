"""``python -m runtime.serve``: see :mod:`runtime.serve._cli`."""

import sys

from ._cli import main

sys.exit(main())
