"""A module imported on first use, for dependencies most runs never touch.

`pyrage` (the age encryption, a 1 MiB extension module) is needed only with
`[encryption]` or a key to read: every other run would pay its resident pages
for nothing. `importlib.util.LazyLoader` cannot help there, since an extension
module is loaded whole when it is created; this proxy imports it on the first
attribute looked up instead.
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Stands for module `name` (or its attribute `attribute`); imports it when first used."""

    def __init__(self, name: str, attribute: str | None = None) -> None:
        self._name = name
        self._attribute = attribute
        self._target: Any = None

    def _load(self) -> Any:
        if self._target is None:
            module = importlib.import_module(self._name)
            self._target = module if self._attribute is None else getattr(module, self._attribute)
        return self._target

    def __getattr__(self, item: str) -> Any:
        return getattr(self._load(), item)


def lazy_module(name: str, attribute: str | None = None) -> Any:
    """`name` (or `name.attribute`), imported on first attribute access."""
    return LazyModule(name, attribute)
