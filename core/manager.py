"""The plugin manager: built-ins and third-party plugins, loaded lazily, once."""

from __future__ import annotations

import importlib
from functools import partial
from importlib.metadata import version as dist_version
from typing import Any

import pluggy

from facelab import __version__, hookspecs
from facelab.errors import FacelabError
from facelab.registry import KINDS, Origin, Registry

#: The entry-point group third-party packages use: ``[project.entry-points.facelab]``.
ENTRY_POINT_GROUP = "facelab"
#: The package holding the built-in plugins; it lists their module paths in ``BUILTIN``.
BUILTIN_PACKAGE = "facelab.plugins"

_manager: pluggy.PluginManager | None = None
_registry: Registry | None = None


def get_plugin_manager() -> pluggy.PluginManager:
    """The plugin manager, with built-ins and entry-point plugins loaded (once)."""
    global _manager
    if _manager is None:
        manager = pluggy.PluginManager("facelab")
        manager.add_hookspecs(hookspecs)
        for module_path in importlib.import_module(BUILTIN_PACKAGE).BUILTIN:
            manager.register(importlib.import_module(module_path), name=module_path)
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        try:
            manager.check_pending()
        except pluggy.PluginValidationError as exc:
            raise FacelabError(_unknown_hook_message(manager, exc)) from None
        _manager = manager
    return _manager


def _unknown_hook_message(manager: pluggy.PluginManager, exc: pluggy.PluginValidationError) -> str:
    """``plugin 'x' (package y 1.0): unknown hook 'register_backbone'; did you mean ...``"""
    import re

    from facelab.errors import did_you_mean

    name = manager.get_name(exc.plugin) or getattr(exc.plugin, "__name__", repr(exc.plugin))
    dist = {id(p): d for p, d in manager.list_plugin_distinfo()}.get(id(exc.plugin))
    package = f" (package {dist.project_name} {dist.version})" if dist else ""
    match = re.search(r"unknown hook '([^']+)'", str(exc))
    return f"plugin {name!r}{package}: " + did_you_mean(match[1] if match else str(exc),
                                                        KINDS.values(), what="hook")


def get_registry() -> Registry:
    """Every component of every loaded plugin, built on first use."""
    global _registry
    if _registry is None:
        manager = get_plugin_manager()
        origins = _origins(manager)
        registry = Registry()
        for kind, hook_name in KINDS.items():
            for impl in getattr(manager.hook, hook_name).get_hookimpls():
                origin = origins[id(impl.plugin)]
                impl.function(register=partial(_register, registry, kind, origin))
        _registry = registry
    return _registry


def reset() -> None:
    """Forget the loaded registry (after registering or unregistering a plugin, e.g. in tests)."""
    global _registry
    _registry = None


def _register(registry: Registry, kind: str, origin: Origin, name: str, factory: Any,
              params: Any, doc: str | None = None, *, tasks: Any = None) -> None:
    registry.add(kind, name, factory, params, doc, origin, tasks)


def _origins(manager: pluggy.PluginManager) -> dict[int, Origin]:
    """Plugin object id -> Origin (distribution name and version)."""
    dists = {id(plugin): dist for plugin, dist in manager.list_plugin_distinfo()}
    builtin = set(importlib.import_module(BUILTIN_PACKAGE).BUILTIN)
    origins = {}
    for name, plugin in manager.list_name_plugin():
        if name in builtin:
            origins[id(plugin)] = Origin(name, "facelab", __version__, builtin=True)
        elif id(plugin) in dists:
            dist = dists[id(plugin)]
            origins[id(plugin)] = Origin(getattr(plugin, "__name__", name), dist.project_name,
                                         dist.version, builtin=False)
        else:  # registered by hand (tests, notebooks)
            module = getattr(plugin, "__module__", None) or getattr(plugin, "__name__", name)
            package = module.split(".")[0]
            try:
                package_version = dist_version(package)
            except Exception:
                package_version = "unknown"
            origins[id(plugin)] = Origin(name, package, package_version, builtin=False)
    return origins
