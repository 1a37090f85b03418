"""Finding and loading plugins; the registries they fill.

Built-in plugins (``plugins/``, ``tasks/``) and third-party ones are all found through the
entry-point group ``evomm``: the core never imports a plugin by name. One-file plugins load from
``--plugins-dir`` (or ``EVOMM_PLUGINS_DIR``, ``os.pathsep``-separated).

Environment variables:
    EVOMM_DISABLE_PLUGINS: comma-separated entry-point or file names to skip (``evomm_clip,my``).
    EVOMM_DISABLE_PLUGIN_AUTOLOAD: when set to ``1``, no entry point is loaded at all (only
        ``--plugins-dir`` files and plugins passed in code), as pytest's variable of that name.
    EVOMM_PLUGINS_DIR: extra one-file plugin directories.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from evomm import hookspecs
from evomm.adapters import ModelAdapter
from evomm.errors import PluginError, RegistryError
from evomm.executors import BUILTIN_EXECUTORS, ExecutorKind, PluginSource
from evomm.operators import MergeOperator
from evomm.registry import Registry
from evomm.space import PARAMS_KIND, SpaceKind

if TYPE_CHECKING:
    from evomm.cli.command import Command

ENTRY_POINT_GROUP = "evomm"
ENV_DISABLE = "EVOMM_DISABLE_PLUGINS"
ENV_NO_AUTOLOAD = "EVOMM_DISABLE_PLUGIN_AUTOLOAD"
ENV_PLUGINS_DIR = "EVOMM_PLUGINS_DIR"

T = TypeVar("T")


@dataclass
class PluginInfo:
    """One loaded plugin: its name and where it came from (``entry point dist==ver`` or a file)."""

    name: str
    origin: str


@dataclass
class Plugins:
    """A plugin manager with the registries its plugins filled.

    Attributes:
        pm: the pluggy manager (call lifecycle hooks through ``pm.hook``).
        adapters, operators, tasks, spaces, commands, executors: registries filled by the
            registration hooks (``spaces`` starts with the core's ``params`` kind, ``executors``
            with ``local``, ``processes`` and ``ray``; ``commands`` holds the plugins' ``evomm``
            subcommands, evomm's own are not in it).
        loaded: the plugins, in load order.
        source: how they were loaded (worker processes load the same ones).
    """

    pm: pluggy.PluginManager
    adapters: Registry[type[ModelAdapter]]
    operators: Registry[type[MergeOperator]]
    tasks: Registry[Any]
    spaces: Registry[SpaceKind]
    commands: Registry[Command]
    loaded: list[PluginInfo] = field(default_factory=list)
    executors: Registry[ExecutorKind] = field(default_factory=lambda: Registry("executor"))
    source: PluginSource = field(default_factory=PluginSource)

    @property
    def hook(self) -> Any:
        return self.pm.hook


class _OwnedRegistry(Registry[T]):
    """What a registration hook receives: a full :class:`Registry` over the same entries as
    ``target`` (``len``, iteration, ``items``, ``get`` all see every plugin's additions) whose
    :meth:`add` records ``owner`` as the adding plugin (for duplicate-name messages)."""

    def __init__(self, target: Registry[T], owner: str) -> None:
        super().__init__(target.kind)
        self._items, self._owners = target._items, target._owners  # shared, not copied
        self._owner_name = owner

    def add(self, item: T, *, name: str | None = None, owner: str = "") -> T:
        return super().add(item, name=name, owner=owner or self._owner_name)


def _disabled() -> set[str]:
    raw = os.environ.get(ENV_DISABLE, "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def _load_file_plugin(path: Path) -> ModuleType:
    mod_name = f"evomm_local_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a plugin's own bug: say which file
        raise PluginError(f"plugin file {path} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def _plugin_files(plugins_dirs: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for d in plugins_dirs:
        p = Path(d)
        if not p.is_dir():
            raise PluginError(f"--plugins-dir {str(d)!r} is not a directory")
        files.extend(sorted(f for f in p.glob("*.py") if not f.name.startswith("_")))
    return files


def load_plugins(
    plugins_dirs: Sequence[str | Path] = (),
    *,
    extra: Sequence[object] = (),
    autoload: bool | None = None,
) -> Plugins:
    """Create a plugin manager, load every plugin and fill the registries.

    Args:
        plugins_dirs: directories of one-file plugins (``*.py``) to load as well.
        extra: plugin objects (modules or instances) to register directly, e.g. in tests.
        autoload: load entry points; default: unless ``EVOMM_DISABLE_PLUGIN_AUTOLOAD=1``.

    Raises:
        PluginError: a plugin fails to import, or implements a hook that does not exist.
        RegistryError: two plugins register the same name.

    Example:
        >>> plugins = load_plugins()
        >>> "linear" in plugins.operators
        True
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    loaded: list[PluginInfo] = []
    disabled = _disabled()
    if autoload is None:
        autoload = os.environ.get(ENV_NO_AUTOLOAD, "") not in ("1", "true", "yes")

    if autoload:
        loaded += _load_entry_points(pm, disabled)

    env_dirs = [d for d in os.environ.get(ENV_PLUGINS_DIR, "").split(os.pathsep) if d]
    for f in _plugin_files([*env_dirs, *plugins_dirs]):
        if f.stem in disabled or pm.has_plugin(f.stem):
            continue
        pm.register(_load_file_plugin(f), name=f.stem)
        loaded.append(PluginInfo(f.stem, f"file {f}"))

    for obj in extra:
        name = getattr(obj, "__name__", None) or type(obj).__name__
        pm.register(obj, name=name)
        loaded.append(PluginInfo(name, "registered in code"))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"{exc}; hook names start with 'evomm_' and are listed in evomm/hookspecs.py "
            "and docs/hooks.md"
        ) from exc

    plugins = Plugins(
        pm=pm,
        adapters=Registry("model adapter"),
        operators=Registry("merge operator"),
        tasks=Registry("task"),
        spaces=Registry("search-space kind"),
        commands=Registry("command"),
        loaded=loaded,
        source=PluginSource(tuple(str(d) for d in plugins_dirs), tuple(extra), autoload),
    )
    plugins.spaces.add(PARAMS_KIND, owner="evomm")
    for kind in BUILTIN_EXECUTORS:
        plugins.executors.add(kind, owner="evomm")
    _register(pm, "evomm_register_model_adapters", plugins.adapters)
    _register(pm, "evomm_register_merge_operators", plugins.operators)
    _register(pm, "evomm_register_tasks", plugins.tasks)
    _register(pm, "evomm_register_search_spaces", plugins.spaces)
    _register(pm, "evomm_register_commands", plugins.commands)
    _register(pm, "evomm_register_executors", plugins.executors)
    return plugins


def _load_entry_points(pm: pluggy.PluginManager, disabled: set[str]) -> list[PluginInfo]:
    """Register every installed plugin of the ``evomm`` entry-point group, by name, but the disabled."""
    loaded = []
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in disabled or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}; "
                f"disable it with {ENV_DISABLE}={ep.name}"
            ) from exc
        pm.register(plugin, name=ep.name)
        dist = getattr(ep, "dist", None)
        origin = f"entry point {ep.value}" + (f" ({dist.name} {dist.version})" if dist else "")
        loaded.append(PluginInfo(ep.name, origin))
    return loaded


def _register(pm: pluggy.PluginManager, hook_name: str, registry: Registry[Any]) -> None:
    # Call each implementation on its own so a duplicate name can say which plugin added it.
    caller = getattr(pm.hook, hook_name)
    for impl in reversed(caller.get_hookimpls()):
        try:
            impl.function(registry=_OwnedRegistry(registry, impl.plugin_name))
        except RegistryError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
            ) from exc


_DEFAULT: dict[tuple[str, ...], Plugins] = {}


def get_plugins(plugins_dirs: Sequence[str | Path] = ()) -> Plugins:
    """A cached :func:`load_plugins` for the given directories (what the CLI and library use)."""
    key = tuple(str(Path(p).resolve()) for p in plugins_dirs) + (
        os.environ.get(ENV_DISABLE, ""),
        os.environ.get(ENV_NO_AUTOLOAD, ""),
        os.environ.get(ENV_PLUGINS_DIR, ""),
    )
    if key not in _DEFAULT:
        _DEFAULT[key] = load_plugins(plugins_dirs)
    return _DEFAULT[key]
