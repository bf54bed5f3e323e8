"""A hardware design space: parameters with discrete values, a candidate table, and its tree.

A *design* is one row of a candidate table (a DataFrame whose columns are the parameters); a
:class:`DesignSpace` names the parameters, the values each may take, how each is scaled for a
surrogate model (log or linear), and the *configuration tree* the deep tree kernel walks
(:class:`TreeNode`): leaves read parameter columns, inner nodes combine their children.

:func:`llmshare_space` is the source's space (LLMShare, DAC'25, slides' Table 1): ten
parameters per pool (prefill and decode), about 8.7e14 designs in all, with the tree
system -> pool -> server -> device -> compute / memory / links.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from simcluster.errors import InputError, value_text

POOLS = ("prefill", "decode")

# field, values (slides' Table 1), log-scaled for the surrogate
LLMSHARE_FIELDS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("servers", tuple(range(1, 11))),
    ("devices_per_server", (4, 8, 12, 16)),
    ("links_per_device", (6, 12, 18, 24)),
    ("memory_gb", (40, 64, 80, 96, 112, 128)),
    ("global_buffer_mb", tuple(range(20, 111, 10))),
    ("cores", (72, 96, 108, 132, 156, 180)),
    ("local_buffer_kb", tuple(range(64, 513, 64))),
    ("lanes", (1, 2, 4, 8)),
    ("array_height", (16, 32, 64, 128)),
    ("vector_width", (16, 32, 64, 128)),
)


@dataclass(frozen=True)
class Parameter:
    """One design parameter: a column name, the values it may take, and its scale.

    ``log`` scales it logarithmically when a surrogate reads it (a ratio matters, not a
    difference: 8 -> 16 devices is as large a step as 4 -> 8).
    """

    name: str
    values: tuple[float, ...]
    log: bool = True

    def __post_init__(self):
        vals = tuple(float(v) for v in self.values)
        if not vals:
            raise InputError("expected at least one value", field=self.name)
        if len(set(vals)) != len(vals):
            raise InputError(f"values repeat: {list(self.values)}", field=self.name)
        if not all(math.isfinite(v) for v in vals):
            raise InputError(f"values must be finite numbers, got {list(self.values)}",
                             field=self.name)
        if self.log and min(vals) <= 0:
            raise InputError(f"a log-scaled parameter needs positive values, got "
                             f"{list(self.values)}", field=self.name)
        object.__setattr__(self, "values", tuple(sorted(vals)))

    def encode(self, column: np.ndarray) -> np.ndarray:
        """Values mapped onto [0, 1] (log or linear between the smallest and largest value)."""
        f = np.log if self.log else (lambda a: a)
        lo, hi = f(self.values[0]), f(self.values[-1])
        if hi == lo:
            return np.full(len(column), 0.5)
        return (f(np.asarray(column, dtype=float)) - lo) / (hi - lo)


@dataclass(frozen=True)
class TreeNode:
    """A node of the configuration tree: parameter columns it reads, and its children.

    A leaf reads columns only; an inner node reads its children's embeddings and, optionally,
    columns of its own (a pool reads its server count beside its server's embedding).
    """

    name: str
    features: tuple[str, ...] = ()
    children: tuple["TreeNode", ...] = ()

    def __post_init__(self):
        if not self.features and not self.children:
            raise InputError("a tree node needs features or children", field=self.name)

    def walk(self) -> Iterable["TreeNode"]:
        """This node and every node below it, children before their parent."""
        for child in self.children:
            yield from child.walk()
        yield self

    def columns(self) -> list[str]:
        """Every parameter column read anywhere in this subtree, in walk order."""
        return [c for node in self.walk() for c in node.features]


@dataclass(frozen=True)
class DesignSpace:
    """Parameters (the candidate table's columns) and the configuration tree over them."""

    parameters: tuple[Parameter, ...]
    tree: TreeNode | None = None
    memory_terms: tuple[tuple[str, ...], ...] = field(default=())

    def __post_init__(self):
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise InputError(f"parameter names repeat: {names}")
        tree = self.tree or TreeNode("system", features=tuple(names))
        read = tree.columns()
        unknown = sorted(set(read) - set(names))
        if unknown:
            raise InputError(f"the tree reads unknown parameters {unknown}; known: {names}")
        if sorted(read) != sorted(names):
            raise InputError(f"the tree must read every parameter exactly once; read {read}, "
                             f"parameters {names}")
        object.__setattr__(self, "tree", tree)
        for term in self.memory_terms:
            missing = sorted(set(term) - set(names))
            if missing:
                raise InputError(f"memory term {list(term)} names unknown parameters {missing}")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def size(self) -> int:
        """The number of designs in the whole space (product of the value counts)."""
        return math.prod(len(p.values) for p in self.parameters)

    def validate(self, table: pd.DataFrame, *, source: str = "candidate table") -> pd.DataFrame:
        """The table's parameter columns, checked: present, and every value one of the allowed.

        Raises :class:`InputError` naming the column, the row and the allowed values.
        """
        missing = [n for n in self.names if n not in table.columns]
        if missing:
            raise InputError(f"missing parameter columns {missing}; have {list(table.columns)}",
                             file=source)
        for p in self.parameters:
            col = pd.to_numeric(table[p.name], errors="coerce").to_numpy(dtype=float)
            bad = ~np.isin(col, p.values)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise InputError(f"row {row}: {value_text(table[p.name].iloc[row])} is not one of "
                                 f"{[_plain(v) for v in p.values]}", file=source, field=p.name)
        return table[self.names]

    def encode(self, table: pd.DataFrame) -> np.ndarray:
        """The table as an (n, d) array on [0, 1]^d, columns in parameter order."""
        return np.column_stack([p.encode(table[p.name].to_numpy(dtype=float))
                                for p in self.parameters]) if len(table) else \
            np.zeros((0, len(self.parameters)))

    def total_memory(self, table: pd.DataFrame) -> np.ndarray:
        """Each design's total main memory: the sum over ``memory_terms`` of their products.

        For the LLMShare space that is MCI's c_i = sc_p dc_p mm_p + sc_d dc_d mm_d (GB).
        """
        if not self.memory_terms:
            raise InputError("this design space states no memory terms; memory-centric "
                             "initialisation needs them (e.g. servers x devices x memory_gb "
                             "per pool)")
        return sum(np.prod([table[c].to_numpy(dtype=float) for c in term], axis=0)
                   for term in self.memory_terms)

    def sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        """``n`` distinct designs drawn uniformly from the whole space (seeded by ``rng``)."""
        if n > self.size:
            raise InputError(f"asked for {n} distinct designs from a space of {self.size}")
        seen: set[tuple] = set()
        rows: list[tuple] = []
        while len(rows) < n:
            draw = np.column_stack([rng.choice(p.values, size=2 * (n - len(rows)))
                                    for p in self.parameters])
            for row in map(tuple, draw):
                if row not in seen:
                    seen.add(row)
                    rows.append(row)
                    if len(rows) == n:
                        break
        return _typed(pd.DataFrame(rows, columns=self.names))

    def enumerate(self, limit: int = 1_000_000) -> pd.DataFrame:
        """Every design of the space, as a table (refused above ``limit`` designs)."""
        if self.size > limit:
            raise InputError(f"the space has {self.size:.3g} designs, more than the {limit} "
                             "that may be enumerated; sample it instead")
        grids = np.meshgrid(*[np.asarray(p.values) for p in self.parameters], indexing="ij")
        return _typed(pd.DataFrame({p.name: g.ravel() for p, g in zip(self.parameters, grids)}))


def _plain(v: float):
    return int(v) if float(v).is_integer() else v


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """Integer-valued columns as integers (design tables read naturally)."""
    for c in table.columns:
        col = table[c].to_numpy(dtype=float)
        if np.all(np.mod(col, 1) == 0):
            table[c] = col.astype(np.int64)
    return table


def design_hash(design: Mapping[str, float]) -> str:
    """A stable hash of one design (parameter name -> value): the cache key of its evaluation.

    Integers and integer-valued floats hash alike (8 and 8.0 are one design); key order does
    not matter.
    """
    canon = {str(k): _plain(float(v)) for k, v in design.items()}
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def design_hashes(table: pd.DataFrame, names: Sequence[str] | None = None) -> list[str]:
    """:func:`design_hash` of every row of ``table`` (over ``names``, default all columns)."""
    cols = list(names) if names is not None else list(table.columns)
    return [design_hash(dict(zip(cols, row))) for row in table[cols].itertuples(index=False)]


def _pool_tree(pool: str) -> TreeNode:
    col = (lambda f: f"{pool}_{f}")
    device = TreeNode(f"{pool}.device", children=(
        TreeNode(f"{pool}.compute", tuple(map(col, ("cores", "lanes", "array_height",
                                                     "vector_width")))),
        TreeNode(f"{pool}.memory", tuple(map(col, ("memory_gb", "global_buffer_mb",
                                                    "local_buffer_kb")))),
        TreeNode(f"{pool}.links", (col("links_per_device"),)),
    ))
    server = TreeNode(f"{pool}.server", (col("devices_per_server"),), (device,))
    return TreeNode(f"{pool}.pool", (col("servers"),), (server,))


def llmshare_space(overrides: Mapping[str, Sequence[float]] | None = None) -> DesignSpace:
    """The LLMShare design space: both pools' ten parameters (slides' Table 1) and the tree.

    Columns are ``{pool}_{field}`` (``prefill_servers``, ``decode_memory_gb``, ...).
    ``overrides`` replaces the values of named columns (a smaller space for a quick search).
    """
    overrides = dict(overrides or {})
    params = []
    for pool in POOLS:
        for name, values in LLMSHARE_FIELDS:
            col = f"{pool}_{name}"
            params.append(Parameter(col, tuple(overrides.pop(col, values))))
    if overrides:
        raise InputError(f"unknown parameters {sorted(overrides)}; known: "
                         f"{[p.name for p in params]}")
    tree = TreeNode("system", children=tuple(_pool_tree(p) for p in POOLS))
    memory = tuple((f"{p}_servers", f"{p}_devices_per_server", f"{p}_memory_gb") for p in POOLS)
    return DesignSpace(tuple(params), tree, memory)
