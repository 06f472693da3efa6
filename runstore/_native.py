"""The optional C speedups (`runstore/_speedups.c`), loaded if built and allowed; their
Arrow side is in `tables`.

Built when runstore is installed where a C compiler is; without them runstore works the
same, only slower. `RUNSTORE_PURE_PYTHON=1` turns them off, to compare or to rule them out
(read at import). Tests run both ways and check that the two agree.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Final

__all__ = ["PURE_PYTHON_VARIABLE", "metrics_buffer", "speedups"]

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


def metrics_buffer() -> Any:
    """A new `MetricsBuffer` (C arrays of numeric calls) for a writer, or None."""
    return None if speedups is None else speedups.MetricsBuffer()
