"""Deferred imports: a module that is loaded on first use instead of at ``import``.

The ``evomm`` command defers ``torch`` (:func:`defer`), whose import is 1.4-2.2 s of every
command's start-up on a 2-core machine with the CUDA wheel: ``evomm plan``, ``evomm plugins``,
and ``--help`` never use it, and a command that does loads it at its first ``torch.<name>``.

Written by hand because the standard library's :class:`importlib.util.LazyLoader` loads its
module as soon as anything reads ``__spec__``, which every later ``import torch`` statement does
(CPython checks whether the module is still initialising): each plugin module that says
``import torch`` at its top would load torch at once. Here ``__spec__``, ``__name__`` and the
other attributes the import system reads are answered without loading; everything else, and
``__path__`` (a submodule import, which needs the package's own code run first), loads the
module into the same object, so every reference to it sees the real module afterwards.

Example:
    >>> import sys
    >>> mod = defer("colorsys")            # doctest: +SKIP
    >>> is_deferred(mod)                    # doctest: +SKIP
    True
    >>> mod.rgb_to_hsv(1.0, 0.0, 0.0)       # doctest: +SKIP
    (0.0, 1.0, 1.0)
    >>> is_deferred(sys.modules["colorsys"])  # doctest: +SKIP
    False
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types

#: What the import system (and ``repr``) reads of a module in ``sys.modules`` without using it.
_PASSIVE = frozenset({"__spec__", "__name__", "__loader__", "__package__", "__class__", "__dict__", "__repr__"})

_LOCK = threading.RLock()


class _DeferredModule(types.ModuleType):
    """A module whose code runs at the first use of one of its attributes."""

    def __getattribute__(self, attr: str) -> object:
        if attr in _PASSIVE:
            return super().__getattribute__(attr)
        _load(self)
        return getattr(self, attr)

    def __setattr__(self, attr: str, value: object) -> None:
        _load(self)
        setattr(self, attr, value)

    def __delattr__(self, attr: str) -> None:
        _load(self)
        delattr(self, attr)


def _load(module: types.ModuleType) -> None:
    with _LOCK:
        if type(module) is not _DeferredModule:  # another thread loaded it meanwhile
            return
        object.__setattr__(module, "__class__", types.ModuleType)
        spec = module.__spec__
        assert spec is not None and spec.loader is not None  # set by defer()
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(spec.name, None)  # a later import retries and raises for itself
            raise


def defer(name: str) -> types.ModuleType:
    """``sys.modules[name]``, deferred when it was not imported yet: a module object whose code
    runs at the first use of any attribute (or an import of one of its submodules).

    Args:
        name: a top-level module name, e.g. ``"torch"``.

    Returns:
        The module: the one already imported, or a new deferred one.

    Raises:
        ModuleNotFoundError: ``name`` is not installed.
        ValueError: ``name`` is a submodule (``a.b``): defer its package instead.
    """
    if "." in name:
        raise ValueError(f"defer() takes a top-level module name, got {name!r}")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    module = importlib.util.module_from_spec(spec)
    object.__setattr__(module, "__class__", _DeferredModule)
    sys.modules[name] = module
    return module


def is_deferred(module: object) -> bool:
    """True while ``module`` is a deferred module whose code has not run yet."""
    return type(module) is _DeferredModule


def loaded(name: str) -> bool:
    """Whether the code of module ``name`` has run (imported and not merely deferred)."""
    module = sys.modules.get(name)
    return module is not None and not is_deferred(module)
