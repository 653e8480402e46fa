"""Search spaces: the sampling domains (``tune.uniform`` ...) and resolving a config from them.

A ``param_space`` is a nested dict whose leaves are constants, :class:`Domain` objects
(sampled once per trial), or ``{"grid_search": [...]}`` (one trial per value, cross product
over every grid, times ``num_samples``). :func:`sample_from` leaves see the config resolved
so far, as Ray's do (``spec.config.a``).
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

Path = tuple[str, ...]


class Domain:
    """One hyperparameter's domain: knows how to draw a value from a ``random.Random``."""

    def sample(self, rng: random.Random, spec: Any = None) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Float(Domain):
    """A float in ``[lower, upper)``: uniform, log-uniform, optionally quantized to ``q``."""

    def __init__(self, lower: float, upper: float, *, log: bool = False, q: float | None = None):
        lower, upper = float(lower), float(upper)
        if not lower < upper:
            raise ValueError(f"a float domain needs lower < upper, got [{lower}, {upper})")
        if log and lower <= 0:
            raise ValueError(f"loguniform needs lower > 0, got {lower}")
        if q is not None and q <= 0:
            raise ValueError(f"q must be > 0, got {q}")
        self.lower, self.upper, self.log, self.q = lower, upper, log, q

    def sample(self, rng: random.Random, spec: Any = None) -> float:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.lower), math.log(self.upper)))
        else:
            value = rng.uniform(self.lower, self.upper)
        if self.q is not None:
            value = round(value / self.q) * self.q
        return float(value)


class Integer(Domain):
    """An int in ``[lower, upper)`` (upper exclusive, as Ray's ``randint``), optionally log."""

    def __init__(self, lower: int, upper: int, *, log: bool = False, q: int | None = None):
        if not isinstance(lower, int) or not isinstance(upper, int) or not lower < upper:
            raise ValueError(f"an int domain needs ints lower < upper, got [{lower}, {upper})")
        if log and lower <= 0:
            raise ValueError(f"lograndint needs lower > 0, got {lower}")
        self.lower, self.upper, self.log, self.q = lower, upper, log, q

    def sample(self, rng: random.Random, spec: Any = None) -> int:
        if self.log:
            value = int(math.exp(rng.uniform(math.log(self.lower), math.log(self.upper))))
            value = min(max(value, self.lower), self.upper - 1)
        else:
            value = rng.randrange(self.lower, self.upper)
        if self.q is not None:
            value = int(round(value / self.q) * self.q)
            # Stay inside the domain: the nearest multiple may fall just outside it.
            if value < self.lower:
                value += self.q
            if value >= self.upper:
                value -= self.q
        return value


class Categorical(Domain):
    """One of a list of values, each equally likely."""

    def __init__(self, categories: Sequence[Any]):
        if isinstance(categories, str | bytes) or not isinstance(categories, Sequence):
            raise TypeError(f"choice needs a list of values, got {categories!r}")
        if not categories:
            raise ValueError("choice needs at least one value")
        self.categories = list(categories)

    def sample(self, rng: random.Random, spec: Any = None) -> Any:
        return copy.deepcopy(rng.choice(self.categories))


class Normal(Domain):
    """A float drawn from a normal distribution ``N(mean, sd)``, optionally quantized."""

    def __init__(self, mean: float = 0.0, sd: float = 1.0, *, q: float | None = None):
        if sd <= 0:
            raise ValueError(f"randn needs sd > 0, got {sd}")
        if q is not None and q <= 0:
            raise ValueError(f"q must be > 0, got {q}")
        self.mean, self.sd, self.q = float(mean), float(sd), q

    def sample(self, rng: random.Random, spec: Any = None) -> float:
        value = rng.gauss(self.mean, self.sd)
        if self.q is not None:
            value = round(value / self.q) * self.q
        return float(value)


class Function(Domain):
    """A value computed by ``func(spec)``, where ``spec.config`` is the config resolved so far."""

    def __init__(self, func: Callable[..., Any]):
        if not callable(func):
            raise TypeError(f"sample_from needs a callable, got {func!r}")
        self.func = func

    def sample(self, rng: random.Random, spec: Any = None) -> Any:
        try:
            return self.func(spec)
        except TypeError:
            if _arity(self.func) == 0:
                return self.func()
            raise


