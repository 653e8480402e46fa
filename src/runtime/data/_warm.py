"""Warm memory for the arrays a user's batch function makes (numpy's allocator hook, NEP 49).

A map task calls the user's function once per batch, and each call typically makes new
arrays as big as the batch (``batch["x"].astype("float32") / 255`` makes two). numpy gets
memory that big from the system as fresh pages, and every page of it faults on first touch:
on a busy host that costs several times the arithmetic itself (a few microseconds per 4 KiB
page, or a compaction pass per 2 MiB huge page when memory is fragmented). The arrays die
a moment later, once their block is in the object store, and the next batch asks again for
the same sizes.

While the user's function runs, :func:`warm_arrays` makes numpy allocate arrays of at least
:data:`BIG` bytes from a per-process cache of mappings whose pages were touched before, and
free them back into it (at most :data:`RETAIN` bytes kept, all given back after
:data:`IDLE_S` without a batch function running). Smaller arrays go to the C library's
allocator as before. numpy keeps the allocator an array was made with, so an array that
outlives the call is freed into the cache whenever it dies. The hook is a context variable
in numpy: it applies to the task's own thread, for the call only.

The allocator is C (``_warm.c``; numpy may free an array while an exception is pending,
where no Python code may run), compiled on first use with the host's C compiler into a
private directory and shared by the processes of the host. Where there is no compiler, or
no numpy hook (not Linux, numpy < 1.22), nothing changes: batch functions run with numpy's
own allocator.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

log = logging.getLogger("runtime.data")

#: Arrays at least this big come from the cache.
BIG: Final = 256 << 10
#: The most freed memory a process keeps for reuse.
RETAIN: Final = 1 << 30
#: Freed memory kept this long without a batch function running is given back.
IDLE_S: Final = 10.0

_SOURCE: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_warm.c")


class _Allocator(ctypes.Structure):
    _fields_ = [
        ("ctx", ctypes.c_void_p),
        ("malloc", ctypes.c_void_p),
        ("calloc", ctypes.c_void_p),
        ("realloc", ctypes.c_void_p),
        ("free", ctypes.c_void_p),
    ]


class _Handler(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * 127),
        ("version", ctypes.c_uint8),
        ("allocator", _Allocator),
    ]


def _private_dir(path: str) -> bool:
    """Whether ``path`` is a directory of this user's, not writable by anyone else (a
    library is loaded from it)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.geteuid()
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def build_library() -> str | None:
    """The path of the compiled allocator, compiling it first if this host has no copy yet
    (None: no C compiler, or it failed). Several processes may race: each compiles into a
    file of its own and renames it into place."""
    with open(_SOURCE, "rb") as f:
        source = f.read()
    digest = hashlib.sha256(source + sys.version.encode()).hexdigest()[:16]
    base = os.environ.get("RUNTIME_TMPDIR") or tempfile.gettempdir()
    directory = os.path.join(base, f"runtime-data-{os.geteuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    if not _private_dir(directory):
        log.info("runtime.data: %s is not a private directory; no warm allocator", directory)
        return None
    target = os.path.join(directory, f"warm-{digest}.so")
    if os.path.exists(target):
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    tmp = f"{target}.{os.getpid()}.{threading.get_ident()}"
    cmd = [compiler, "-O2", "-shared", "-fPIC", "-o", tmp, _SOURCE, "-lpthread"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        os.rename(tmp, target)
    except (OSError, subprocess.SubprocessError) as e:
        log.info("runtime.data: could not build the warm allocator (%s); numpy's is used", e)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return None
    return target


class _Hook:
    """numpy's allocator hook over the compiled allocator (one per process)."""

    def __init__(self, path: str) -> None:
        try:
            umath: Any = importlib.import_module("numpy._core._multiarray_umath")
        except ImportError:  # numpy 1.x
            umath = importlib.import_module("numpy.core._multiarray_umath")
        lib = ctypes.CDLL(path)
        lib.warm_configure.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
        lib.warm_configure.restype = None
        lib.warm_trim.argtypes, lib.warm_trim.restype = [], None
        lib.warm_stats.argtypes = [ctypes.POINTER(ctypes.c_uint64)]
        lib.warm_stats.restype = None
        lib.warm_configure(BIG, RETAIN)
        self.lib = lib

        def address(name: str) -> int | None:
            return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value

        self.handler = _Handler(
            b"runtime_data_warm",
            1,
            _Allocator(
                None,
                address("warm_malloc"),
                address("warm_calloc"),
                address("warm_realloc"),
                address("warm_free"),
            ),
        )
        self._name = ctypes.c_char_p(b"mem_handler")
        # Prototypes of their own (setting argtypes on ctypes.pythonapi's would change them
        # for every other user of ctypes in the process).
        api = ctypes.pythonapi
        new_capsule = ctypes.PYFUNCTYPE(
            ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p
        )(("PyCapsule_New", api))
        get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
            ("PyCapsule_GetPointer", api)
        )
        self.capsule = new_capsule(ctypes.addressof(self.handler), self._name, None)
        # numpy's C API table: PyDataMem_SetHandler is entry 304 (numpy >= 1.22, 2.x).
        table = ctypes.cast(get_pointer(umath._ARRAY_API, None), ctypes.POINTER(ctypes.c_void_p))
        self.set_handler = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object)(table[304])
        # Check the entry is the one before any array is made through it: numpy's default
        # handler in place, ours once set, the default again after.
        if umath.get_handler_name() != "default_allocator":
            raise RuntimeError("numpy's allocator is not its default one")
        old = self.set_handler(self.capsule)
        try:
            if umath.get_handler_name() != "runtime_data_warm":
                raise RuntimeError("numpy's allocator hook is not where it was expected")
        finally:
            self.set_handler(old)
        if umath.get_handler_name() != "default_allocator":
            raise RuntimeError("numpy's allocator hook could not be undone")
        self.last_used = time.monotonic()
        self._trimmer: threading.Thread | None = None

    def stats(self) -> dict[str, int]:
        """Mappings reused, made, unmapped; bytes kept; mappings live."""
        out = (ctypes.c_uint64 * 5)()
        self.lib.warm_stats(out)
        return dict(zip(("reused", "mapped", "unmapped", "kept", "live"), out, strict=True))

    def trim(self) -> None:
        self.lib.warm_trim()

    def used(self) -> None:
        """A batch function ran: keep the free mappings ``IDLE_S`` longer (a thread of its
        own gives them back once no batch function ran for that long)."""
        self.last_used = time.monotonic()
        if self._trimmer is None:
            self._trimmer = threading.Thread(
                target=self._trim_when_idle, name="runtime-data-warm-trim", daemon=True
            )
            self._trimmer.start()

    def _trim_when_idle(self) -> None:
        while True:
            time.sleep(IDLE_S / 2)
            if time.monotonic() - self.last_used > IDLE_S:
                self.lib.warm_trim()


