"""Named registries: one style for every "choose by name" in splitlib (policies, backends, annotators, rewards,
protocols, presets, simulator modes, ...).

A ``Registry`` maps names to entries (classes, functions or values). Entries are added with ``register`` (also a
decorator) or at construction; looking up a name that is not there raises ``UnknownNameError``, whose message
names what was asked for and every allowed name. It imports nothing from splitlib.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that a registry does not hold; the message lists the allowed names."""


class Registry(Generic[T]):
    """Name -> entry, in registration order. ``what`` names the kind of entry in error messages ("policy")."""

    def __init__(self, what: str, entries: Mapping[str, T] | None = None) -> None:
        self.what = what
        self._entries: dict[str, T] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def register(self, name: str, entry: T | None = None) -> T | Callable[[T], T]:
        """Add ``entry`` under ``name``; without ``entry``, a decorator that adds what it decorates."""
        if entry is None:
            def decorate(obj: T) -> T:
                self.register(name, obj)
                return obj

            return decorate
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.what} {name!r}; allowed: {', '.join(self._entries) or 'none'}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())
