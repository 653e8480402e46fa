"""Column expressions for ``Dataset.with_column`` and ``Dataset.filter(expr=...)`` (Ray's
``ray.data.expressions``): ``col("a") * 2 + lit(1)``, comparisons and ``&``/``|``/``~``,
evaluated per block with ``pyarrow.compute`` (vectorised, no Python per row).

Example::

    from runtime.data.expressions import col, lit
    ds = ds.with_column("total", col("price") * col("qty") + lit(1))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BinaryExpr", "ColumnExpr", "Expr", "LiteralExpr", "UnaryExpr", "col", "lit"]

_BINARY = {
    "add": "add",
    "sub": "subtract",
    "mul": "multiply",
    "truediv": "divide",
    "gt": "greater",
    "ge": "greater_equal",
    "lt": "less",
    "le": "less_equal",
    "eq": "equal",
    "ne": "not_equal",
    "and": "and_kleene",
    "or": "or_kleene",
}


class Expr:
    """A column expression; combine with Python operators, evaluate with :meth:`eval`."""

    def eval(self, block: Any) -> Any:
        """The expression's values for every row of a ``pyarrow.Table``."""
        raise NotImplementedError

    def columns(self) -> set[str]:
        return set()

    def _bin(self, op: str, other: Any, reverse: bool = False) -> BinaryExpr:
        other_e = other if isinstance(other, Expr) else LiteralExpr(other)
        return BinaryExpr(op, other_e, self) if reverse else BinaryExpr(op, self, other_e)

    def __add__(self, o: Any) -> BinaryExpr:
        return self._bin("add", o)

    def __radd__(self, o: Any) -> BinaryExpr:
        return self._bin("add", o, True)

    def __sub__(self, o: Any) -> BinaryExpr:
        return self._bin("sub", o)

    def __rsub__(self, o: Any) -> BinaryExpr:
        return self._bin("sub", o, True)

    def __mul__(self, o: Any) -> BinaryExpr:
        return self._bin("mul", o)

    def __rmul__(self, o: Any) -> BinaryExpr:
        return self._bin("mul", o, True)

    def __truediv__(self, o: Any) -> BinaryExpr:
        return self._bin("truediv", o)

    def __rtruediv__(self, o: Any) -> BinaryExpr:
        return self._bin("truediv", o, True)

    def __gt__(self, o: Any) -> BinaryExpr:  # type: ignore[override]
        return self._bin("gt", o)

    def __ge__(self, o: Any) -> BinaryExpr:
        return self._bin("ge", o)

    def __lt__(self, o: Any) -> BinaryExpr:
        return self._bin("lt", o)

    def __le__(self, o: Any) -> BinaryExpr:
        return self._bin("le", o)

    def __eq__(self, o: Any) -> BinaryExpr:  # type: ignore[override]
        return self._bin("eq", o)

    def __ne__(self, o: Any) -> BinaryExpr:  # type: ignore[override]
        return self._bin("ne", o)

    def __and__(self, o: Any) -> BinaryExpr:
        return self._bin("and", o)

    def __or__(self, o: Any) -> BinaryExpr:
        return self._bin("or", o)

    def __invert__(self) -> UnaryExpr:
        return UnaryExpr("invert", self)

    def __neg__(self) -> UnaryExpr:
        return UnaryExpr("negate", self)

    __hash__ = object.__hash__


@dataclass(eq=False)
class ColumnExpr(Expr):
    name: str

    def eval(self, block: Any) -> Any:
        if self.name not in block.column_names:
            raise KeyError(
                f"expression refers to column {self.name!r}, which is not among "
                f"{block.column_names}"
            )
        return block.column(self.name)

    def columns(self) -> set[str]:
        return {self.name}

    def __repr__(self) -> str:
        return f"col({self.name!r})"


@dataclass(eq=False)
class LiteralExpr(Expr):
    value: Any

    def eval(self, block: Any) -> Any:
        import pyarrow as pa

        return pa.scalar(self.value)

    def __repr__(self) -> str:
        return f"lit({self.value!r})"


@dataclass(eq=False)
class BinaryExpr(Expr):
    op: str
    left: Expr
    right: Expr

    def eval(self, block: Any) -> Any:
        import pyarrow.compute as pc

        return pc.call_function(_BINARY[self.op], [self.left.eval(block), self.right.eval(block)])

    def columns(self) -> set[str]:
        return self.left.columns() | self.right.columns()

    def __repr__(self) -> str:
        return f"({self.left!r} {self.op} {self.right!r})"


@dataclass(eq=False)
class UnaryExpr(Expr):
    op: str
    operand: Expr

    def eval(self, block: Any) -> Any:
        import pyarrow.compute as pc

        return pc.call_function(self.op, [self.operand.eval(block)])

    def columns(self) -> set[str]:
        return self.operand.columns()

    def __repr__(self) -> str:
        return f"{self.op}({self.operand!r})"


def col(name: str) -> ColumnExpr:
    """The values of column ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"col needs a column name, got {name!r}")
    return ColumnExpr(name)


def lit(value: Any) -> LiteralExpr:
    """A constant."""
    return LiteralExpr(value)
