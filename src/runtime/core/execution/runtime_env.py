"""``runtime_env``: environment variables, a working directory and extra modules for tasks and
actors, on ``init`` (for everything the driver submits) or per task and actor.

The submitter zips ``working_dir`` and each ``py_modules`` entry once, names the zip by the
hash of its content, and puts it in the object store. A node fetches a package the first
time a task needs it and unpacks it under its state directory, ``runtime_env/<hash>/``,
where later tasks find it (cached by content, so an unchanged directory ships once).

While a task or actor call runs, its ``env_vars`` are set in ``os.environ``, its working
directory is the current directory and on ``sys.path``, and its ``py_modules`` are importable.
Tasks and actors with an environment run in processes of that environment's own
(:mod:`.pools`, :mod:`.processes`), so they never share ``os.environ`` with another one; only
local mode and streaming tasks still apply environments around each call in a shared process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from ..objects.refs import ObjectRef


class EnvHost(Protocol):
    """What runtime environments need of the process's worker."""

    @property
    def env_packages(self) -> dict[str, ObjectRef[Any]]: ...
    @property
    def state_dir(self) -> str | None: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    def put(self, value: Any, *, counted: bool = True) -> ObjectRef[Any]: ...
    async def get_async(self, ref: ObjectRef[Any]) -> Any: ...


_KEYS = frozenset({"env_vars", "working_dir", "py_modules", "excludes"})
_SKIP_DIRS = frozenset({"__pycache__", ".git", ".hg", ".venv", "node_modules", ".mypy_cache"})
#: The largest package shipped (zipped).
MAX_PACKAGE_BYTES = 100 * 1024 * 1024


