"""The optional C speedups (`runstore/_speedups.c`) and the Arrow side of them.

Built when runstore is installed where a C compiler is; without them runstore works the
same, only slower. `RUNSTORE_PURE_PYTHON=1` turns them off, to compare or to rule them out
(read at import). Tests run both ways and check that the two agree.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Final

import pyarrow as pa

from .format import METRICS, SCHEMAS

__all__ = [
    "PURE_PYTHON_VARIABLE",
    "NumberRows",
    "batch_rows",
    "float_rows",
    "metrics_buffer",
    "speedups",
]

#: The environment variable that keeps runstore to pure Python.
PURE_PYTHON_VARIABLE: Final = "RUNSTORE_PURE_PYTHON"


def _load() -> ModuleType | None:
    if os.environ.get(PURE_PYTHON_VARIABLE, "") not in ("", "0"):
        return None
    try:
        return importlib.import_module(f"{__package__}._speedups")
    except ImportError:  # installed without a C compiler
        return None


#: The C module, or None when runstore runs as pure Python.
speedups: ModuleType | None = _load()

_INT64: Final = pa.int64()
_INT32: Final = pa.int32()
_FLOAT64: Final = pa.float64()
_TS: Final = SCHEMAS[METRICS].field("ts").type
#: The `kind` of a value by the C code's codes (KIND_FLOAT, KIND_INT, KIND_BOOL).
_KINDS: Final = pa.array(["float", "int", "bool"], pa.string())


class NumberRows:
    """A batch of numeric metrics calls (floats, ints, bools) as the columns of the
    metrics table, one row per key of a call: Arrow arrays over buffers the C code
    filled in one pass."""

    __slots__ = (
        "categories",
        "category",
        "finite",
        "key",
        "keys",
        "kind",
        "seq",
        "ts",
        "uniform",
        "value",
    )

    def __init__(self, rows: int, buffers: list[pa.Buffer], found: tuple[Any, ...]) -> None:
        ts, seq, value, key, category, kind = buffers
        self.keys: list[str] = found[0]
        self.categories: list[str] = found[1]
        #: One category, every call the keys of the first in its order (a training loop).
        self.uniform: bool = found[2]
        #: No NaN or infinity among the floats.
        self.finite: bool = found[3]
        self.ts = pa.Array.from_buffers(_TS, rows, [None, ts])
        self.seq = pa.Array.from_buffers(_INT64, rows, [None, seq])
        self.value = pa.Array.from_buffers(_FLOAT64, rows, [None, value])
        self.key = pa.DictionaryArray.from_arrays(
            pa.Array.from_buffers(_INT32, rows, [None, key]), pa.array(self.keys, pa.string())
        )
        self.category = pa.DictionaryArray.from_arrays(
            pa.Array.from_buffers(_INT32, rows, [None, category]),
            pa.array(self.categories, pa.string()),
        )
        self.kind = pa.DictionaryArray.from_arrays(
            pa.Array.from_buffers(_INT32, rows, [None, kind]), _KINDS
        )


def metrics_buffer() -> Any:
    """A new `MetricsBuffer` (C arrays of numeric calls) for a writer, or None."""
    return None if speedups is None else speedups.MetricsBuffer()


def _buffers(rows: int) -> list[pa.Buffer]:
    # Arrow's memory pool keeps freed pages for the next batch: fresh pages from the OS
    # would each cost a page fault (~4 µs on a VM).
    return [pa.allocate_buffer(rows * 8) for _ in range(3)] + [
        pa.allocate_buffer(rows * 4) for _ in range(3)
    ]


def batch_rows(batch: Any) -> NumberRows:
    """A batch taken from a `MetricsBuffer` as NumberRows."""
    rows: int = batch.rows
    buffers = _buffers(rows)
    return NumberRows(rows, buffers, batch.fill(*buffers))


def float_rows(columns: dict[str, list[Any]]) -> NumberRows | None:
    """The metrics batch `columns` as NumberRows if every value is a float, else None
    (also without the speedups, or for a key that is not a string)."""
    if speedups is None:
        return None
    values = columns["values"]
    rows = speedups.count_rows(values)
    if rows is None:
        return None
    buffers = _buffers(rows)
    found = speedups.fill_float_rows(
        columns["ts_ns"], columns["seq"], columns["category"], values, rows, *buffers
    )
    return None if found is None else NumberRows(rows, buffers, found)
