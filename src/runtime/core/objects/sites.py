"""Where refs are made: the user's line that created an object (``python -m runtime memory``).

Off by default, as in Ray: walking the stack costs a few microseconds per ``put`` and per
call. ``RUNTIME_RECORD_REF_CREATION_SITES=1`` (or Ray's ``RAY_record_ref_creation_sites=1``)
in the environment of the process that creates the refs (the driver, or a node for the refs
its tasks make) turns it on.
"""

from __future__ import annotations

import os
import sys
from typing import Final


def _enabled() -> bool:
    for name in ("RUNTIME_RECORD_REF_CREATION_SITES", "RAY_record_ref_creation_sites"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


#: Record call sites in this process (read once, at import).
RECORD: Final = _enabled()
#: Frames in the core are the runtime's own; the call site is the first frame outside it.
_CORE: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def creation_site(kind: str) -> str:
    """``(kind) file:line:function`` of the first caller outside the runtime's core."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_CORE):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return f"({kind}) (inside the runtime)"
    code = frame.f_code
    return f"({kind}) {code.co_filename}:{frame.f_lineno}:{code.co_name}"


__all__ = ["RECORD", "creation_site"]