def validate(env: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a runtime_env dict; raise ValueError saying what is wrong."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise ValueError(f"runtime_env must be a dict, got {type(env).__name__}")
    unknown = set(env) - _KEYS
    if unknown:
        raise ValueError(
            f"runtime_env keys {sorted(unknown)} are not supported (supported: env_vars, "
            "working_dir, py_modules, excludes); pip and conda environments are not installed "
            "by this runtime: install packages on every node instead"
        )
    out: dict[str, Any] = {}
    env_vars = env.get("env_vars")
    if env_vars is not None:
        if not isinstance(env_vars, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
        ):
            raise ValueError("runtime_env['env_vars'] must be a dict of str to str")
        out["env_vars"] = dict(env_vars)
    wd = env.get("working_dir")
    if wd is not None:
        if not isinstance(wd, str | os.PathLike) or not os.path.isdir(wd):
            raise ValueError(f"runtime_env['working_dir'] must be a local directory, got {wd!r}")
        out["working_dir"] = os.path.abspath(wd)
    mods = env.get("py_modules")
    if mods is not None:
        if not isinstance(mods, list | tuple):
            raise ValueError("runtime_env['py_modules'] must be a list of local paths")
        paths = []
        for mod in mods:
            path = getattr(mod, "__path__", None)  # an imported package
            entry = next(iter(path)) if path is not None else mod
            if not isinstance(entry, str | os.PathLike) or not os.path.exists(entry):
                raise ValueError(f"runtime_env py_modules entry {entry!r} is not a local path")
            paths.append(os.path.abspath(entry))
        out["py_modules"] = paths
    excludes = env.get("excludes")
    if excludes is not None:
        out["excludes"] = [str(e) for e in excludes]
    return out


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A task's env on top of the job's: env_vars merged, the rest replaced."""
    out = {**base, **override}
    if "env_vars" in base and "env_vars" in override:
        out["env_vars"] = {**base["env_vars"], **override["env_vars"]}
    return out


def zip_path(path: str, excludes: list[str] | None = None) -> bytes:
    """A deterministic zip of a directory (or one file): same content, same bytes."""
    buf = io.BytesIO()
    skip = set(excludes or ())
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if os.path.isfile(path):
            _add_file(zf, path, os.path.basename(path))
        else:
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and d not in skip)
                for name in sorted(files):
                    if name in skip or name.endswith(".pyc"):
                        continue
                    full = os.path.join(root, name)
                    rel = os.path.relpath(full, path)
                    _add_file(zf, full, rel)
    data = buf.getvalue()
    if len(data) > MAX_PACKAGE_BYTES:
        raise ValueError(
            f"{path} zips to {len(data) >> 20} MiB, over the {MAX_PACKAGE_BYTES >> 20} MiB limit "
            "for a runtime_env package (add large files to 'excludes')"
        )
    return data


def _add_file(zf: zipfile.ZipFile, full: str, arcname: str) -> None:
    info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = (os.stat(full).st_mode & 0o777) << 16
    with open(full, "rb") as f:
        zf.writestr(info, f.read(), zipfile.ZIP_DEFLATED)


def _package(worker: EnvHost, path: str, excludes: list[str] | None) -> list[Any]:
    data = zip_path(path, excludes)
    digest = hashlib.sha256(data).hexdigest()[:32]
    ref = worker.env_packages.get(digest)
    if ref is None:  # kept while this process lives, so nodes can fetch it later
        ref = worker.env_packages[digest] = worker.put(data)
    is_module_dir = os.path.isdir(path)
    return [digest, ref.id, ref.owner_id, ref.owner_address, os.path.basename(path), is_module_dir]


def prepare(worker: EnvHost, env: Mapping[str, Any]) -> dict[str, Any] | None:
    """The wire form of a validated env: directories zipped and put in the object store."""
    if not env:
        return None
    wire: dict[str, Any] = {}
    if "env_vars" in env:
        wire["env_vars"] = env["env_vars"]
    excludes = env.get("excludes")
    if "working_dir" in env:
        wire["working_dir"] = _package(worker, env["working_dir"], excludes)
    if "py_modules" in env:
        wire["py_modules"] = [_package(worker, m, excludes) for m in env["py_modules"]]
    return wire


class Prepared:
    """A node's unpacked copy of an env: what to set while a task runs."""

    __slots__ = ("env_vars", "sys_paths", "working_dir")

    def __init__(self, env_vars: dict[str, str], working_dir: str | None, paths: list[str]):
        self.env_vars = env_vars
        self.working_dir = working_dir
        self.sys_paths = paths


class EnvManager:
    """Unpacks packages on a node (once per content hash) and applies envs around tasks."""

    def __init__(self, worker: EnvHost) -> None:
        self.worker = worker
        base = worker.state_dir or os.path.join(tempfile.gettempdir(), f"runtime-{os.getuid()}")
        self.root = os.path.join(base, "runtime_env")
        self._unpacking: dict[str, asyncio.Future[str]] = {}
        self._done: set[str] = set()
        self._lock = threading.Lock()
        self._active = 0
        self._saved_env: dict[str, str | None] = {}
        self._saved_cwd: str | None = None

    async def prepare(self, wire: dict[str, Any]) -> Prepared:
        paths: list[str] = []
        working_dir = None
        if "working_dir" in wire:
            working_dir = await self._unpack(wire["working_dir"])
            paths.append(working_dir)
        for entry in wire.get("py_modules", []):
            target = await self._unpack(entry)
            # A package directory is imported by its name from the folder above it.
            paths.append(os.path.dirname(target) if entry[5] else target)
        return Prepared(dict(wire.get("env_vars", {})), working_dir, paths)

    async def _unpack(self, entry: list[Any]) -> str:
        digest, oid, owner_id, owner_address, name, is_dir = entry
        target = os.path.join(self.root, digest, name if is_dir else "")
        target = target.rstrip(os.sep)
        if digest in self._done:
            return target
        pending = self._unpacking.get(digest)
        if pending is not None:
            return await pending
        fut: asyncio.Future[str] = self.worker.loop.create_future()
        self._unpacking[digest] = fut
        try:
            if not await asyncio.to_thread(
                os.path.exists, os.path.join(self.root, digest, ".done")
            ):
                ref: ObjectRef[bytes] = ObjectRef(bytes(oid), owner_id, owner_address)
                data = await self.worker.get_async(ref)
                await asyncio.to_thread(self._extract, bytes(data), digest, target)
            self._done.add(digest)
            fut.set_result(target)
            return target
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: only the waiters care
            raise
        finally:
            del self._unpacking[digest]

    def _extract(self, data: bytes, digest: str, target: str) -> None:
        where = os.path.join(self.root, digest)
        tmp = where + f".tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
        dest = os.path.join(tmp, os.path.relpath(target, where)) if target != where else tmp
        os.makedirs(dest, exist_ok=True)  # an empty directory has no entry in the zip
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.extractall(dest)
        with open(os.path.join(tmp, ".done"), "w"):
            pass
        try:
            os.rename(tmp, where)
        except OSError:  # another process of this host unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def applied(self, env: Prepared | None) -> Iterator[None]:
        """Set ``env`` while the block runs (restored when no task with an env runs)."""
        if env is None:
            yield
            return
        with self._lock:
            if self._active == 0:
                self._saved_cwd = os.getcwd()
            self._active += 1
            for key, value in env.env_vars.items():
                if key not in self._saved_env:
                    self._saved_env[key] = os.environ.get(key)
                os.environ[key] = value
            for path in env.sys_paths:
                if path not in sys.path:
                    sys.path.insert(0, path)
            if env.working_dir is not None:
                os.chdir(env.working_dir)
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    for key, old in self._saved_env.items():
                        if old is None:
                            os.environ.pop(key, None)
                        else:
                            os.environ[key] = old
                    self._saved_env.clear()
                    if self._saved_cwd is not None:
                        with contextlib.suppress(OSError):
                            os.chdir(self._saved_cwd)


__all__ = ["EnvManager", "Prepared", "merge", "prepare", "validate", "zip_path"]
