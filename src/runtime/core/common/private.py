"""Directories and files the runtime trusts must be this user's own.

Another local user who creates ``/tmp/runtime-$UID`` (or ``/dev/shm/runtime-$UID``) first can
plant a ``head.json`` and a token there and take over the victim's ``address="auto"``. Every
directory and file the runtime trusts (session, shm, spill and state directories,
``head.json``, token files, ``head.sqlite``) is checked with ``lstat`` (a planted symbolic link
is refused, never followed): it must be owned by this user and not writable by group or
others. New ones are created 0700 (directories) and 0600 (files).
"""

from __future__ import annotations

import contextlib
import os
import stat

_HOW = (
    "another local user may have created it to take over this user's cluster; remove it, or "
    "point RUNTIME_TMPDIR/RUNTIME_SHM_DIR/--state-dir at a directory of your own"
)


class UntrustedPathError(PermissionError):
    """A directory or file the runtime would trust is not this user's own."""


def check_private(path: str, *, directory: bool) -> None:
    """Raise UntrustedPathError (a PermissionError naming ``path``) unless it is this user's
    own directory (or regular file), not a symbolic link, and not writable by group or
    others."""
    st = os.lstat(path)
    kind = "directory" if directory else "file"
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedPathError(f"refusing to trust {path}: it is a symbolic link; {_HOW}")
    if directory != stat.S_ISDIR(st.st_mode) or not (directory or stat.S_ISREG(st.st_mode)):
        raise UntrustedPathError(f"refusing to trust {path}: it is not a {kind}; {_HOW}")
    if st.st_uid != os.geteuid():
        raise UntrustedPathError(
            f"refusing to trust {path}: the {kind} is owned by uid {st.st_uid}, not by this "
            f"user (uid {os.geteuid()}); {_HOW}"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedPathError(
            f"refusing to trust {path}: the {kind} is writable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); {_HOW}"
        )


def private_dir(path: str) -> str:
    """Create ``path`` 0700 (with its parents) unless it exists; then check it is ours."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    check_private(path, directory=True)
    return path


def private_file(path: str) -> None:
    """Create ``path`` 0600 unless it exists (never through a symbolic link); then check it
    is ours and take group and others' read access away."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        check_private(path, directory=False)
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
