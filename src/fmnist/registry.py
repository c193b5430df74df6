"""A small name -> object registry shared by datasets, models and recipes.

Unknown names raise :class:`~fmnist.errors.ConfigError` listing the valid names and the
closest match, so ``fmnist train --recipe fsat`` answers "did you mean 'fast'?".
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered mapping of names to entries with helpful lookup errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._unlisted: set[str] = set()

    def add(self, name: str, entry: T, *, listed: bool = True) -> T:
        """Register ``entry``; an unlisted one is found by :meth:`get` but left out of
        :meth:`names` (e.g. the ``ensemble`` model, which only ``fmnist ensemble`` builds)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        if not listed:
            self._unlisted.add(name)
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorate(entry: T) -> T:
            return self.add(name, entry)

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        listed = self.names()
        valid = ", ".join(listed)
        close = difflib.get_close_matches(name, listed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {valid}."

    def names(self, pattern: str = "*") -> list[str]:
        return [n for n in self._entries
                if n not in self._unlisted and fnmatch.fnmatch(n, pattern)]

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
