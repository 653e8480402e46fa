"""What a node process asks of the operating system: room for many connections, and death
with its parent."""

from __future__ import annotations

import contextlib
import os
import signal

#: The soft open-file limit a node raises itself to (within the hard limit): at the common
#: default of 1,024, a flood of idle connections could take every descriptor.
WANTED_OPEN_FILES = 65536


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE towards :data:`WANTED_OPEN_FILES`; the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    return soft


def die_with_parent() -> None:
    """Besides the parent pipe (read on the loop), ask the kernel for SIGKILL when the
    parent goes, so even a node whose loop is stuck does not outlive it (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent was already gone before prctl took effect
        os._exit(1)


__all__ = ["WANTED_OPEN_FILES", "die_with_parent", "raise_open_file_limit"]