_hook: _Hook | None = None
_tried = False
_lock = threading.Lock()
#: A second reference to the hook, so that clearing this module's globals at exit does not
#: free the handler structure of arrays still alive. (The list itself is leaked on purpose.)
_keep: list[_Hook] = []
ctypes.pythonapi.Py_IncRef(ctypes.py_object(_keep))


def get_hook() -> _Hook | None:
    """This process's hook, built on first use (None where it cannot be)."""
    global _hook, _tried
    if _tried:
        return _hook
    with _lock:
        if not _tried:
            try:
                if sys.platform != "linux" or sys.implementation.name != "cpython":
                    raise RuntimeError("not CPython on Linux")
                path = build_library()
                if path is not None:
                    hook = _Hook(path)
                    _keep.append(hook)
                    _hook = hook
            except Exception as e:
                log.info("runtime.data: no warm allocator (%s); numpy's is used", e)
            _tried = True
    return _hook


@contextlib.contextmanager
def warm_arrays() -> Iterator[None]:
    """numpy arrays of at least :data:`BIG` bytes made in this thread, in this block, come
    from (and go back to) the process's cache of touched pages."""
    hook = get_hook()
    if hook is None:
        yield
        return
    old = hook.set_handler(hook.capsule)
    try:
        yield
    finally:
        hook.set_handler(old)
        hook.used()
