"""The controller: a named, detached, restartable actor that owns the desired state.

It keeps the applications (route prefix, ingress, deployments), reconciles each
deployment's replica actors toward its target (start, stop gracefully, roll to new code,
reconfigure on a new ``user_config``), autoscales from the replicas' ongoing requests and
the routers' queues, health-checks replicas and replaces the failing ones, and keeps the
HTTP proxy alive. Routers and the proxy follow it by long poll (``listen``); no request
passes through it. After every change it stores its state in the head's KV store, from
which a restarted controller (on any host) takes up the same apps and replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from typing import Any

import runtime
from runtime.experimental import internal_kv
from runtime.util import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
    placement_group,
    remove_placement_group,
)

from . import _metrics, _state
from ._client import NAMESPACE
from ._deployment import DeploymentSpec
from ._proxies import ProxyKeeper
from ._replica import ServeReplica
from ._state import RUNNING, STARTING, STOPPING, AppState, DeploymentState, ReplicaInfo

log = logging.getLogger(__name__)

ReplicaActor = runtime.remote(ServeReplica)

#: The longest the control loop sleeps with nothing to do (proxies, health checks).
_IDLE_S = 1.0
#: Bounded so that followers notice a restarted controller soon (a call in flight to the
#: old instance may only fail when its wait ends).
_LISTEN_TIMEOUT_S = 3.0
_INIT_TIMEOUT_S = float(os.environ.get("RUNTIME_SERVE_REPLICA_INIT_TIMEOUT_S", "120"))
_MAX_START_FAILURES = 3
#: How long a stopping replica has to say it refuses new requests (one that does not
#: answer is dead or hung, and refuses nothing: it is killed at the end of the stop).
_DRAIN_ACK_S = 5.0


class ServeController:
    """Owns Serve's state; every public method is a coroutine on its node's loop."""

    def __init__(self, token: str, http_options: dict[str, Any]) -> None:
        self._token = token
        self._apps: dict[str, AppState] = {}
        self._http = dict(http_options)
        self._restored = False
        # The constructor runs on a thread of its node: it may wait for the head's answer.
        ns = _state.KV_NAMESPACE
        stored = internal_kv._internal_kv_get(_state.KV_KEY, namespace=ns)
        #: The code blobs in the KV store (by digest): written once, deleted when unused.
        self._stored_code = {
            key.decode()[len(_state.CODE_PREFIX) :]
            for key in internal_kv._internal_kv_list(_state.CODE_PREFIX, namespace=ns)
        }

        def fetch(digest: str) -> bytes | None:
            return internal_kv._internal_kv_get(_state.CODE_PREFIX + digest, namespace=ns)

        try:
            loaded = _state.loads(stored, token, fetch)
        except Exception:  # a state this version cannot read: start empty, and say so
            log.exception("serve controller: could not read its stored state; starting empty")
            loaded = None
        if loaded is not None:
            self._apps, self._http = loaded
            self._restored = True
        # Writes of the state to the KV store: one writer at a time, always the latest state.
        self._writer: asyncio.Task[None] | None = None
        self._wanted_writes = 0
        self._done_writes = 0
        self._versions: dict[str, int] = {}
        # Versions start from the clock, so that a restarted controller's versions are newer
        # than any a follower saw from its previous life.
        self._epoch = time.time_ns() // 1000
        self._events: dict[str, asyncio.Event] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._proxies = ProxyKeeper(self._http, self._save)
        self._proxy_task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self._counter = 0
        self._shutting_down = False
        self._doomed: set[Any] = set()  # drained replicas waiting to be killed
        # Set by every change (a deploy, a replica that started or stopped, a report, a
        # background task ending): the control loop runs at once, not on a fixed tick.
        self._changed: asyncio.Event | None = None
        self.iterations = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def ping(self) -> dict[str, Any]:
        """Start the control loop (if not yet) and say whether state was restored."""
        self._ensure_running()
        return {"restored": self._restored, "pid": os.getpid()}

    async def _run(self) -> None:
        if self._restored:
            for app in self._apps.values():
                for dep in app.deployments.values():
                    for rep in list(dep.replicas.values()):
                        self._spawn(self._verify_restored(app, dep, rep))
            self._publish_routes()
            for app in self._apps.values():
                for name in app.deployments:
                    self._publish(app.name, name)
        last_proxy = 0.0
        self._replica_counts = _metrics.ReplicaCounts()
        changed = self._changed = asyncio.Event()
        while not self._shutting_down:
            changed.clear()
            self.iterations += 1
            now = time.monotonic()
            if now - last_proxy > 1.0:
                last_proxy = now
                if self._proxy_task is None or self._proxy_task.done():
                    self._proxy_task = self._spawn(self._proxies.keep())
            for app in list(self._apps.values()):
                for dep in list(app.deployments.values()):
                    try:
                        self._reconcile(app, dep, now)
                    except Exception:  # pragma: no cover - a bug here must not stop the loop
                        log.exception("serve controller: reconcile of %s failed", dep.spec.name)
                    if dep.removed and not dep.replicas:
                        del app.deployments[dep.spec.name]
                        self._publish(app.name, dep.spec.name)
                        self._save()
                if app.deleting and not any(d.replicas for d in app.deployments.values()):
                    del self._apps[app.name]
                    for name in app.deployments:
                        self._publish(app.name, name)
                    self._publish_routes()
                    self._save()
            self._replica_counts.update(self._counts())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_due(time.monotonic(), last_proxy)):
                    await changed.wait()

    def _counts(self) -> dict[tuple[str, str, str], int]:
        counts: dict[tuple[str, str, str], int] = {}
        for app in self._apps.values():
            for dep in app.deployments.values():
                for rep in dep.replicas.values():
                    key = (app.name, dep.spec.name, rep.state)
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def _poke(self) -> None:
        """Something changed: run the control loop now."""
        if self._changed is not None:
            self._changed.set()

    def _next_due(self, now: float, last_proxy: float) -> float:
        """Seconds until the loop has timed work: proxies, health checks, autoscaling."""
        due = last_proxy + _IDLE_S
        for app in self._apps.values():
            for dep in app.deployments.values():
                c = dep.spec.config
                due = min(due, dep.last_health_check + c.health_check_period_s)
                a = c.autoscaling_config
                if a is not None:
                    due = min(due, dep.last_stats + a.metrics_interval_s)
                    if dep.want is not None:
                        delay = a.upscale_delay_s if dep.want > dep.target else a.downscale_delay_s
                        due = min(due, dep.want_since + delay)
        # A little past the due time: the loop's timers may fire up to a millisecond early,
        # and the duty would then not be due yet (a spin of tiny sleeps).
        return max(0.0, due - now) + 0.002

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._bg.discard(task)
        self._poke()  # a replica started or stopped, a check ended: look again

    def _save(self) -> None:
        """The state changed: store it in the head's KV (in the background, in order)."""
        self._poke()
        if self._shutting_down:
            return
        self._wanted_writes += 1
        if self._writer is None or self._writer.done():
            self._writer = self._spawn(self._write_state())

    async def _write_state(self) -> None:
        while self._done_writes < self._wanted_writes and not self._shutting_down:
            wanted = self._wanted_writes
            try:
                await self._store_state()
            except Exception:
                log.exception("serve controller: could not store its state in the head's KV")
            self._done_writes = wanted

    async def _store_state(self) -> None:
        """Store the state: new code blobs first, then the state that names them, then
        delete the blobs no deployment uses any more (a crash between leaves a readable
        state, and at worst unused blobs that the next write deletes)."""
        ns = _state.KV_NAMESPACE
        blobs: dict[str, bytes] = {}
        data = _state.dumps(self._token, self._apps, self._http, blobs)
        for digest, blob in blobs.items():
            if digest not in self._stored_code:
                await internal_kv._internal_kv_put_async(
                    _state.CODE_PREFIX + digest, blob, namespace=ns
                )
                self._stored_code.add(digest)
        await internal_kv._internal_kv_put_async(_state.KV_KEY, data, namespace=ns)
        for digest in self._stored_code - blobs.keys():
            await internal_kv._internal_kv_del_async(_state.CODE_PREFIX + digest, namespace=ns)
            self._stored_code.discard(digest)

    async def _flush(self) -> None:
        """Wait until the state as it is now is stored (a controller restarted from then on
        finds it)."""
        wanted = self._wanted_writes
        writer = self._writer
        while self._done_writes < wanted and writer is not None and not writer.done():
            await asyncio.shield(writer)  # it writes until no change is left unwritten
            writer = self._writer

    # --- long poll ----------------------------------------------------------------------------

    def _snapshot(self, key: str) -> Any:
        kind, _, rest = key.partition(":")
        if kind == "routes":
            return {
                app.route_prefix: (app.name, app.ingress)
                for app in self._apps.values()
                if app.route_prefix is not None and not app.deleting
            }
        if kind == "replicas":
            app_name, _, dep_name = rest.partition(":")
            app = self._apps.get(app_name)
            dep = app.deployments.get(dep_name) if app is not None else None
            if app is None or dep is None:
                return None
            c = dep.spec.config
            return {
                "replicas": [(r.tag, r.handle) for r in dep.running()],
                "nodes": {r.tag: r.node_id for r in dep.running() if r.node_id},
                "models": {r.tag: r.models for r in dep.running() if r.models},
                "max_ongoing_requests": c.max_ongoing_requests,
                "max_queued_requests": c.max_queued_requests,
            }
        raise ValueError(f"unknown long-poll key {key!r}")

    async def listen(self, key: str, version: int) -> tuple[int, Any]:
        """(version, value) of ``key`` once its version differs from ``version`` (or later)."""
        self._ensure_running()
        current = self._versions.setdefault(key, self._epoch)
        if current == version:
            event = self._events.get(key)
            if event is None:
                event = self._events[key] = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_LISTEN_TIMEOUT_S):
                    await event.wait()
        return self._versions[key], self._snapshot(key)

    def _bump(self, key: str) -> None:
        self._versions[key] = self._versions.get(key, self._epoch) + 1
        event = self._events.pop(key, None)
        if event is not None:
            event.set()
        self._poke()

    def _publish(self, app: str, deployment: str) -> None:
        self._bump(f"replicas:{app}:{deployment}")

    def _publish_routes(self) -> None:
        self._bump("routes")

    # --- applications -------------------------------------------------------------------------

    async def deploy_app(
        self,
        name: str,
        route_prefix: str | None,
        ingress: str,
        specs: list[DeploymentSpec],
    ) -> int:
        """Converge ``name`` to these deployments: changed ones roll, dropped ones go.

        Returns the version of the route table that includes this app.
        """
        self._ensure_running()
        self._check_state_size(name, specs)
        if route_prefix is not None:
            for other in self._apps.values():
                if other.name != name and other.route_prefix == route_prefix and not other.deleting:
                    raise ValueError(
                        f"route prefix {route_prefix!r} is already used by application "
                        f"{other.name!r}: choose another, or delete that app first"
                    )
        app = self._apps.get(name)
        if app is None or app.deleting:
            if app is not None:  # a deletion in progress: take its replicas over
                app.deleting = False
            app = app or AppState(name, route_prefix, ingress)
            self._apps[name] = app
        app.route_prefix = route_prefix
        app.ingress = ingress
        wanted = {s.name: s for s in specs}
        for dep_name, gone in list(app.deployments.items()):
            if dep_name not in wanted:
                gone.target = 0
                gone.removed = True
        for spec in specs:
            dep = app.deployments.get(spec.name)
            initial = spec.config.initial_replicas()
            if dep is None:
                app.deployments[spec.name] = DeploymentState(spec, initial)
                continue
            old = dep.spec
            dep.removed = False
            dep.failed = False
            dep.start_failures = 0
            dep.message = ""
            if spec.config.user_config != old.config.user_config:
                dep.user_config_version += 1
            if spec.config.max_ongoing_requests != old.config.max_ongoing_requests:
                for rep in dep.replicas.values():
                    self._spawn(_quiet(rep.handle.set_max_ongoing.remote(
                        spec.config.max_ongoing_requests)))  # fmt: skip
            if spec.config.autoscaling_config is None:
                dep.target = spec.config.num_replicas
            elif old.config.autoscaling_config is None:
                dep.target = initial
            else:
                a = spec.config.autoscaling_config
                dep.target = max(a.min_replicas, min(a.max_replicas, dep.target))
            dep.spec = spec
            self._publish(name, spec.name)  # max_ongoing_requests etc. may have changed
        self._publish_routes()
        self._save()
        await self._flush()
        return self._versions["routes"]

    def _check_state_size(self, name: str, specs: list[DeploymentSpec]) -> None:
        """Refuse a deployment whose pickled code and arguments the head's KV store cannot
        keep (a restarted controller would lose it)."""
        for spec in specs:
            if len(spec.blob) > internal_kv.MAX_VALUE_BYTES:
                raise internal_kv.KVLimitError(
                    f"deployment {spec.name!r} of application {name!r} pickles to "
                    f"{len(spec.blob)} bytes of code and arguments, over the "
                    f"{internal_kv.MAX_VALUE_BYTES} the head's KV store keeps in a value: pass "
                    "large data (model weights) through runtime.put refs or files, not as "
                    "arguments"
                )

    async def delete_app(self, name: str) -> int | None:
        """Stop every replica of ``name`` (gracefully), then forget it; None if unknown.

        Returns the version of the route table without the app.
        """
        app = self._apps.get(name)
        if app is None:
            return None
        app.deleting = True
        for dep in app.deployments.values():
            dep.target = 0
        self._publish_routes()
        self._save()
        await self._flush()
        return self._versions["routes"]

    async def app_names(self) -> list[str]:
        return [a.name for a in self._apps.values() if not a.deleting]

    async def get_ingress(self, name: str) -> str | None:
        app = self._apps.get(name)
        return None if app is None or app.deleting else app.ingress

    async def status(self) -> dict[str, Any]:
        """Every application, its deployments and their replicas' states, as plain data."""
        self._ensure_running()
        apps = {}
        for app in self._apps.values():
            deps = {}
            for dep in app.deployments.values():
                counts: dict[str, int] = {}
                for r in dep.replicas.values():
                    counts[r.state] = counts.get(r.state, 0) + 1
                deps[dep.spec.name] = {
                    "status": dep.status(),
                    "replica_states": counts,
                    "target_replicas": dep.target,
                    "message": dep.message,
                }
            apps[app.name] = {
                "status": app.status(),
                "route_prefix": app.route_prefix,
                "ingress": app.ingress,
                "deployments": deps,
            }
        return {
            "applications": apps,
            "http": {
                "host": self._http.get("host", "127.0.0.1"),
                "port": None
                if self._http.get("disabled")
                else self._proxies.port or self._http.get("port") or None,
                "grpc_port": (self._http.get("grpc") or {}).get("port") or None,
                "error": self._proxies.error,
            },
        }

    async def loop_iterations(self) -> int:
        """How many times the control loop ran (for tests and tools)."""
        return self.iterations

    async def replica_pids(self, app: str, deployment: str) -> dict[str, int | None]:
        """The pid of each running replica (for tests and tools)."""
        dep = self._apps[app].deployments[deployment]
        return {r.tag: r.pid for r in dep.running()}

    async def shutdown(self) -> None:
        """Stop every replica (bounded by their graceful timeouts) and the proxy."""
        self._shutting_down = True
        stops = []
        for app in self._apps.values():
            for dep in app.deployments.values():
                for rep in list(dep.replicas.values()):
                    stops.append(self._stop_replica(app, dep, rep, graceful=True))
        self._apps.clear()
        self._publish_routes()
        await asyncio.gather(*stops, return_exceptions=True)
        proxies = self._proxies.forget_all()

        async def stop(proxy: Any) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_ref(proxy.stop.remote()), 5)
            await _kill(proxy)

        await asyncio.gather(*(stop(p) for p in proxies))
        doomed, self._doomed = list(self._doomed), set()
        if self._writer is not None:  # a write in flight ends before the state is deleted
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)
        for task in list(self._bg):
            task.cancel()
        await asyncio.gather(*(_kill(h) for h in doomed))
        ns = _state.KV_NAMESPACE
        await internal_kv._internal_kv_del_async(_state.KV_KEY, namespace=ns)
        await internal_kv._internal_kv_del_async(_state.CODE_PREFIX, del_by_prefix=True,
                                                 namespace=ns)  # fmt: skip

    # --- reports from routers -----------------------------------------------------------------

    async def record_queued(self, app: str, deployment: str, router: str, n: int) -> None:
        """A router says how many requests it has waiting (input to the autoscaler)."""
        dep = self._find(app, deployment)
        if dep is None:
            return
        if n:
            dep.queued[router] = (n, time.monotonic())
        else:
            dep.queued.pop(router, None)
        self._poke()

    async def record_models(self, app: str, deployment: str, tag: str, ids: list[str]) -> None:
        """A replica's multiplexed models changed: tell the routers (they prefer holders)."""
        dep = self._find(app, deployment)
        rep = dep.replicas.get(tag) if dep is not None else None
        if rep is not None and rep.models != tuple(ids):
            rep.models = tuple(ids)
            self._publish(app, deployment)

    async def multiplexed_models(self, app: str, deployment: str) -> dict[str, list[str]]:
        """{replica tag: the model ids it holds} (as the replicas last reported)."""
        dep = self._find(app, deployment)
        if dep is None:
            return {}
        return {r.tag: list(r.models) for r in dep.replicas.values()}

    async def report_dead_replica(self, app: str, deployment: str, tag: str) -> None:
        """A router saw a call fail because the replica is gone: check it now."""
        a = self._apps.get(app)
        dep = self._find(app, deployment)
        rep = dep.replicas.get(tag) if dep is not None else None
        if a is None or dep is None or rep is None or rep.state != RUNNING:
            return
        try:
            await asyncio.wait_for(_ref(rep.handle.stats.remote()), 5)
        except Exception as exc:
            self._replica_failed(a, dep, rep, f"replica {tag} is unreachable: {exc!r}")

    def _find(self, app: str, deployment: str) -> DeploymentState | None:
        a = self._apps.get(app)
        return a.deployments.get(deployment) if a is not None else None

    # --- reconciliation -----------------------------------------------------------------------

    def _reconcile(self, app: AppState, dep: DeploymentState, now: float) -> None:
        self._autoscale(dep, now)
        version = dep.spec.code_version
        live = dep.live()
        new = [r for r in live if r.version == version]
        old = [r for r in live if r.version != version]
        if not dep.failed:
            for _ in range(dep.target - len(new)):
                self._start_replica(app, dep)
        if len(new) > dep.target:
            # Stop the surplus, the ones still starting first.
            surplus = sorted(new, key=lambda r: r.state == RUNNING)[: len(new) - dep.target]
            for rep in surplus:
                self._spawn(self._stop_replica(app, dep, rep, graceful=True))
        running_new = [r for r in new if r.state == RUNNING]
        if old and not dep.failed and len(running_new) >= dep.target:
            for rep in old:
                self._spawn(self._stop_replica(app, dep, rep, graceful=True))
        for rep in running_new:
            if rep.user_config_version != dep.user_config_version:
                rep.user_config_version = dep.user_config_version
                self._spawn(self._reconfigure(app, dep, rep))
        c = dep.spec.config
        if now - dep.last_health_check >= c.health_check_period_s:
            dep.last_health_check = now
            for rep in running_new + [r for r in old if r.state == RUNNING]:
                self._spawn(self._health_check(app, dep, rep))
        a = c.autoscaling_config
        if a is not None and now - dep.last_stats >= a.metrics_interval_s:
            dep.last_stats = now
            for rep in dep.running():
                self._spawn(self._poll_stats(rep))

    def _autoscale(self, dep: DeploymentState, now: float) -> None:
        a = dep.spec.config.autoscaling_config
        if a is None or dep.failed:
            return
        running = dep.running()
        load: float = sum(r.ongoing for r in running) + dep.queued_total()
        if a.look_back_period_s > 0:  # the average over the look-back period
            dep.samples.append((now, load))
            cutoff = now - a.look_back_period_s
            while dep.samples and dep.samples[0][0] < cutoff:
                dep.samples.pop(0)
            load = sum(v for _, v in dep.samples) / len(dep.samples)
        want = a.desired(dep.target, load)
        if want == dep.target:
            dep.want = None
            return
        if want != dep.want:
            dep.want, dep.want_since = want, now
        delay = a.upscale_delay_s if want > dep.target else a.downscale_delay_s
        if dep.target == 0 and want > 0:
            delay = 0.0  # a request is waiting for the first replica
        if now - dep.want_since >= delay:
            log.info("serve: autoscaling %s from %d to %d", dep.spec.name, dep.target, want)
            dep.target = want
            dep.want = None
            self._save()

    def _place(self, dep: DeploymentState) -> str | None:
        """A node with room under max_replicas_per_node ("" when there is no such bound;
        None when every node is full: the replica waits for a node)."""
        cap = dep.spec.config.max_replicas_per_node
        if cap is None:
            return ""
        counts = {node: 0 for node in self._proxies.nodes}
        for rep in dep.replicas.values():
            if rep.node_id in counts:
                counts[rep.node_id] += 1
        free = [node for node, n in counts.items() if n < cap]
        if not free:
            return None
        return min(free, key=lambda node: counts[node])

    def _start_replica(self, app: AppState, dep: DeploymentState) -> None:
        node = self._place(dep)
        if node is None:
            dep.message = (
                f"waiting for a node: every node runs max_replicas_per_node="
                f"{dep.spec.config.max_replicas_per_node} replicas of {dep.spec.name!r}"
            )
            return
        self._counter += 1
        tag = f"{app.name}#{dep.spec.name}#{os.urandom(3).hex()}"
        c = dep.spec.config
        opts = dict(c.ray_actor_options)
        if node:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
        pg = None
        if c.placement_group_bundles is not None:
            # Its own group, detached like the replica (the controller may restart elsewhere);
            # the replica runs in the first bundle, the rest is for what it starts.
            pg = placement_group(
                list(c.placement_group_bundles),
                strategy=c.placement_group_strategy or "PACK",
                lifetime="detached",
            )
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
            )
        handle = ReplicaActor.options(
            name=f"SERVE_REPLICA::{tag}",
            namespace=NAMESPACE,
            lifetime="detached",
            max_concurrency=100_000,
            **opts,
        ).remote(
            app.name,
            dep.spec.name,
            tag,
            dep.spec.blob,
            dep.spec.is_function,
            c.max_ongoing_requests,
            dataclasses.asdict(c.logging_config) if c.logging_config is not None else None,
        )
        rep = ReplicaInfo(tag, handle, dep.spec.code_version, STARTING, node_id=node or None, pg=pg)
        dep.replicas[tag] = rep
        self._spawn(self._init_replica(app, dep, rep))

    async def _init_replica(self, app: AppState, dep: DeploymentState, rep: ReplicaInfo) -> None:
        c = dep.spec.config
        has_config = c.user_config is not None
        version = dep.user_config_version
        try:
            async with asyncio.timeout(_INIT_TIMEOUT_S):
                if rep.pg is not None:  # an infeasible group fails here, not at the timeout
                    await _ref(rep.pg.ready())
                info = await _ref(rep.handle.initialize.remote(c.user_config, has_config))
        except Exception as exc:
            dep.start_failures += 1
            dep.message = f"a replica of {dep.spec.name!r} failed to start: {exc!r}"
            log.warning("serve: %s", dep.message)
            if dep.start_failures >= _MAX_START_FAILURES:
                dep.failed = True
            dep.replicas.pop(rep.tag, None)
            await _kill_replica(rep)
            return
        if rep.state != STARTING:
            return  # stopped while it started
        rep.pid = info.get("pid")
        rep.node_id = info.get("node_id") or rep.node_id
        rep.state = RUNNING
        rep.user_config_version = version
        dep.start_failures = 0
        dep.message = ""
        self._publish(app.name, dep.spec.name)
        self._save()

    async def _stop_replica(
        self, app: AppState, dep: DeploymentState, rep: ReplicaInfo, *, graceful: bool
    ) -> None:
        if rep.state == STOPPING:
            return
        was_running = rep.state == RUNNING
        rep.state = STOPPING
        self._publish(app.name, dep.spec.name)  # routers stop sending it requests
        c = dep.spec.config
        if graceful and was_running:
            # Routers hear of the stop by long poll, a little later: until the replica
            # refuses new requests itself, the deployment is not done updating.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_ref(rep.handle.drain.remote()), _DRAIN_ACK_S)
        rep.refusing = True
        self._poke()
        if graceful and was_running:
            bound = c.graceful_shutdown_wait_loop_s + c.graceful_shutdown_timeout_s + 5
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    _ref(
                        rep.handle.prepare_for_shutdown.remote(
                            c.graceful_shutdown_wait_loop_s, c.graceful_shutdown_timeout_s
                        )
                    ),
                    bound,
                )
        dep.replicas.pop(rep.tag, None)
        self._save()
        if graceful and was_running and not self._shutting_down:
            # It refuses new requests now; routers that still list it (a long poll in flight
            # to a restarted controller) are sent elsewhere until they hear, then it goes.
            self._doomed.add(rep.handle)
            try:
                await asyncio.sleep(_LISTEN_TIMEOUT_S + 1)
            finally:
                self._doomed.discard(rep.handle)
        await _kill_replica(rep)

    def _replica_failed(
        self,
        app: AppState,
        dep: DeploymentState,
        rep: ReplicaInfo,
        why: str,
        *,
        alive: bool = False,
    ) -> None:
        if rep.state == STOPPING or dep.replicas.get(rep.tag) is not rep:
            return
        log.warning("serve: replacing replica %s: %s", rep.tag, why)
        dep.message = why
        if alive:  # unhealthy but reachable: drain it (routers first), then stop it
            self._spawn(self._stop_replica(app, dep, rep, graceful=True))
            return
        rep.state = STOPPING
        rep.refusing = True
        dep.replicas.pop(rep.tag, None)
        self._spawn(_kill_replica(rep))
        self._publish(app.name, dep.spec.name)
        self._save()  # the next reconcile starts a replacement

    async def _health_check(self, app: AppState, dep: DeploymentState, rep: ReplicaInfo) -> None:
        timeout = dep.spec.config.health_check_timeout_s
        try:
            await asyncio.wait_for(_ref(rep.handle.check_health.remote()), timeout)
        except Exception as exc:
            if rep.state == RUNNING:
                self._replica_failed(
                    app, dep, rep, f"health check of {rep.tag} failed: {exc!r}", alive=True
                )

    async def _poll_stats(self, rep: ReplicaInfo) -> None:
        with contextlib.suppress(Exception):
            rep.ongoing, _ = await asyncio.wait_for(_ref(rep.handle.stats.remote()), 2)

    async def _reconfigure(self, app: AppState, dep: DeploymentState, rep: ReplicaInfo) -> None:
        try:
            await asyncio.wait_for(
                _ref(rep.handle.reconfigure.remote(dep.spec.config.user_config)), _INIT_TIMEOUT_S
            )
        except Exception as exc:
            self._replica_failed(app, dep, rep, f"reconfigure of {rep.tag} failed: {exc!r}")

    async def _verify_restored(self, app: AppState, dep: DeploymentState, rep: ReplicaInfo) -> None:
        """After a restart: keep a replica that answers, replace one that does not."""
        if rep.state == STARTING:
            self._spawn(self._init_replica(app, dep, rep))
            return
        try:
            await asyncio.wait_for(_ref(rep.handle.stats.remote()), 5)
        except Exception as exc:
            if rep.state == STOPPING:
                dep.replicas.pop(rep.tag, None)
                return
            self._replica_failed(app, dep, rep, f"replica {rep.tag} did not survive: {exc!r}")
            return
        if rep.state == STOPPING:
            await self._stop_replica_again(app, dep, rep)

    async def _stop_replica_again(
        self, app: AppState, dep: DeploymentState, rep: ReplicaInfo
    ) -> None:
        rep.state = RUNNING
        await self._stop_replica(app, dep, rep, graceful=True)

    # --- the HTTP proxies -----------------------------------------------------------------------

    async def proxies(self) -> dict[str, Any]:
        """{node id (or "cluster" for the single proxy): proxy handle}."""
        self._ensure_running()
        await self._proxies.settled(30.0)
        return self._proxies.handles()

    async def http_port(self, timeout: float = 30.0) -> int | None:
        """The port the proxy listens on, once it does (raises after ``timeout``); None
        when HTTP is disabled."""
        self._ensure_running()
        return await self._proxies.wait_port(timeout)


async def _ref(ref: Any) -> Any:
    return await ref


async def _quiet(ref: Any) -> None:
    """Await a call whose failure needs no handling (its replica is replaced if it died)."""
    with contextlib.suppress(Exception):
        await ref


async def _kill(handle: Any) -> None:
    """Kill an actor; one that is gone already is fine (the blocking call runs on a thread,
    so that a refusal is an exception here, not an error logged by the loop)."""
    with contextlib.suppress(Exception):
        await asyncio.to_thread(runtime.kill, handle)


async def _kill_replica(rep: ReplicaInfo) -> None:
    """Kill a replica, then free its placement group (if it has one)."""
    await _kill(rep.handle)
    if rep.pg is not None:
        with contextlib.suppress(Exception):
            remove_placement_group(rep.pg)
