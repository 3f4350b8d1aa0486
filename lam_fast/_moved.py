"""Old import paths of names that moved to a higher layer keep working, with a DeprecationWarning.

A lower layer may not import a higher one, so a moved name cannot be re-exported with an import
statement. Instead the old module declares ``__getattr__ = moved(__name__, {"name": "new.module"})``:
the name is looked up in its new module on first access (importlib, at call time, never at import
time), so the layers stay one-way for everything the package itself runs. tests/test_layers.py
checks every such table: each target is a real module of a layer at or above the old one, and holds
the name.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved(module: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that forwards each name of ``table`` (name -> new module)."""
    table = dict(table)

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} moved to {table[name]}.{name}; import it from there",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(table[name]), name)

    __getattr__.moved_names = table  # type: ignore[attr-defined]
    return __getattr__
