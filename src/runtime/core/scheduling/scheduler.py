"""Resource accounting and placement, as plain state machines (no sockets, no awaits).

:class:`LocalScheduler` is one node's ledger: work asks for resources, runs when they
are free, and queues (in arrival order) when they are not. :func:`pick_node` is the
submitter's choice among the nodes of the cluster view.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Final

from ..common.exceptions import InfeasibleError
from .labels import matches

_EPS: Final = 1e-9
#: How far past a blocked request the queue looks for smaller ones that fit.
_LOOKAHEAD: Final = 16
Resources = Mapping[str, float]


#: The label that says what a member is for: the head (``"head"``), a process started for one
#: actor (``"actor"``) or for one runtime_env (``"env"``), which take no general work
#: (:data:`FOR_LABEL` then says which actor or env); or the node process a ``--head`` started
#: to offer its resources (``"head-node"``, an ordinary node otherwise).
ROLE_LABEL: Final = "runtime.io/role"
FOR_LABEL: Final = "runtime.io/for"
#: The roles of members that take no general work.
RESERVED_ROLES: Final = frozenset({"head", "actor", "env"})


def takes_work(node: Any) -> bool:
    """True for a live node process that general tasks, actors and bundles may be placed on:
    not a driver, not draining (stopping), not the head, not a process kept for one actor or
    one runtime_env."""
    labels = getattr(node, "labels", None) or {}
    return (
        not node.is_driver
        and node.alive
        and not getattr(node, "draining", False)
        and labels.get(ROLE_LABEL) not in RESERVED_ROLES
    )


def fits(demand: Resources, available: Resources) -> bool:
    """True when ``available`` covers every amount in ``demand``."""
    return all(
        amount <= available.get(name, 0.0) + _EPS for name, amount in demand.items() if amount > 0
    )


def normalize(
    num_cpus: float | None,
    num_gpus: float | None,
    resources: Mapping[str, float] | None,
    *,
    default_cpus: float,
    memory: float | None = None,
) -> dict[str, float]:
    """The demand dict for the given options; rejects negative or misnamed amounts."""
    out: dict[str, float] = {}
    cpus = default_cpus if num_cpus is None else num_cpus
    for name, amount in (("CPU", cpus), ("GPU", num_gpus or 0.0), ("memory", memory or 0.0)):
        if check_amount(name, amount):
            out[name] = float(amount)
    check_gpus(out.get("GPU", 0.0))
    if resources is not None and not isinstance(resources, Mapping):
        raise TypeError(f"resources must be a dict of name to amount, got {resources!r:.100}")
    for name, amount in (resources or {}).items():
        if name in ("CPU", "GPU"):
            raise ValueError(f"use num_cpus/num_gpus instead of resources={{{name!r}: ...}}")
        if not isinstance(name, str) or not name or len(name) > MAX_RESOURCE_NAME:
            raise ValueError(
                f"a resource name must be a non-empty str of at most {MAX_RESOURCE_NAME} "
                f"characters, got {name!r:.100}"
            )
        if check_amount(f"resource {name!r}", amount):
            out[name] = float(amount)
    return out


def check_gpus(amount: float) -> None:
    """A GPU request above one must be whole (a fraction shares one device), as in Ray."""
    if amount > 1 and not float(amount).is_integer():
        raise ValueError(
            f"num_gpus must be a whole number when above 1 (a fraction shares one GPU), "
            f"got {amount}"
        )


#: The longest resource name accepted (names travel in every heartbeat).
MAX_RESOURCE_NAME = 256


def check_amount(name: str, amount: object) -> bool:
    """Raise unless ``amount`` is a finite number >= 0; True when it is not zero.

    NaN passes every ``<`` comparison, so it must be refused by name: a NaN demand once let
    12 tasks run at once on 2 CPUs and showed ``CPU: nan`` as available.
    """
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise TypeError(f"{name} amount must be a number, got {amount!r:.100}")
    if not math.isfinite(float(amount)) or amount < 0:
        raise ValueError(f"{name} amount must be a finite number >= 0, got {amount!r}")
    return bool(amount)


class LocalScheduler:
    """A node's resources: grant what fits now, queue the rest in arrival order."""

    def __init__(self, total: Resources) -> None:
        self.total = dict(total)
        self.available = dict(total)
        self.queue: deque[tuple[Hashable, dict[str, float]]] = deque()

    def feasible(self, demand: Resources) -> bool:
        return fits(demand, self.total)

    def request(self, key: Hashable, demand: Resources) -> bool:
        """Take ``demand`` now and return True, or queue ``key`` and return False.

        Raises InfeasibleError when this node could never grant it.
        """
        if not self.feasible(demand):
            raise InfeasibleError(f"this node has {self.total} and can never grant {dict(demand)}")
        if fits(demand, self.available):
            self._take(demand)
            return True
        self.queue.append((key, dict(demand)))
        return False

    #: GPU ids by granted key, and of the last try_take (a host's ledger names devices; a
    #: plain ledger, such as a bundle's, does not).
    gpus: dict[Hashable, list[int]] = {}
    last_gpus: list[int] = []

    def try_take(self, demand: Resources, long: bool = False) -> bool:
        """Take ``demand`` if it fits now, without queueing (``long``: held by an actor or a
        bundle, which a host's ledger counts as reserved)."""
        if fits(demand, self.available):
            self._take(demand)
            return True
        return False

    def release(
        self, demand: Resources, gpu_ids: list[int] | None = None, long: bool = False
    ) -> list[Hashable]:
        """Give ``demand`` back; return the queued keys that now got their resources."""
        for name, amount in demand.items():
            self.available[name] = min(
                self.total.get(name, 0.0), self.available.get(name, 0.0) + amount
            )
        return self._grant()

    def borrow(self, demand: Resources) -> list[Hashable]:
        """Lend out ``demand`` while its holder is blocked (it may come back over budget)."""
        return self.release(demand)

    def reacquire(self, demand: Resources) -> None:
        """Take back what :meth:`borrow` lent, even if that oversubscribes for a while."""
        for name, amount in demand.items():
            self.available[name] = self.available.get(name, 0.0) - amount

    def cancel(self, key: Hashable) -> bool:
        for i, (k, _) in enumerate(self.queue):
            if k == key:
                del self.queue[i]
                return True
        return False

    def _take(self, demand: Resources) -> None:
        for name, amount in demand.items():
            self.available[name] = self.available.get(name, 0.0) - amount

    def _grant(self) -> list[Hashable]:
        """Grant queued requests in arrival order; a small request may pass a large one
        that does not fit, within a short look-ahead (so a release costs O(1), not O(queue))."""
        granted: list[Hashable] = []
        queue = self.queue
        while queue and fits(queue[0][1], self.available):
            key, demand = queue.popleft()
            self._take(demand)
            granted.append(key)
        if len(queue) > 1:
            blocked = queue[0][1]
            i = 1
            limit = min(len(queue), 1 + _LOOKAHEAD)
            while i < limit:
                key, demand = queue[i]
                if demand != blocked and fits(demand, self.available):
                    self._take(demand)
                    granted.append(key)
                    del queue[i]
                    limit = min(limit, len(queue))
                else:
                    i += 1
        return granted


