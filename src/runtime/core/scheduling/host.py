"""A host's resources, shared by the node processes of that host (Ray's raylet ledger).

The node processes one ``python -m runtime.node`` (or one local mesh) starts share one
:class:`HostLedger`: a small file mapped into each of them, changed under an exclusive
``flock``, so a grant or a release is atomic across the host without a message or an extra
process. It holds, per resource, the host's total, what is free, and what actors and
placement group bundles hold for long; and, per GPU, the fraction of it still free, so that
GPU grants name devices (``CUDA_VISIBLE_DEVICES``).

A ledger with no path lives in one process only (a node that is its host's only process):
same code, no file and no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import mmap
import os
import struct
from collections import deque
from collections.abc import Hashable, Mapping
from typing import Final

from ..common.exceptions import InfeasibleError
from .gpus import gpu_capacities, set_visible_devices, visible_devices
from .scheduler import _LOOKAHEAD, Resources, fits, unreserved
from .wake import Waiters

_EPS: Final = 1e-9
_MAGIC: Final = b"rthost03"
#: The most resource names and GPUs one host declares.
MAX_RESOURCES: Final = 32
MAX_GPUS: Final = 64
_NAME = 64  # bytes of a resource name in the file
_HEADER = struct.Struct("<8sII")
#: Then the names; then doubles: (total, available, reserved) per resource, then per GPU
#: the fraction still free.
_NUMBERS: Final = _HEADER.size + MAX_RESOURCES * _NAME
#: The most processes one host has; each has a row of what it holds, so that what a process
#: held when it died (os._exit, a segfault, the OOM killer) is given back to the host.
MAX_PROCS: Final = 256
#: A row: the process's pid, then what it holds per resource, what of that it holds for
#: long, and its share of each GPU.
_ROW: Final = 1 + 2 * MAX_RESOURCES + MAX_GPUS
#: The host's one *claim*: the row of a process whose queued request has waited for the
#: host, then the amounts it waits for. Other processes take only what leaves the claim
#: free, so a large request is not starved by a stream of small ones.
_CLAIM: Final = 3 * MAX_RESOURCES + MAX_GPUS
#: Then how many processes wait for the host, and a mark per row (``wake.Waiters``).
_WAITING: Final = _CLAIM + 1 + MAX_RESOURCES
_ROWS: Final = _WAITING + 1 + MAX_PROCS
_SIZE: Final = _NUMBERS + 8 * (_ROWS + MAX_PROCS * _ROW)
_LOCK_EX: Final = fcntl.LOCK_EX
_LOCK_UN: Final = fcntl.LOCK_UN
_flock = fcntl.flock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        pass
    return True


class HostLedger:
    """The resources of one host, shared by its node processes (see the module)."""

    def __init__(
        self, path: str | None, total: Mapping[str, float] | None = None, *, join: bool = True
    ) -> None:
        """Open the ledger at ``path`` (or make one in memory when ``path`` is None). With
        ``total``, the file is created and filled (the process that starts the host);
        without, this process joins the host (a row of its own) unless ``join`` is False."""
        self.path = path
        self.closed = False
        self._fd = -1
        self._map: mmap.mmap | None = None
        if path is None:
            buf: mmap.mmap | bytearray = bytearray(_SIZE)
        else:
            if total is not None:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                os.ftruncate(fd, _SIZE)
            else:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            self._fd = fd
            buf = self._map = mmap.mmap(fd, _SIZE)
        self._buf = buf
        #: The numbers as doubles: reads and writes cost ~0.1 us each.
        self._nums = memoryview(buf)[_NUMBERS:].cast("d")
        self.waiters = Waiters(path, self._nums, (_WAITING, _ROWS, _ROW, MAX_PROCS))
        if total is not None or path is None:
            self._lock()
            try:
                self._init(total or {})
            finally:
                self._unlock()
        magic, n, ngpu = _HEADER.unpack_from(buf, 0)
        if magic != _MAGIC:
            raise ValueError(f"{path} is not a host ledger")
        self.names: list[str] = []
        #: Resource name -> index of its total in the numbers (available +1, reserved +2).
        self.index: dict[str, int] = {}
        self.total: dict[str, float] = {}
        for i in range(n):
            raw = bytes(buf[_HEADER.size + i * _NAME : _HEADER.size + (i + 1) * _NAME])
            name = raw.rstrip(b"\0").decode()
            self.names.append(name)
            self.index[name] = 3 * i
            self.total[name] = self._nums[3 * i]
        self.num_gpus = ngpu
        self._gpu_base = 3 * MAX_RESOURCES
        self._caps = gpu_capacities(self.total.get("GPU", 0.0))
        #: Where this process's row starts in the numbers (-1: it keeps none).
        self._row = -1
        if path is not None and total is None and join:
            self._join()

    def _join(self) -> None:
        """Claim a row for this process (giving back first what dead processes held)."""
        nums = self._nums
        self._lock()
        try:
            self._sweep()
            for r in range(MAX_PROCS):
                base = _ROWS + r * _ROW
                if nums[base] == 0:
                    nums[base : base + _ROW] = memoryview(bytes(8 * _ROW)).cast("d")
                    nums[base] = float(os.getpid())
                    self._row = base
                    return
        finally:
            self._unlock()
        raise RuntimeError(f"the host ledger {self.path} has no room for another process")

    def sweep(self) -> bool:
        """Give the host back what processes that died held; True when there were any."""
        if self._fd < 0 or self.closed:
            return False
        self._lock()
        try:
            found = self._sweep()
        finally:
            self._unlock()
        if found and self._nums[_WAITING] > 0:
            self.waiters.wake()
        return found

    def _sweep(self) -> bool:
        nums, found = self._nums, False
        me = os.getpid()
        for r in range(MAX_PROCS):
            base = _ROWS + r * _ROW
            pid = int(nums[base])
            if pid in (0, me) or _alive(pid):
                continue
            found = True
            self._sweep_row(base)
        claimer = int(nums[_CLAIM])
        if claimer and nums[claimer] == 0:  # its process is gone
            self._clear_claim()
            found = True
        return found

    def _clear_claim(self) -> None:
        nums = self._nums
        for k in range(_CLAIM, _CLAIM + 1 + MAX_RESOURCES):
            nums[k] = 0.0

    def claim(self, demand: Mapping[str, float]) -> bool:
        """Claim what ``demand`` waits for, unless another live process holds the claim."""
        if self._row < 0 or self.closed:
            return False
        nums = self._nums
        self._lock()
        try:
            self._sweep()
            claimer = int(nums[_CLAIM])
            if claimer and claimer != self._row:
                return False
            self._clear_claim()
            nums[_CLAIM] = float(self._row)
            for name, amount in demand.items():
                i = self.index.get(name)
                if i is not None and amount > 0:
                    nums[_CLAIM + 1 + i // 3] = amount
            return True
        finally:
            self._unlock()

    def unclaim(self) -> None:
        """Drop this process's claim (what it waited for was granted or withdrawn)."""
        if self._row < 0 or self.closed or int(self._nums[_CLAIM]) != self._row:
            return
        self._lock()
        try:
            if int(self._nums[_CLAIM]) == self._row:
                self._clear_claim()
        finally:
            self._unlock()

    def claimed_elsewhere(self) -> bool:
        """Another process of the host claims resources now (a read without the lock)."""
        claimer = int(self._nums[_CLAIM]) if not self.closed else 0
        return claimer not in (0, self._row)

    def _sweep_row(self, base: int) -> None:
        """Give back what the row at ``base`` holds, and free the row (under the lock)."""
        nums = self._nums
        for i in self.index.values():
            k = base + 1 + i // 3
            held, long = nums[k], nums[k + MAX_RESOURCES]
            nums[i + 1] = min(nums[i], nums[i + 1] + held)
            nums[i + 2] = max(0.0, nums[i + 2] - long)
        for j in range(self.num_gpus):
            g = self._gpu_base + j
            nums[g] = min(self._caps[j], nums[g] + nums[base + 1 + 2 * MAX_RESOURCES + j])
        nums[base] = 0.0
        self.waiters.set(base, False)

    def _note_gpu(self, j: int, share: float) -> None:
        row = self._row
        if row >= 0:
            k = row + 1 + 2 * MAX_RESOURCES + j
            self._nums[k] = max(0.0, self._nums[k] + share)

    def _lock(self) -> None:
        if self._fd >= 0:
            _flock(self._fd, _LOCK_EX)

    def _unlock(self) -> None:
        if self._fd >= 0:
            _flock(self._fd, _LOCK_UN)

    def _init(self, total: Mapping[str, float]) -> None:
        names = [k for k, v in total.items() if v > 0]
        if len(names) > MAX_RESOURCES:
            raise ValueError(f"a host declares at most {MAX_RESOURCES} resources")
        caps = gpu_capacities(float(total.get("GPU", 0.0)))
        if len(caps) > MAX_GPUS:
            raise ValueError(f"a host declares at most {MAX_GPUS} GPUs")
        _HEADER.pack_into(self._buf, 0, _MAGIC, len(names), len(caps))
        nums = self._nums
        for i, name in enumerate(names):
            encoded = name.encode()
            if len(encoded) > _NAME:
                raise ValueError(f"resource name {name!r} is longer than {_NAME} bytes")
            start = _HEADER.size + i * _NAME
            self._buf[start : start + _NAME] = encoded.ljust(_NAME, b"\0")
            nums[3 * i] = nums[3 * i + 1] = float(total[name])
            nums[3 * i + 2] = 0.0
        for j, cap in enumerate(caps):
            nums[3 * MAX_RESOURCES + j] = cap

    def close(self) -> None:
        if self._row >= 0:  # leaving: what this process still holds goes back to the host
            self._lock()
            try:
                if int(self._nums[_CLAIM]) == self._row:
                    self._clear_claim()
                self._sweep_row(self._row)
            finally:
                self._unlock()
            self._row = -1
        self.closed = True
        self._nums.release()
        if self._map is not None:
            with contextlib.suppress(BufferError):
                self._map.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # --- reading ---------------------------------------------------------------------------

    def available(self) -> dict[str, float]:
        """What is free on the host now (a snapshot; empty once closed)."""
        if self.closed:
            return {}
        nums = self._nums
        return {name: nums[i + 1] for name, i in self.index.items()}

    def reserved(self) -> dict[str, float]:
        """What actors and bundles hold for long on the host now (a snapshot)."""
        if self.closed:
            return {}
        nums = self._nums
        return {name: r for name, i in self.index.items() if (r := nums[i + 2])}

    def gpu_free(self) -> list[float]:
        base, nums = self._gpu_base, self._nums
        return [nums[base + j] for j in range(self.num_gpus)]

    # --- changing ---------------------------------------------------------------------------

    def grow(self, demand: Mapping[str, float], sign: int) -> None:
        """A ledger private to one process (no file) grows by ``demand`` (``sign`` 1) or
        shrinks back (-1): a runtime_env's pool process runs tasks whose resources the node
        that relayed them holds on the host. GPUs are not lent this way (their ids stay with
        the relaying node)."""
        if self.path is not None:
            raise RuntimeError("only a ledger private to one process grows")
        nums = self._nums
        for name, amount in demand.items():
            if amount <= 0 or name == "GPU":
                continue
            i = self.index.get(name)
            if i is None:
                n = len(self.names)
                if n >= MAX_RESOURCES:
                    raise ValueError(f"a host declares at most {MAX_RESOURCES} resources")
                start = _HEADER.size + n * _NAME
                self._buf[start : start + _NAME] = name.encode()[:_NAME].ljust(_NAME, b"\0")
                _HEADER.pack_into(self._buf, 0, _MAGIC, n + 1, self.num_gpus)
                i = self.index[name] = 3 * n
                self.names.append(name)
            nums[i] = max(0.0, nums[i] + sign * amount)
            nums[i + 1] += sign * amount
            self.total[name] = nums[i]

    def take(
        self, demand: Mapping[str, float], *, long: bool = False, force: bool = False
    ) -> list[int] | None:
        """Take ``demand`` from the host if it fits now: the GPU ids granted (empty when it
        asks for none), or None when it does not fit. ``long``: held by an actor or a bundle
        (counted as reserved). ``force``: take it even past what is free (a task that lent
        its resources while blocked takes them back)."""
        if self.closed or not (force or any(a > 0 for a in demand.values())):
            return None if self.closed else []  # going; or nothing to take: no host lock
        index, nums, fd, row = self.index, self._nums, self._fd, self._row
        if fd >= 0:
            _flock(fd, _LOCK_EX)
        try:
            claimer = int(nums[_CLAIM])
            others = claimer not in (0, row)
            todo = []
            for name, amount in demand.items():
                if amount > 0:
                    i = index.get(name)
                    if i is None:
                        return None
                    if not force:
                        free = nums[i + 1] - nums[_CLAIM + 1 + i // 3] if others else nums[i + 1]
                        if free + _EPS < amount:
                            return None
                    todo.append((i, amount))
            ids: list[int] = []
            gpus = demand.get("GPU", 0.0)
            if gpus > 0 and not force:
                chosen = self._choose_gpus(gpus)
                if chosen is None:
                    return None
                ids = chosen
                share = gpus if gpus < 1 else 1.0
                for j in ids:
                    nums[self._gpu_base + j] -= share
                    self._note_gpu(j, share)
            for i, amount in todo:  # (self._note, inline: the per-task path)
                nums[i + 1] -= amount
                if long:
                    nums[i + 2] += amount
                if row >= 0:
                    k = row + 1 + i // 3
                    nums[k] += amount
                    if long:
                        nums[k + MAX_RESOURCES] += amount
            if claimer == row and claimer and not force:
                self._clear_claim()  # granted: the claim has done its work
            return ids
        finally:
            if fd >= 0:
                _flock(fd, _LOCK_UN)

    def _choose_gpus(self, amount: float) -> list[int] | None:
        free = self.gpu_free()
        if amount < 1:  # a fraction shares a device: the fullest one it fits on
            room = [j for j, f in enumerate(free) if f + _EPS >= amount]
            return [min(room, key=lambda j: (free[j], j))] if room else None
        whole = [j for j, f in enumerate(free) if f >= 1 - _EPS]
        need = math.ceil(amount - _EPS)
        return whole[:need] if len(whole) >= need else None

    def give(self, demand: Mapping[str, float], gpu_ids: list[int] | None = None, *,
             long: bool = False) -> None:  # fmt: skip
        """Give back what :meth:`take` granted (never past the host's total)."""
        if self.closed or not (gpu_ids or any(a > 0 for a in demand.values())):
            return  # closing gave back all this process held; or nothing to give back
        index, nums, fd, row = self.index, self._nums, self._fd, self._row
        if fd >= 0:
            _flock(fd, _LOCK_EX)
        try:
            for name, amount in demand.items():
                i = index.get(name)
                if i is None or amount <= 0:
                    continue
                left = nums[i + 1] + amount
                nums[i + 1] = left if left < nums[i] else nums[i]
                if long:
                    nums[i + 2] = max(0.0, nums[i + 2] - amount)
                if row >= 0:  # this process's row holds that much less
                    k = row + 1 + i // 3
                    nums[k] = max(0.0, nums[k] - amount)
                    if long:
                        nums[k + MAX_RESOURCES] = max(0.0, nums[k + MAX_RESOURCES] - amount)
            if gpu_ids:
                gpus = demand.get("GPU", 0.0)
                share = gpus if gpus < 1 else 1.0
                base = self._gpu_base
                for j in gpu_ids:
                    nums[base + j] = min(self._caps[j], nums[base + j] + share)
                    self._note_gpu(j, -share)
        finally:
            if fd >= 0:
                _flock(fd, _LOCK_UN)
        if nums[_WAITING] > 0:  # one read when nobody waits for the host (the hot path)
            self.waiters.wake()


class HostScheduler:
    """One node process's view of its host's ledger: grants come from the host's pool, and
    queued work waits in this process, in arrival order.

    ``slot`` is how much CPU work this process runs at once (the host's CPUs over its
    processes; one process is one GIL): past it, CPU work queues here even if the host has
    room, except that a request larger than the slot runs alone. 0: no such limit.
    """

    def __init__(self, ledger: HostLedger, slot: float = 0.0) -> None:
        self.ledger = ledger
        self.total = dict(ledger.total)
        self.queue: deque[tuple[Hashable, dict[str, float]]] = deque()
        self.slot = slot
        #: What this process holds now (tasks, actors, bundles), and for long (actors, bundles).
        self.used: dict[str, float] = {}
        self.pinned: dict[str, float] = {}
        #: GPU ids granted to queued requests that got their resources, by key.
        self.gpus: dict[Hashable, list[int]] = {}
        #: The GPU ids of the last grant of :meth:`try_take`.
        self.last_gpus: list[int] = []

    @property
    def available(self) -> dict[str, float]:
        """The host's free resources (a snapshot)."""
        return self.ledger.available()

    def feasible(self, demand: Resources) -> bool:
        return fits(demand, self.total)

    def cancel(self, key: Hashable) -> bool:
        for i, (k, _) in enumerate(self.queue):
            if k == key:
                del self.queue[i]
                if not self.queue:
                    self.ledger.unclaim()
                return True
        return False

    def claim_for_queue(self) -> None:
        """After a look at the queue: claim the host's resources for the first request that
        waits for the host (not for this process's slot) and could be granted once running
        tasks end; drop the claim when nothing waits."""
        if not self.queue:
            self.ledger.unclaim()
            return
        demand = self.queue[0][1]
        if self._room_here(demand) and fits(demand, unreserved(self.total, self.ledger.reserved())):
            self.ledger.claim(demand)
        else:  # what waits first now waits for this process, not the host
            self.ledger.unclaim()

    def waits_for_host(self) -> bool:
        """The first queued request has room in this process's slot: it waits for the host
        (behind one that waits for the slot, the process's own releases look again)."""
        return bool(self.queue) and self._room_here(self.queue[0][1])

    def _room_here(self, demand: Resources) -> bool:
        cpu = demand.get("CPU", 0.0)
        if cpu <= 0 or self.slot <= 0:
            return True
        used = self.used.get("CPU", 0.0)
        return used <= _EPS or used + cpu <= self.slot + _EPS

    def never_here(self, demand: Resources) -> bool:
        """True when what actors and bundles hold (on the host, or of this process's share of
        its CPUs) leaves no room here, maybe for good, for ``demand`` (feasible: ``request``)."""
        if (held := self.ledger.reserved()) and not fits(demand, unreserved(self.total, held)):
            return True
        cpu, pinned = demand.get("CPU", 0.0), self.pinned.get("CPU", 0.0)
        return cpu > 0 and self.slot > 0 and pinned > 0 and pinned + cpu > self.slot + _EPS

    def _try(self, demand: Resources, long: bool = False, slot: bool = True) -> list[int] | None:
        if slot and not self._room_here(demand):
            return None
        ids = self.ledger.take(demand, long=long)
        if ids is not None:
            _add(self.used, demand, 1)
            if long:
                _add(self.pinned, demand, 1)
        return ids

    def request(self, key: Hashable, demand: Resources) -> bool:
        ids = self._try(demand)
        if ids is not None:  # granted, so feasible: the check is for what waits
            if ids:
                self.gpus[key] = ids
            return True
        if not self.feasible(demand):
            raise InfeasibleError(f"this host has {self.total} and can never grant {dict(demand)}")
        self.queue.append((key, dict(demand)))
        return False

    def try_take(self, demand: Resources, long: bool = False, slot: bool = True) -> bool:
        """Take ``demand`` now if the host has it (and, with ``slot``, this process's CPU
        slot: a placement group's bundle is a reservation, not running work, so it skips
        that); the GPU ids granted are in :attr:`last_gpus`."""
        ids = self._try(demand, long, slot)
        self.last_gpus = ids or []
        return ids is not None

    def release(
        self, demand: Resources, gpu_ids: list[int] | None = None, long: bool = False
    ) -> list[Hashable]:
        queue = self.queue
        if (
            queue
            and not long
            and not gpu_ids
            and queue[0][1] == demand
            and not self.ledger.claimed_elsewhere()
        ):
            # The next in line here wants just this: hand it over within the process (the
            # host's count does not change, so the shared ledger is not touched).
            return [queue.popleft()[0]]
        self.ledger.give(demand, gpu_ids, long=long)
        _add(self.used, demand, -1)
        if long:
            _add(self.pinned, demand, -1)
        return self._grant()

    def borrow(self, demand: Resources) -> list[Hashable]:
        return self.release(_no_gpu(demand))

    def reacquire(self, demand: Resources) -> None:
        part = _no_gpu(demand)
        self.ledger.take(part, force=True)
        _add(self.used, part, 1)

    def lend_in(self, demand: Resources, sign: int) -> None:
        """In a runtime_env's pool process: see :meth:`HostLedger.grow`."""
        self.ledger.grow(demand, sign)
        self.total = dict(self.ledger.total)

    def _grant(self) -> list[Hashable]:
        granted: list[Hashable] = []
        queue = self.queue
        blocked: dict[str, float] | None = None
        i = 0
        while i < len(queue) and i <= _LOOKAHEAD:
            key, demand = queue[i]
            if blocked is not None and demand == blocked:
                i += 1
                continue
            ids = self._try(demand)
            if ids is None:
                if blocked is None:
                    blocked = demand
                i += 1
                continue
            if ids:
                self.gpus[key] = ids
            granted.append(key)
            del queue[i]
        return granted


def _add(into: dict[str, float], demand: Resources, sign: int) -> None:
    for name, amount in demand.items():
        if amount:
            into[name] = into.get(name, 0.0) + sign * amount


def _no_gpu(demand: Resources) -> dict[str, float]:
    return {k: v for k, v in demand.items() if k != "GPU"}


__all__ = [
    "MAX_GPUS",
    "MAX_RESOURCES",
    "HostLedger",
    "HostScheduler",
    "gpu_capacities",
    "set_visible_devices",
    "visible_devices",
]
