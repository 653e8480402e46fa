"""The streaming executor: runs a logical plan as pipelined stages of tasks and actor pools.

It runs in the consuming process (the driver) as a generator of :class:`RefBundle` s. Each
stage holds a bounded number of running tasks and stops launching while the blocks it made
but nobody consumed yet (plus what its running tasks will make) exceed
``DataContext.op_output_buffer_bytes``: a slow consumer slows every stage upstream, so memory
stays bounded however large the input. Blocks stay in the object store (on the node that made
them) until a downstream task or the consumer takes them. Tasks are retriable, so the runtime
re-runs the task of a block lost with its node (lineage).
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import runtime
import runtime.exceptions as rex

from . import _block as B
from . import _metrics
from ._context import DataContext
from ._datasource import ReadTask
from ._plan import (
    ActorPoolStrategy,
    AllToAllOp,
    InputDataOp,
    LimitOp,
    LogicalOp,
    MapOp,
    ReadOp,
    RefBundle,
    UnionOp,
)
from ._transforms import Transform, apply_all, read_block, run_fused_streaming

_stream_task: Any = runtime.remote(num_returns="streaming", max_retries=3)(run_fused_streaming)

#: Failures that mean a block (or the actor making it) was lost with a node, not a user error.
LOST = (rex.ObjectLostError, rex.NodeDiedError, rex.ActorDiedError)


@dataclass
class ChainStep:
    """The transforms of one stage, and the class to build for them (actor-pool stages)."""

    transforms: list[Transform]
    udf_class: Any = None
    ctor_args: tuple[Any, ...] = ()
    ctor_kwargs: dict[str, Any] = field(default_factory=dict)


def run_chain(
    source: Any, index: int, chain: list[ChainStep], *blocks: B.Block
) -> tuple[B.Block, B.BlockMetadata]:
    """Make one block again from its source through every stage up to the lost one.

    Lineage in the runtime re-runs the task whose result was lost, but that task's input
    block may be gone too; this runs the whole chain from the source item in one task.
    An actor-pool stage's class is built here for the occasion.
    """
    t0 = time.perf_counter()
    block = read_block(source) if source is not None else B.concat(list(blocks))
    in_rows = block.num_rows
    for step in chain:
        env = {}
        if step.udf_class is not None:
            env["udf"] = step.udf_class(*step.ctor_args, **step.ctor_kwargs)
        block = apply_all(block, index, step.transforms, env)
    return block, B.metadata_of(block, time.perf_counter() - t0, in_rows)


#: No CPU: the consumer may wait on it while paused streaming tasks hold every CPU.
_recover_task: Any = runtime.remote(num_returns=2, max_retries=3, num_cpus=0)(run_chain)
MAX_RECOVERIES = 3


class _Lineage:
    """What each in-flight block came from, so a lost one can be made again."""

    def __init__(self) -> None:
        self.origin: dict[int, Any] = {}
        self.chains: dict[int, list[ChainStep] | None] = {}
        self.sliced: set[int] = set()
        self.attempts: dict[int, int] = {}

    def submit(self, stage_index: int, seq: int, error: BaseException) -> tuple[Any, Any]:
        chain = self.chains.get(stage_index)
        if chain is None or seq not in self.origin or seq in self.sliced:
            raise error
        tries = self.attempts.get(seq, 0) + 1
        if tries > MAX_RECOVERIES:
            raise error
        self.attempts[seq] = tries
        item = self.origin[seq]
        if isinstance(item, ReadTask):
            return tuple(_recover_task.remote(item, seq, chain))  # type: ignore[return-value]
        return tuple(_recover_task.remote(None, seq, chain, item.ref))  # type: ignore[return-value]

    def recoverer(self, stage_index: int, seq: int) -> Callable[[], RefBundle] | None:
        chain = self.chains.get(stage_index)
        item = self.origin.get(seq)
        if chain is None or item is None or seq in self.sliced:
            return None

        def recover() -> RefBundle:
            block_ref, meta_ref = (
                _recover_task.remote(item, seq, chain)
                if isinstance(item, ReadTask)
                else _recover_task.remote(None, seq, chain, item.ref)
            )
            return RefBundle(block_ref, runtime.get(meta_ref))

        return recover


def store_budget(ctx: DataContext, stages: int) -> int:
    """Bytes each stage may hold: ``op_output_buffer_bytes``, lowered so that all stages
    together keep within half the object store's capacity when the cluster reports it
    (Ray's ``object_store_memory`` resource, which core reports per host)."""
    try:
        capacity = float(runtime.cluster_resources().get("object_store_memory", 0))
    except Exception:
        capacity = 0.0
    if capacity <= 0 or stages <= 0:
        return ctx.op_output_buffer_bytes
    return max(1 << 20, min(ctx.op_output_buffer_bytes, int(capacity / 2 / stages)))


def cluster_cpus() -> int:
    try:
        return max(1, int(runtime.cluster_resources().get("CPU", 1)))
    except Exception:
        return 1


@dataclass
class OpStats:
    """What one stage did in one execution: tasks, rows, bytes, time."""

    name: str
    tasks: int = 0
    rows_in: int = 0
    rows_out: int = 0
    bytes_out: int = 0
    task_s: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    recovered: int = 0
    #: Bytes of made, unconsumed blocks the stage may hold (see ``store_budget``), and the
    #: most it held at once.
    budget_bytes: int = 0
    peak_held_bytes: int = 0

    def line(self) -> str:
        wall = max(0.0, self.finished - self.started) if self.started else 0.0
        return (
            f"{self.name}: {self.tasks} tasks, {self.rows_in} rows in, {self.rows_out} rows out, "
            f"{self.bytes_out / 1e6:.1f} MB out, {self.task_s:.3f}s in tasks, {wall:.3f}s wall"
            + (f", {self.recovered} blocks made again after a loss" if self.recovered else "")
            + (
                f", at most {self.peak_held_bytes / 1e6:.1f} MB held of a "
                f"{self.budget_bytes / 1e6:.1f} MB budget"
                if self.budget_bytes
                else ""
            )
        )


@dataclass
class ExecutionStats:
    """Stats of one execution of a plan (``Dataset.stats()`` prints the latest)."""

    ops: list[OpStats] = field(default_factory=list)
    wall_s: float = 0.0
    inputs: list[ExecutionStats] = field(default_factory=list)

    def all_ops(self) -> list[OpStats]:
        """Every operator: those of the inputs (before a barrier or a union) first."""
        return [op for child in self.inputs for op in child.all_ops()] + self.ops

    def summary(self) -> str:
        lines = [f"Operator {i}: {s.line()}" for i, s in enumerate(self.all_ops())]
        lines.append(f"Total wall time: {self.wall_s:.3f}s")
        return "\n".join(lines)


class _Stage:
    """One physical operator: an inbox of blocks, running work, ordered outputs."""

    def __init__(self, name: str, ctx: DataContext) -> None:
        self.ctx = ctx
        self.stats = OpStats(name)
        self.inbox: deque[tuple[int, Any]] = deque()
        self.in_flight: dict[Any, tuple[int, Any]] = {}
        #: Blocks made per input (several when a streaming task splits its output).
        self.outputs: dict[int, list[RefBundle | None]] = {}
        #: Inputs whose work is finished (no more blocks will come for them).
        self.done: set[int] = set()
        #: The source item each input came from, when it is one block of it (lineage).
        self.src: dict[int, int | None] = {}
        self.emitted: dict[int, int] = {}
        self.out_seq = itertools.count()
        self.next_out = 0
        self.held_bytes = 0
        self.out_blocks = 0
        self.closed = False
        self.max_in_flight = ctx.max_tasks_in_flight_per_op or max(2, 2 * cluster_cpus())
        self.lineage: _Lineage | None = None
        self.index = 0
        #: Bytes of made, unconsumed blocks this stage may hold (see ``store_budget``).
        self.budget = ctx.op_output_buffer_bytes

    @property
    def name(self) -> str:
        return self.stats.name

    def est_block_bytes(self) -> int:
        if self.out_blocks:
            return self.stats.bytes_out // self.out_blocks
        return 0

    def has_room(self) -> bool:
        projected = self.held_bytes + len(self.in_flight) * self.est_block_bytes()
        return len(self.in_flight) < self.max_in_flight and (
            not self.in_flight or projected < self.budget
        )

    def set_budget(self, budget: int) -> None:
        self.budget = self.stats.budget_bytes = budget

    def waitable(self) -> list[Any]:
        """What the executor waits on: every running task, but past the budget only the
        streaming task of the oldest input (the one the ordered output waits for), so the
        others pause once their window of unconsumed blocks is full."""
        if self.held_bytes < self.budget:
            return list(self.in_flight)
        return [
            r
            for r, (seq, _) in self.in_flight.items()
            if seq <= self.next_out or not isinstance(r, runtime.ObjectRefGenerator)
        ]

    def wants_input(self) -> bool:
        return len(self.inbox) < self.max_in_flight

    def dispatch(self) -> None:
        raise NotImplementedError

    def on_ready(self, meta_ref: Any) -> None:
        if isinstance(meta_ref, runtime.ObjectRefGenerator):
            self._on_stream_item(meta_ref)
            return
        seq, block_ref = self.in_flight.pop(meta_ref)
        try:
            meta = runtime.get(meta_ref)
        except LOST as e:
            self._recover(seq, e)
            return
        self._record(seq, RefBundle(block_ref, meta))

    def _recover(self, seq: int, error: BaseException) -> None:
        """The block's input, its node or its actor is gone: make it again from its source
        (only while none of this input's blocks went downstream yet)."""
        src = self.src.get(seq)
        if self.lineage is None or src is None or self.emitted.get(seq):
            raise error
        block_ref, new_meta_ref = self.lineage.submit(self.index, src, error)
        self.stats.recovered += 1
        self.outputs.pop(seq, None)
        self.in_flight[new_meta_ref] = (seq, block_ref)

    def _on_stream_item(self, gen: Any) -> None:
        """A streaming task yielded its next (block, metadata) pair, or finished."""
        seq, _ = self.in_flight[gen]
        try:
            block_ref = next(gen)
        except StopIteration:
            del self.in_flight[gen]
            self.outputs.setdefault(seq, [])
            self.done.add(seq)
            return
        try:
            meta_ref = next(gen)
        except StopIteration:
            meta_ref = None
        try:
            if meta_ref is None:
                runtime.get(block_ref)  # the generator's error is the object of its last ref
                raise RuntimeError(f"{self.name}: a streaming task ended after a block")
            meta = runtime.get(meta_ref)
        except LOST as e:
            del self.in_flight[gen]
            with contextlib.suppress(Exception):
                runtime.cancel(gen)
            self._recover(seq, e)
            return
        except BaseException:
            del self.in_flight[gen]
            raise
        self._record(seq, RefBundle(block_ref, meta), final=False)

    def chain_step(self) -> ChainStep | None:
        """This stage as a step of a recovery chain (None: a driver-side stage)."""
        return None

    def _record(self, seq: int, bundle: RefBundle | None, final: bool = True) -> None:
        self.outputs.setdefault(seq, []).append(bundle)
        if final:
            self.done.add(seq)
        if bundle is not None:
            s = self.stats
            s.rows_in += bundle.meta.in_rows
            s.rows_out += bundle.meta.num_rows
            s.bytes_out += bundle.meta.size_bytes
            _metrics.block_out(s.name, bundle.meta.num_rows, bundle.meta.size_bytes)
            s.task_s += bundle.meta.exec_s
            s.finished = time.perf_counter()
            self.out_blocks += 1
            self.held_bytes += bundle.meta.size_bytes
            s.peak_held_bytes = max(s.peak_held_bytes, self.held_bytes)

    def pop_ordered(self) -> Iterator[tuple[int | None, RefBundle | None]]:
        """Blocks in input order, each with its source item when it is that item's only
        block (else None: a split block is not remade from its source). An input's first
        block waits until a second one comes or its task ends, to know which it is."""
        while self.next_out in self.outputs:
            seq = self.next_out
            items = self.outputs[seq]
            finished = seq in self.done
            sent = self.emitted.get(seq, 0)
            if not finished and not sent and len(items) < 2:
                return
            whole = finished and not sent and len(items) <= 1
            src = self.src.get(seq) if whole else None
            while items:
                self.emitted[seq] = self.emitted.get(seq, 0) + 1
                yield src, items.pop(0)
            if not finished:
                return
            del self.outputs[seq]
            self.done.discard(seq)
            self.emitted.pop(seq, None)
            self.src.pop(seq, None)
            self.next_out += 1

    def release(self, bundle: RefBundle | None) -> None:
        """A block this stage made was taken downstream (or by the consumer)."""
        if bundle is not None:
            self.held_bytes -= bundle.meta.size_bytes

    def idle(self) -> bool:
        return not self.inbox and not self.in_flight and not self.outputs

    def close(self) -> None:
        """Stop: drop queued input and cancel running work (its results are not wanted)."""
        self.closed = True
        self.inbox.clear()
        self.cancel_running()
        self.outputs.clear()
        self.done.clear()

    def cancel_running(self) -> None:
        """Cancel this stage's tasks still queued or running (a limit was reached, or the
        consumer stopped early): queued ones never start, running ones see the request."""
        for meta_ref in list(self.in_flight):
            with contextlib.suppress(Exception):  # finished meanwhile, or its node is gone
                runtime.cancel(meta_ref)
        self.in_flight.clear()

    def shutdown(self) -> None:
        pass


class TaskStage(_Stage):
    """Fused map-like transforms run as one retriable task per block (reads included)."""

    def __init__(
        self, transforms: list[Transform], remote_args: dict[str, Any], ctx: DataContext, name: str
    ) -> None:
        super().__init__(name, ctx)
        self.transforms = transforms
        self.remote_args = remote_args
        opts = dict(remote_args)
        concurrency = opts.pop("_concurrency", None)
        if concurrency is not None:
            self.max_in_flight = max(1, int(concurrency))
        opts.setdefault("max_retries", ctx.max_block_retries)
        self.task = _stream_task.options(**opts)
        #: The task with each window used so far (see ``windowed_task``).
        self._windowed: dict[int, Any] = {}

    def set_budget(self, budget: int) -> None:
        """The budget, and each streaming task's window from it: a task runs ahead of the
        executor by its share of the budget in blocks (two items each: the block and its
        metadata), at least two blocks (Ray Data's default) and at most eight (core's
        default window), plus one item so that a task whose last block is in its window
        still finishes and frees its CPU."""
        super().set_budget(budget)
        self._windowed.clear()

    def windowed_task(self) -> Any:
        """The task with the window for the block size seen so far (the target size until
        a block is seen)."""
        block = self.est_block_bytes() or self.ctx.target_max_block_size
        blocks = self.budget // max(1, block * self.max_in_flight)
        window = 2 * max(2, min(8, blocks)) + 1
        task = self._windowed.get(window)
        if task is None:
            task = self._windowed[window] = self.task.options(
                _generator_backpressure_num_objects=window
            )
        return task

    def dispatch(self) -> None:
        while self.inbox and self.has_room():
            seq, item = self.inbox.popleft()
            if not self.stats.started:
                self.stats.started = time.perf_counter()
            size = self.ctx.target_max_block_size
            task = self.windowed_task()
            if isinstance(item, ReadTask):
                gen = task.remote(item, seq, self.transforms, size)
            else:
                gen = task.remote(None, seq, self.transforms, size, item.ref)
            self.stats.tasks += 1
            self.in_flight[gen] = (seq, None)

    def chain_step(self) -> ChainStep | None:
        return ChainStep(self.transforms)


class _PoolWorker:
    """A pool actor: builds the user's callable class once, then maps blocks with it."""

    def __init__(
        self, udf_class: Any, args: tuple[Any, ...], kwargs: dict[str, Any], op_name: str = ""
    ) -> None:
        try:
            self.env = {"udf": udf_class(*args, **kwargs)}
        except Exception as e:
            from ._transforms import annotate

            annotate(
                e,
                f"runtime.data: {op_name or 'a map operator'} could not construct "
                f"{getattr(udf_class, '__qualname__', udf_class)!s} in its pool actor",
            )
            raise

    @runtime.method(num_returns=2)
    def run(
        self, index: int, transforms: list[Transform], source: Any, *blocks: B.Block
    ) -> tuple[B.Block, B.BlockMetadata]:
        t0 = time.perf_counter()
        block = read_block(source) if source is not None else B.concat(list(blocks))
        in_rows = block.num_rows
        block = apply_all(block, index, transforms, self.env)
        return block, B.metadata_of(block, time.perf_counter() - t0, in_rows)


class ActorPoolStage(_Stage):
    """Transforms run on a pool of actors holding the user's callable-class instance."""

    def __init__(self, op: MapOp, transforms: list[Transform], ctx: DataContext) -> None:
        super().__init__(op.name, ctx)
        assert op.compute is not None
        self.strategy: ActorPoolStrategy = op.compute
        self.transforms = transforms
        opts: dict[str, Any] = {"max_restarts": 3, "max_task_retries": 3}
        opts.update(op.remote_args)
        self.actor_cls = runtime.remote(_PoolWorker).options(**opts)
        self.op = op
        self.actors: list[Any] = []
        self.load: dict[int, int] = {}
        self.owner: dict[Any, int] = {}
        assert self.strategy.max_size is not None
        self.max_in_flight = self.strategy.max_size * self.strategy.max_tasks_in_flight_per_actor

    def _add_actor(self) -> None:
        actor = self.actor_cls.remote(
            self.op.udf_class, self.op.ctor_args, self.op.ctor_kwargs, self.op.name
        )
        self.load[len(self.actors)] = 0
        self.actors.append(actor)

    def dispatch(self) -> None:
        per_actor = self.strategy.max_tasks_in_flight_per_actor
        assert self.strategy.min_size is not None and self.strategy.max_size is not None
        if self.inbox and not self.actors:
            for _ in range(self.strategy.min_size):
                self._add_actor()
        while self.inbox and self.has_room():
            i = min(range(len(self.actors)), key=lambda k: self.load[k])
            if self.load[i] >= per_actor:
                if len(self.actors) >= self.strategy.max_size:
                    return
                self._add_actor()
                i = len(self.actors) - 1
            seq, item = self.inbox.popleft()
            if not self.stats.started:
                self.stats.started = time.perf_counter()
            if isinstance(item, ReadTask):
                block_ref, meta_ref = self.actors[i].run.remote(seq, self.transforms, item)
            else:
                block_ref, meta_ref = self.actors[i].run.remote(
                    seq, self.transforms, None, item.ref
                )
            self.load[i] += 1
            self.owner[meta_ref] = i
            self.stats.tasks += 1
            self.in_flight[meta_ref] = (seq, block_ref)

    def on_ready(self, meta_ref: Any) -> None:
        actor = self.owner.pop(meta_ref, None)
        if actor is not None:
            self.load[actor] -= 1
        super().on_ready(meta_ref)

    def chain_step(self) -> ChainStep | None:
        return ChainStep(self.transforms, self.op.udf_class, self.op.ctor_args, self.op.ctor_kwargs)

    def shutdown(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                runtime.kill(actor)
        self.actors.clear()


class LimitStage(_Stage):
    """Passes blocks until ``limit`` rows went by (slicing the last one), then stops upstream."""

    def __init__(self, limit: int, ctx: DataContext) -> None:
        super().__init__("Limit", ctx)
        self.remaining = limit
        self.reached = limit <= 0

    def dispatch(self) -> None:
        while self.inbox:
            seq, bundle = self.inbox.popleft()
            if self.remaining <= 0:
                self._record(seq, None)
                continue
            if bundle.meta.num_rows > self.remaining:
                block = B.compact(runtime.get(bundle.ref).slice(0, self.remaining))
                bundle = RefBundle(runtime.put(block), B.metadata_of(block))
                self.src[seq] = None  # stages after it cannot remake it from its source
            self.remaining -= bundle.meta.num_rows
            self.stats.tasks += 0
            self._record(seq, bundle)
            if self.remaining <= 0:
                self.reached = True


class _Source:
    """Where the first stage's inputs come from: read tasks, or bundles from an iterator."""

    def __init__(self, items: Iterator[Any], total: int | None = None) -> None:
        self.items = items
        #: How many items it yields, when known up front (read tasks, given bundles).
        self.total = total
        self.exhausted = False
        self.seq = itertools.count()

    def pull(self) -> tuple[int, Any] | None:
        if self.exhausted:
            return None
        try:
            item = next(self.items)
        except StopIteration:
            self.exhausted = True
            return None
        return next(self.seq), item

    def close(self) -> None:
        self.exhausted = True
        close = getattr(self.items, "close", None)
        if close is not None:
            close()


def _build(
    op: LogicalOp, ctx: DataContext, stats: ExecutionStats
) -> tuple[_Source, list[_Stage], bool]:
    """The source and stages of a plan; the flag says the source yields read tasks."""
    if isinstance(op, ReadOp):
        tasks = op.datasource.get_read_tasks(op.parallelism)
        return _Source(iter(tasks), len(tasks)), [], True
    if isinstance(op, InputDataOp):
        bundles = list(op.bundles)
        return _Source(iter(bundles), len(bundles)), [], False
    if isinstance(op, UnionOp):
        children = [ExecutionStats() for _ in op.children]
        stats.inputs.extend(children)
        streams = (execute(c, s) for c, s in zip(op.children, children, strict=True))
        return _Source(itertools.chain.from_iterable(streams)), [], False
    if isinstance(op, AllToAllOp):
        assert op.input is not None
        inner = op.input
        fn = op.fn
        child = ExecutionStats()
        own = OpStats(op.name)
        stats.inputs.append(ExecutionStats(ops=[own], inputs=[child]))

        def barrier() -> Iterator[RefBundle]:
            bundles = list(execute(inner, child))
            own.started = time.perf_counter()
            out = fn(bundles)
            own.finished = time.perf_counter()
            own.rows_in = sum(b.meta.num_rows for b in bundles)
            own.rows_out = sum(b.meta.num_rows for b in out)
            own.bytes_out = sum(b.meta.size_bytes for b in out)
            own.task_s = sum(b.meta.exec_s for b in out)
            own.tasks = len(out)
            yield from out

        return _Source(barrier()), [], False
    assert op.input is not None
    source, stages, reads = _build(op.input, ctx, stats)
    if isinstance(op, LimitOp):
        if reads and not stages:
            stages.append(TaskStage([], {}, ctx, op.input.name))
        stages.append(LimitStage(op.limit, ctx))
        return source, stages, reads
    assert isinstance(op, MapOp), op
    last = stages[-1] if stages else None
    if op.compute is None:
        if isinstance(last, TaskStage) and last.remote_args == op.remote_args:
            last.transforms.append(op.transform)
            last.stats.name += f"->{op.name}"
            return source, stages, reads
        if isinstance(last, ActorPoolStage) and not op.remote_args:
            last.transforms.append(op.transform)
            last.stats.name += f"->{op.name}"
            return source, stages, reads
        if reads and not stages:
            name = f"{op.input.name}->{op.name}"
            stages.append(TaskStage([op.transform], op.remote_args, ctx, name))
            return source, stages, reads
        stages.append(TaskStage([op.transform], op.remote_args, ctx, op.name))
        return source, stages, reads
    if reads and not stages:
        stages.append(TaskStage([], {}, ctx, op.input.name))
    stages.append(ActorPoolStage(op, [op.transform], ctx))
    return source, stages, reads


class _Progress:
    """One progress bar per operator (tqdm; ``tqdm.auto`` in a notebook): blocks out of the
    blocks expected, rows out, tasks running and inputs queued. Only when
    ``DataContext.progress_enabled()`` (a terminal or a notebook, not CI, bars not switched
    off); a plain status line when tqdm is missing.

    The blocks expected: the source's count when it is known up front (read tasks, given
    blocks), passed on from operator to operator (most make one block per input block),
    and exact once an operator has had all its input and finished it."""

    def __init__(self, stages: list[_Stage], enabled: bool, source: _Source | None = None) -> None:
        self.source = source
        self.stages = stages
        self.enabled = enabled and bool(stages)
        self.last = 0.0
        self.bars: list[Any] = []
        self.shown: list[int] = []
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            return
        for i, stage in enumerate(stages):
            self.bars.append(
                tqdm(
                    desc=f"- {stage.name}",
                    unit=" blocks",
                    position=i,
                    leave=True,
                    file=sys.stderr,
                    dynamic_ncols=True,
                )
            )
            self.shown.append(0)

    def update(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        totals = self.totals()
        if self.bars:
            for i, (bar, stage) in enumerate(zip(self.bars, self.stages, strict=True)):
                if bar.total != totals[i]:
                    bar.total = totals[i]
                done = stage.out_blocks
                if done > self.shown[i]:
                    bar.update(done - self.shown[i])
                    self.shown[i] = done
                bar.set_postfix_str(
                    f"{stage.stats.rows_out} rows, {len(stage.in_flight)} running, "
                    f"{len(stage.inbox)} queued",
                    refresh=False,
                )
                bar.refresh()
            return
        text = " | ".join(
            f"{s.name}: {s.out_blocks}/{'?' if t is None else t} blocks, {s.stats.rows_out} "
            f"rows, {len(s.in_flight)} running"
            for s, t in zip(self.stages, totals, strict=True)
        )
        sys.stderr.write("\r" + text[:200])
        if force:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def totals(self) -> list[int | None]:
        """The blocks each operator is expected to make (None: not known yet)."""
        expected = self.source.total if self.source is not None else None
        complete = self.source is not None and self.source.exhausted
        out: list[int | None] = []
        for stage in self.stages:
            if isinstance(stage, LimitStage) and not complete:
                expected = None  # a limit stops early: how early is not known
            complete = complete and stage.idle()
            if complete:
                expected = stage.out_blocks
            elif expected is not None:
                expected = max(expected, stage.out_blocks)
            out.append(expected)
        return out

    def close(self) -> None:
        if not self.enabled:
            return
        self.update(force=True)
        for bar in self.bars:
            bar.close()


def execute(op: LogicalOp, stats_out: ExecutionStats | None = None) -> Iterator[RefBundle]:
    """Run the plan ending in ``op``; yield its blocks in order as they are made."""
    ctx = DataContext.get_current()
    stats = stats_out if stats_out is not None else ExecutionStats()
    source, stages, reads = _build(op, ctx, stats)
    if reads and not stages:
        stages.append(TaskStage([], {}, ctx, op.name))
    stats.ops = [s.stats for s in stages]
    lineage = _Lineage()
    budget = store_budget(ctx, len(stages))
    for stage in stages:
        stage.set_budget(budget)
    chain: list[ChainStep] | None = []
    for i, stage in enumerate(stages):
        stage.index, stage.lineage = i, lineage
        step = stage.chain_step()
        if step is not None and chain is not None:
            chain = [*chain, step]
        elif not isinstance(stage, LimitStage):
            chain = None
        lineage.chains[i] = chain
    progress = _Progress(stages, ctx.progress_enabled(), source)
    t0 = time.perf_counter()
    try:
        if not stages:
            while (item := source.pull()) is not None:
                yield item[1]
            return
        first, final = stages[0], stages[-1]
        while True:
            while first.wants_input() and not first.closed:
                pulled = source.pull()
                if pulled is None:
                    break
                lineage.origin[pulled[0]] = pulled[1]
                first.src[pulled[0]] = pulled[0]
                first.inbox.append(pulled)
            for i, stage in enumerate(stages):
                stage.dispatch()
                if stage is final:
                    break
                nxt = stages[i + 1]
                for src, bundle in stage.pop_ordered():
                    stage.release(bundle)
                    seq = next(stage.out_seq)  # the next stage numbers its inputs afresh
                    nxt.src[seq] = src
                    nxt.inbox.append((seq, bundle))
                    nxt.stats.started = nxt.stats.started or time.perf_counter()
                if isinstance(nxt, LimitStage):
                    nxt.dispatch()
                    if nxt.reached and not stage.closed:
                        for upstream in stages[: i + 1]:
                            upstream.close()
                        source.close()
            for src, bundle in final.pop_ordered():
                final.release(bundle)
                if src is not None:
                    if bundle is not None:
                        bundle.recover = lineage.recoverer(final.index, src)
                    lineage.origin.pop(src, None)
                    lineage.attempts.pop(src, None)
                if bundle is not None:
                    yield bundle
            progress.update()
            if isinstance(final, LimitStage) and final.reached:
                return
            if source.exhausted and all(s.idle() for s in stages):
                return
            waiting = [r for s in stages for r in s.waitable()] or [
                r for s in stages for r in s.in_flight
            ]
            if not waiting:
                if source.exhausted and not any(s.inbox for s in stages):
                    return
                continue
            ready, rest = runtime.wait(waiting, num_returns=1)
            if rest:
                more, _ = runtime.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
            owners = {r: s for s in stages for r in s.in_flight}
            for r in ready:
                owners[r].on_ready(r)
    finally:
        for s in stages:
            s.cancel_running()
            s.shutdown()
        progress.close()
        stats.wall_s = time.perf_counter() - t0