def _slot_free(node: Any, demand: Resources) -> bool:
    """The process can start CPU work of ``demand`` now without sharing its CPU slot."""
    cpu = demand.get("CPU", 0.0)
    slot = getattr(node, "slot", 0.0)
    if cpu <= 0 or slot <= 0:
        return True
    used = float(node.used.get("CPU", 0.0))
    return used <= _EPS or used + cpu <= slot + _EPS


def _slot_open(node: Any, demand: Resources) -> bool:
    """What actors and bundles hold in the process leaves room for ``demand`` (in time)."""
    cpu = demand.get("CPU", 0.0)
    slot = getattr(node, "slot", 0.0)
    pinned = getattr(node, "pinned", 0.0)
    return cpu <= 0 or slot <= 0 or pinned <= _EPS or pinned + cpu <= slot + _EPS


def _labelled(nodes: Iterable[Any], labels: Mapping[str, str] | None) -> Iterable[Any]:
    if not labels:
        return nodes
    return [n for n in nodes if matches(n.labels, labels)]


def pick_node(
    nodes: Iterable[Any],
    demand: Resources,
    load: Mapping[str, int],
    *,
    prefer: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Choose the node process for a task: feasible on its host, then most free per its
    capacity (an idle process first), then least loaded.

    ``nodes`` are NodeInfo-like (``node_id``, ``resources`` and ``available`` of its host,
    ``is_driver``, ``alive``, and ``slot``/``used``/``pinned`` of the process); ``load``
    counts the tasks this submitter already has on each node; ``labels``: a label selector.
    Raises InfeasibleError when no node could ever run it.
    """
    best = _choose(_candidates(nodes, demand, labels), demand, load, prefer)
    if best is None:
        where = f" with labels matching {dict(labels)}" if labels else ""
        raise InfeasibleError(
            f"no node{where} in the cluster can ever satisfy the resource request "
            f"{dict(demand)}; start a node with those resources or lower the request"
        )
    return best


def _candidates(
    nodes: Iterable[Any], demand: Resources, labels: Mapping[str, str] | None
) -> list[tuple[Any, float]]:
    """The nodes a task of ``demand`` may go to, each with the CPUs its load is counted
    against: what depends on the view alone, not on the moment."""
    hosts = [n for n in _labelled(nodes, labels) if takes_work(n) and fits(demand, n.resources)]
    # What actors and bundles hold stays held: a task queued behind it could wait for good.
    # Prefer nodes whose unreserved capacity can hold the task; else any that fits at all.
    free_for_tasks = [n for n in hosts if fits(demand, _unreserved(n)) and _slot_open(n, demand)]
    out = []
    for node in free_for_tasks or hosts:
        slot = getattr(node, "slot", 0.0)
        out.append((node, slot if slot > 0 else max(_unreserved(node).get("CPU", 0.0), 1.0)))
    return out


def _choose(
    candidates: list[tuple[Any, float]],
    demand: Resources,
    load: Mapping[str, int],
    prefer: str | None,
) -> str | None:
    best: str | None = None
    best_key: tuple[float, float, float, str] | None = None
    items = [(k, v) for k, v in demand.items() if v > 0]
    cpu = demand.get("CPU", 0.0)
    for node, cpus in candidates:
        free_now = 1.0
        available = node.available
        for name, amount in items:  # fits(demand, node.available), inline: once per call
            if amount > available.get(name, 0.0) + _EPS:
                free_now = 0.0
                break
        if free_now and cpu > 0 and not _slot_free(node, demand):
            free_now = 0.0
        node_id = node.node_id
        mine = load.get(node_id, 0)
        key = (
            mine / cpus - free_now,
            mine,  # on a tie, the process this submitter gave least (its view may lag)
            0.0 if node_id == prefer else 1.0,
            node_id,
        )
        if best_key is None or key < best_key:
            best, best_key = node_id, key
    return best


class Placer:
    """:func:`pick_node` for one submitter (no labels, no preference), keeping the part
    that depends on the view alone while the view stays the same dict (the worker makes a
    new one on every change): per call only each candidate's free resources and this
    submitter's load are read."""

    __slots__ = ("_candidates", "_view")

    def __init__(self) -> None:
        self._view: object = None
        self._candidates: dict[tuple[tuple[str, float], ...], list[tuple[Any, float]]] = {}

    def pick(self, view: Mapping[str, Any], demand: Resources, load: Mapping[str, int]) -> str:
        if view is not self._view:
            self._view, self._candidates = view, {}
        key = tuple(demand.items())
        candidates = self._candidates.get(key)
        if candidates is None:
            candidates = self._candidates[key] = _candidates(view.values(), demand, None)
        best = _choose(candidates, demand, load, None)
        if best is None or not takes_work(view[best]):
            # None can run it (pick_node says why), or the chosen one changed in place since
            # the view came (a peer found dead): look again, from the view as it is now.
            self._view = None
            return pick_node(view.values(), demand, load)
        return best


def _unreserved(node: Any) -> dict[str, float]:
    reserved = getattr(node, "reserved", None) or {}
    return {k: v - reserved.get(k, 0.0) for k, v in node.resources.items()}


def pick_actor_node(
    nodes: Iterable[Any],
    demand: Resources,
    actors_per_node: Mapping[str, int],
    *,
    affinity: str | None = None,
    soft: bool = False,
    spread: bool = False,
    labels: Mapping[str, str] | None = None,
) -> tuple[str | None, bool]:
    """Choose a node process for an actor: (node id or None if none has room now, feasible
    at all). Its host must have room; an idle process of it is preferred.

    Nodes without CPUs (a local mesh's head) are used only when nothing else fits.
    """
    candidates = [
        n for n in _labelled(nodes, labels) if takes_work(n) and fits(demand, n.resources)
    ]
    if affinity is not None:
        pinned = [n for n in candidates if n.node_id == affinity]
        if pinned or not soft:
            candidates = pinned
    if not candidates:
        return None, False
    room = [n for n in candidates if fits(demand, n.available) and _slot_free(n, demand)]
    if not room:
        return None, True

    def key(n: Any) -> tuple[float, ...]:
        no_cpu = 1.0 if n.resources.get("CPU", 0.0) <= 0 else 0.0
        busy = float(getattr(n, "pinned", 0.0) > _EPS)
        return (no_cpu, busy, float(actors_per_node.get(n.node_id, 0)), n.node_id)

    del spread  # DEFAULT already spreads actors over the least-used nodes
    return min(room, key=key).node_id, True


# --- placement groups --------------------------------------------------------------------------

PG_STRATEGIES: Final = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def _add(total: dict[str, float], demand: Resources) -> None:
    for name, amount in demand.items():
        total[name] = total.get(name, 0.0) + amount


def _room(free: Mapping[str, float]) -> float:
    """How much room a host has left, for ordering (memory, in bytes, would drown the rest)."""
    return sum(v for k, v in free.items() if k not in ("memory", "object_store_memory"))


def _by_host(nodes: Iterable[Any]) -> dict[str, list[Any]]:
    """The live node processes that take work, grouped by host (a process without a host id
    is its own)."""
    out: dict[str, list[Any]] = {}
    for n in nodes:
        if takes_work(n):
            out.setdefault(getattr(n, "host_id", "") or n.node_id, []).append(n)
    return out


def bundles_feasible(
    nodes: Iterable[Any], bundles: Sequence[Resources], strategy: str
) -> str | None:
    """Why the group could never be placed on these hosts (None when it could)."""
    hosts = [procs[0] for procs in _by_host(nodes).values()]
    for i, bundle in enumerate(bundles):
        if not any(fits(bundle, n.resources) for n in hosts):
            return f"no host can ever hold bundle {i} {dict(bundle)}"
    if strategy == "STRICT_PACK":
        total: dict[str, float] = {}
        for bundle in bundles:
            _add(total, bundle)
        if not any(fits(total, n.resources) for n in hosts):
            return f"no single host can ever hold all the bundles together ({total})"
    needed: dict[str, float] = {}
    have: dict[str, float] = {}
    for bundle in bundles:
        _add(needed, bundle)
    for n in hosts:
        _add(have, n.resources)
    short = {k: v for k, v in needed.items() if v > have.get(k, 0.0) + _EPS}
    if short:
        return f"the bundles need {short} in all and the whole cluster has {have}"
    if strategy == "STRICT_SPREAD" and len(bundles) > len(hosts):
        return f"STRICT_SPREAD needs {len(bundles)} hosts and the cluster has {len(hosts)}"
    return None


def place_bundles(
    nodes: Iterable[Any],
    bundles: Sequence[Resources],
    strategy: str,
    fixed: Mapping[int, str] | None = None,
) -> dict[int, str] | None:
    """Choose a node process for every bundle not in ``fixed`` (index -> node id), from what
    the hosts have free now; None when the group does not fit now.

    Strategies speak of hosts: PACK puts bundles on as few hosts as it can, SPREAD on as
    many; the STRICT_ forms fail rather than bend. Within a host, each bundle goes to the
    process that holds least (its own process where the host has enough), so that the
    actors of a gang run in parallel. ``fixed`` holds bundles already placed (after a node
    died, only the lost bundles are placed again).
    """
    groups = _by_host(nodes)
    host_of = {n.node_id: h for h, procs in groups.items() for n in procs}
    free = {h: dict(procs[0].available) for h, procs in groups.items()}
    fixed = dict(fixed or {})
    used: dict[str, int] = {}  # bundles of this group per host
    per_proc: dict[str, int] = {}  # ... and per process
    for node_id in fixed.values():
        h = host_of.get(node_id, node_id)
        used[h] = used.get(h, 0) + 1
        per_proc[node_id] = per_proc.get(node_id, 0) + 1
    todo = [i for i in range(len(bundles)) if i not in fixed]
    # Largest first: they are the hardest to fit.
    todo.sort(key=lambda i: -sum(bundles[i].values()))

    def process_on(h: str) -> str:
        procs = groups[h]
        best = min(
            procs,
            key=lambda n: (
                per_proc.get(n.node_id, 0),
                getattr(n, "pinned", 0.0),
                n.resources.get("CPU", 0.0) <= 0,
                n.node_id,
            ),
        )
        per_proc[best.node_id] = per_proc.get(best.node_id, 0) + 1
        return str(best.node_id)

    if strategy == "STRICT_PACK":
        total: dict[str, float] = {}
        for i in todo:
            _add(total, bundles[i])
        targets = [next(iter(used))] if used else list(groups)
        for h in targets:
            if h in free and fits(total, free[h]):
                return {**fixed, **{i: process_on(h) for i in todo}}
        return None
    out = dict(fixed)
    for i in todo:
        bundle = bundles[i]
        room = [h for h, avail in free.items() if fits(bundle, avail)]
        if strategy == "STRICT_SPREAD":
            room = [h for h in room if h not in used]
        if not room:
            return None
        if strategy == "PACK":  # most used first, then the one with most room left
            choice = min(room, key=lambda h: (-used.get(h, 0), -_room(free[h]), h))
        else:  # SPREAD, STRICT_SPREAD: least used first
            choice = min(room, key=lambda h: (used.get(h, 0), -_room(free[h]), h))
        out[i] = process_on(choice)
        used[choice] = used.get(choice, 0) + 1
        for name, amount in bundle.items():
            free[choice][name] = free[choice].get(name, 0.0) - amount
    return out


# --- placement group bundles on one node -------------------------------------------------------


def pick_bundle(
    bundles: Mapping[tuple[bytes, int], LocalScheduler],
    bundle: tuple[bytes, int],
    demand: Mapping[str, float],
) -> tuple[bytes, int]:
    """The bundle a task or actor runs in, of the ``bundles`` reserved on a node: the one
    asked for, or (index -1) one of the group's bundles here, preferring one with room now."""
    pg_id, index = bundle
    if index >= 0:
        if bundle not in bundles:
            raise InfeasibleError(
                f"bundle {index} of placement group {pg_id.hex()} is not on this node "
                "(the group was removed, or placed again elsewhere)"
            )
        return bundle
    mine = [key for key in bundles if key[0] == pg_id]
    if not mine:
        raise InfeasibleError(
            f"placement group {pg_id.hex()} has no bundle on this node (removed?)"
        )
    for key in mine:
        if fits(demand, bundles[key].available):
            return key
    for key in mine:
        if bundles[key].feasible(demand):
            return key
    return mine[0]


def unreserved(total: Mapping[str, float], held: Mapping[str, float]) -> dict[str, float]:
    """A node's total less what is held there for long."""
    return {k: v - held.get(k, 0.0) for k, v in total.items()}