def _arity(func: Callable[..., Any]) -> int:
    import inspect

    try:
        return len(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return 1


def uniform(lower: float, upper: float) -> Float:
    """A float drawn uniformly from ``[lower, upper)``."""
    return Float(lower, upper)


def quniform(lower: float, upper: float, q: float) -> Float:
    """A float drawn uniformly from ``[lower, upper)`` and rounded to a multiple of ``q``."""
    return Float(lower, upper, q=q)


def loguniform(lower: float, upper: float) -> Float:
    """A float whose logarithm is uniform over ``[log(lower), log(upper))``."""
    return Float(lower, upper, log=True)


def randint(lower: int, upper: int) -> Integer:
    """An int drawn uniformly from ``[lower, upper)`` (upper excluded, as in Ray)."""
    return Integer(lower, upper)


def lograndint(lower: int, upper: int) -> Integer:
    """An int in ``[lower, upper)`` whose logarithm is uniform."""
    return Integer(lower, upper, log=True)


def randn(mean: float = 0.0, sd: float = 1.0) -> Normal:
    """A float drawn from ``N(mean, sd)``."""
    return Normal(mean, sd)


def qrandn(mean: float, sd: float, q: float) -> Normal:
    """A float drawn from ``N(mean, sd)`` and rounded to a multiple of ``q``."""
    return Normal(mean, sd, q=q)


def qloguniform(lower: float, upper: float, q: float) -> Float:
    """A log-uniform float in ``[lower, upper)`` rounded to a multiple of ``q``."""
    return Float(lower, upper, log=True, q=q)


def qrandint(lower: int, upper: int, q: int = 1) -> Integer:
    """An int in ``[lower, upper]`` (upper *included*, as Ray's ``qrandint``) that is a
    multiple of ``q``."""
    _check_q_int(q)
    return Integer(lower, upper + 1, q=q)


def qlograndint(lower: int, upper: int, q: int) -> Integer:
    """An int in ``[lower, upper]`` (upper included, as in Ray) whose logarithm is
    uniform, rounded to a multiple of ``q``."""
    _check_q_int(q)
    return Integer(lower, upper + 1, log=True, q=q)


def _check_q_int(q: int) -> None:
    if not isinstance(q, int) or isinstance(q, bool) or q < 1:
        raise ValueError(f"q must be an int >= 1, got {q!r}")


def choice(categories: Sequence[Any]) -> Categorical:
    """One of ``categories``, each equally likely."""
    return Categorical(categories)


def sample_from(func: Callable[..., Any]) -> Function:
    """A value computed per trial by ``func(spec)``; ``spec.config`` holds the resolved config."""
    return Function(func)


def grid_search(values: Sequence[Any]) -> dict[str, list[Any]]:
    """Every value in turn: one trial per value (cross product with other grids)."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"grid_search needs a non-empty list of values, got {values!r}")
    return {"grid_search": list(values)}


_FACTORIES = (uniform, quniform, loguniform, randint, lograndint, randn, choice, sample_from)


def is_grid(value: Any) -> bool:
    """True for a ``{"grid_search": [...]}`` leaf."""
    return isinstance(value, dict) and len(value) == 1 and "grid_search" in value


def validate(space: Any, path: Path = ()) -> None:
    """Reject search-space values of a kind Tune cannot resolve, naming where they are.

    Raises:
        TypeError: for an uncalled domain factory (``tune.uniform`` instead of
            ``tune.uniform(0, 1)``), a generator or iterator, a bare function (wrap it in
            ``tune.sample_from``), or a ``Domain`` subclass this module does not know.
    """
    where = "/".join(path) or "<root>"
    if isinstance(space, dict):
        if is_grid(space):
            values = space["grid_search"]
            if not isinstance(values, list | tuple) or not values:
                raise TypeError(f"grid_search at {where!r} needs a non-empty list")
            return
        for key, value in space.items():
            if not isinstance(key, str):
                raise TypeError(f"config keys must be strings, got {key!r} at {where!r}")
            validate(value, (*path, key))
        return
    if isinstance(space, Domain):
        if type(space) not in (Float, Integer, Categorical, Normal, Function):
            raise TypeError(
                f"search-space value at {where!r} is a {type(space).__name__}, a kind of "
                "Domain Tune does not know; use tune.uniform/loguniform/quniform/randint/"
                "lograndint/randn/choice/sample_from/grid_search"
            )
        return
    if any(space is f for f in _FACTORIES):
        raise TypeError(
            f"search-space value at {where!r} is the function tune.{space.__name__} itself; "
            f"call it, e.g. tune.{space.__name__}(...)"
        )
    if isinstance(space, types.GeneratorType | Iterator):
        raise TypeError(
            f"search-space value at {where!r} is an iterator ({type(space).__name__}); "
            "pass a list to tune.grid_search or tune.choice instead"
        )
    if isinstance(space, types.FunctionType | types.LambdaType | types.BuiltinFunctionType):
        raise TypeError(
            f"search-space value at {where!r} is a bare function; wrap it in "
            "tune.sample_from(fn) to compute a value per trial, or pass a constant"
        )


def leaves(space: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every non-dict leaf (grids and domains included) with its path."""
    if isinstance(space, dict) and not is_grid(space):
        for key, value in space.items():
            yield from leaves(value, (*path, key))
    else:
        yield path, space


def set_path(config: dict[str, Any], path: Path, value: Any) -> None:
    """Set ``config[p0][p1]... = value``, making the dicts on the way."""
    for key in path[:-1]:
        config = config.setdefault(key, {})
    config[path[-1]] = value


def get_path(config: dict[str, Any], path: Path) -> Any:
    for key in path:
        config = config[key]
    return config


class _Spec:
    """What a ``sample_from`` function sees: ``spec.config`` (attribute access on dicts)."""

    def __init__(self, config: dict[str, Any]):
        self.config = _AttrDict(config)


class _AttrDict(dict[str, Any]):
    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        return _AttrDict(value) if isinstance(value, dict) else value


def has_unresolved(space: Any) -> bool:
    """True if any leaf is a domain or a grid."""
    return any(isinstance(v, Domain) or is_grid(v) for _, v in leaves(space))


def count_variants(space: Any) -> int:
    """How many grid combinations ``space`` has (1 with no grid)."""
    n = 1
    for _, value in leaves(space):
        if is_grid(value):
            n *= len(value["grid_search"])
    return n


def generate_variants(space: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    """Each grid combination of ``space`` in turn, its domains sampled with ``rng``.

    Grids vary fastest on the last key, as Ray's do. ``sample_from`` leaves resolve after
    the other leaves, so they can read them (a few rounds for chains of them).
    """
    items = list(leaves(space))
    grids = [(p, v["grid_search"]) for p, v in items if is_grid(v)]
    for combo in itertools.product(*[values for _, values in grids]) if grids else [()]:
        config: dict[str, Any] = {}
        functions: list[tuple[Path, Function]] = []
        chosen = {p: v for (p, _), v in zip(grids, combo, strict=True)}
        for path, value in items:
            if not path:
                continue
            if path in chosen:
                set_path(config, path, copy.deepcopy(chosen[path]))
            elif isinstance(value, Function):
                functions.append((path, value))
            elif isinstance(value, Domain):
                set_path(config, path, value.sample(rng))
            else:
                set_path(config, path, copy.deepcopy(value))
        _resolve_functions(functions, config, rng)
        yield config


def _resolve_functions(
    functions: list[tuple[Path, Function]], config: dict[str, Any], rng: random.Random
) -> None:
    """Resolve ``sample_from`` leaves in rounds, so one may read another's value: a leaf
    that reads a value not resolved yet (AttributeError/KeyError) waits for the next round."""
    pending = functions
    while pending:
        failed: list[tuple[Path, Function]] = []
        for path, fn in pending:
            try:
                value = fn.sample(rng, _Spec(config))
            except (AttributeError, KeyError):
                failed.append((path, fn))
                continue
            set_path(config, path, value)
        if len(failed) == len(pending):
            path, fn = failed[0]
            raise ValueError(
                f"sample_from at {'/'.join(path)!r} reads a config value that never resolves"
            )
        pending = failed
