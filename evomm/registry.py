"""One generic, typed registry for everything plugins contribute (adapters, operators, tasks).

Registration hooks receive a ``Registry`` and call :meth:`Registry.add`; duplicate names are
errors (a plugin never silently replaces another), unknown names get a "did you mean" hint.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from evomm.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> item mapping that refuses duplicates and explains unknown names.

    Example:
        >>> reg: Registry[type] = Registry("merge operator")
        >>> reg.add(int, name="int")  # returns what it added
        <class 'int'>
        >>> reg.get("int") is int
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def add(self, item: T, *, name: str | None = None, owner: str = "") -> T:
        """Register ``item`` under ``name`` (default: ``item.name``); returns ``item``.

        Raises:
            RegistryError: the name is empty or already registered.
        """
        key = name if name is not None else getattr(item, "name", None)
        if not isinstance(key, str) or not key:
            raise RegistryError(
                f"cannot register {item!r} as a {self.kind}: it has no name "
                "(give it a class attribute `name = \"...\"` or pass name=...)"
            )
        if key in self._items:
            prev = self._owners.get(key) or repr(self._items[key])
            raise RegistryError(
                f"{self.kind} {key!r} is registered twice (first by {prev}, again by "
                f"{owner or repr(item)}); rename one of them or disable a plugin with EVOMM_DISABLE_PLUGINS"
            )
        self._items[key] = item
        self._owners[key] = owner
        return item

    def get(self, name: str) -> T:
        """Return the item called ``name``.

        Raises:
            RegistryError: unknown name; the message lists close matches and all names.
        """
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), list(self._items), n=3)
        hint = f" did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        available = ", ".join(sorted(self._items)) or "(none registered)"
        return f"unknown {self.kind} {name!r};{hint} available: {available}"

    def owner(self, name: str) -> str:
        """The plugin that registered ``name`` ("" when unknown)."""
        return self._owners.get(name, "")

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
