"""The plugin manager: built-ins and third-party plugins, loaded lazily, once.

A third-party plugin (an entry point in the ``facelab`` group) that cannot be imported, implements
an unknown hook, or whose registration hook raises is *left out*: it is recorded as a
:class:`PluginFailure` (see :func:`plugin_failures`), logged as one warning line on the
``facelab.manager`` logger, and every other plugin keeps working. A built-in plugin that fails is
a bug in facelab and raises. Two plugins registering the same component name stay an error
(:class:`~facelab.errors.FacelabError` naming both).

``FACELAB_DISABLE_PLUGINS=name,...`` leaves plugins out without importing them. A name matches
an entry-point name, a distribution name, a module path or a package above it (a package of
built-ins disables all of them), and for built-ins also the path below the built-in package
(``attention.cbam``) or the module's last part (``cbam``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
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
#: Environment variable: comma-separated plugins to leave out.
DISABLE_ENV = "FACELAB_DISABLE_PLUGINS"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginFailure:
    """A third-party plugin that was left out, and why."""

    #: the plugin's name: its entry-point name (or the name it was registered under)
    name: str
    #: its distribution (as pip names it) and version; None when unknown
    package: str | None
    version: str | None
    #: what went wrong, one line: ``ImportError: No module named 'torch'``, or for an unknown
    #: hook ``unknown hook 'register_foo'; did you mean ...``
    error: str
    #: the module path (entry-point value), when it differs from ``name``
    module: str | None = None
    #: when it failed: ``"load"`` (import, hook validation) or ``"register"`` (a hook raised)
    stage: str = "load"

    def __str__(self) -> str:
        """``plugin 'x' (package facelab-x 1.0) left out: ImportError: ...`` on one line."""
        where = [f"module {self.module}"] if self.module and self.module != self.name else []
        if self.package:
            where.append(f"package {self.package} {self.version or 'unknown'}")
        detail = f" ({', '.join(where)})" if where else ""
        return f"plugin {self.name!r}{detail} left out: {self.error}"


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin."""

    name: str
    module: str
    package: str
    version: str
    builtin: bool


@dataclass(frozen=True)
class PluginStatus:
    """What :func:`plugin_status` reports: loaded, failed and disabled plugins."""

    loaded: list[PluginInfo]
    failed: list[PluginFailure]
    #: plugins left out by FACELAB_DISABLE_PLUGINS (module path for built-ins, entry-point
    #: name for third parties)
    disabled: list[str]
    #: names in FACELAB_DISABLE_PLUGINS that matched no plugin (typos)
    unmatched: list[str]


class FacelabPluginManager(pluggy.PluginManager):
    """pluggy's manager plus what facelab records while loading plugins."""

    def __init__(self) -> None:
        super().__init__("facelab")
        self.failures: list[PluginFailure] = []
        self.disabled: list[str] = []
        self.unmatched_disabled: list[str] = []
        #: plugin name -> (distribution, version) of entry-point plugins
        self.distributions: dict[str, tuple[str, str]] = {}
        #: plugin name -> module path
        self.modules: dict[str, str] = {}
        self.builtin: set[str] = set()

    def leave_out(self, failure: PluginFailure, plugin: Any = None) -> None:
        """Record a failed plugin, log it, and unregister ``plugin`` if it is registered."""
        if plugin is not None and self.is_registered(plugin):
            self.unregister(plugin)
        self.failures.append(failure)
        log.warning("%s", failure)


_manager: FacelabPluginManager | None = None
_registry: Registry | None = None


def get_plugin_manager() -> FacelabPluginManager:
    """The plugin manager, with built-ins and entry-point plugins loaded (once)."""
    global _manager
    if _manager is None:
        _manager = _load()
    return _manager


def _load() -> FacelabPluginManager:
    manager = FacelabPluginManager()
    manager.add_hookspecs(hookspecs)
    wanted = disabled_names()
    matched: set[str] = set()
    for module_path in importlib.import_module(BUILTIN_PACKAGE).BUILTIN:
        hits = _builtin_matches(wanted, module_path)
        if hits:
            matched |= hits
            manager.disabled.append(module_path)
            continue
        plugin = importlib.import_module(module_path)
        manager.register(plugin, name=module_path)
        manager.builtin.add(module_path)
        manager.modules[module_path] = module_path
        unknown = _unknown_hooks(manager, plugin)
        if unknown:
            raise FacelabError(f"plugin {module_path!r} (package facelab {__version__}): "
                               f"{_unknown_hook_error(manager, unknown[0])}")
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        hits = _entry_point_matches(wanted, entry_point)
        if hits:
            matched |= hits
            manager.disabled.append(entry_point.name)
            continue
        _load_entry_point(manager, entry_point)
    manager.unmatched_disabled = [name for name in wanted if name not in matched]
    return manager


def _load_entry_point(manager: FacelabPluginManager, entry_point) -> None:
    """Import and register one entry point; on any failure, record it and leave it out."""
    dist = getattr(entry_point, "dist", None)
    package = dist.metadata["Name"] if dist is not None else None
    version = dist.version if dist is not None else None
    failure = partial(PluginFailure, entry_point.name, package, version,
                      module=entry_point.value)
    try:
        plugin = entry_point.load()
    except (Exception, SystemExit) as exc:  # SyntaxError, ImportError, anything at import time
        manager.leave_out(failure(describe(exc)))
        return
    if manager.has_plugin(entry_point.name):
        other = manager.distributions.get(entry_point.name)
        owner = f"package {other[0]} {other[1]}" if other else "another plugin"
        manager.leave_out(failure(f"the plugin name {entry_point.name!r} is already used by "
                                  f"{owner}"))
        return
    try:
        manager.register(plugin, name=entry_point.name)
    except (Exception, SystemExit) as exc:  # e.g. PluginValidationError: bad hook arguments
        manager.leave_out(failure(describe(exc)))
        return
    manager.modules[entry_point.name] = entry_point.value
    if package is not None:
        manager.distributions[entry_point.name] = (package, version)
    unknown = _unknown_hooks(manager, plugin)
    if unknown:
        manager.leave_out(failure(_unknown_hook_error(manager, unknown[0])), plugin)


def describe(exc: BaseException) -> str:
    """``ExceptionType: message`` on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {' '.join(lines)}" if lines else type(exc).__name__


def _unknown_hooks(manager: pluggy.PluginManager, plugin: Any) -> list[str]:
    """Hooks ``plugin`` implements that have no specification (and are not optional)."""
    return [caller.name for caller in manager.get_hookcallers(plugin) or []
            if not caller.has_spec()
            and any(impl.plugin is plugin and not impl.optionalhook
                    for impl in caller.get_hookimpls())]


def _known_hooks(manager: pluggy.PluginManager) -> list[str]:
    return [name for name, caller in vars(manager.hook).items()
            if not name.startswith("_") and caller.has_spec()]


def _unknown_hook_error(manager: pluggy.PluginManager, hook: str) -> str:
    """``unknown hook 'register_backbone'; did you mean 'register_backbones'? (known: ...)``"""
    from facelab.errors import did_you_mean

    return did_you_mean(hook, _known_hooks(manager) or KINDS.values(), what="hook")


# --------------------------------------------------------------------------------------------
# FACELAB_DISABLE_PLUGINS
# --------------------------------------------------------------------------------------------

def disabled_names() -> list[str]:
    """The names in ``FACELAB_DISABLE_PLUGINS`` (comma separated, whitespace ignored)."""
    return list(dict.fromkeys(name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",")
                              if name.strip()))


def _under(name: str, module: str) -> bool:
    """``module`` is ``name`` or inside the package ``name``."""
    return module == name or module.startswith(name + ".")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _builtin_matches(wanted: Iterable[str], module: str) -> set[str]:
    relative = module.removeprefix(BUILTIN_PACKAGE + ".")
    return {name for name in wanted
            if _under(name, module) or _under(name, relative) or name == module.split(".")[-1]}


def _entry_point_matches(wanted: Iterable[str], entry_point) -> set[str]:
    dist = getattr(entry_point, "dist", None)
    package = _canonical(dist.metadata["Name"]) if dist is not None else None
    module = entry_point.module
    return {name for name in wanted
            if name == entry_point.name or _under(name, module) or _canonical(name) == package}


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------

def get_registry() -> Registry:
    """Every component of every loaded plugin, built on first use.

    Each plugin registers into a registry of its own first; a third-party plugin whose hook
    raises (or registers something invalid) is left out whole. Then the plugins' components
    are merged, where a name registered by two plugins is an error.
    """
    global _registry
    if _registry is None:
        manager = get_plugin_manager()
        origins = _origins(manager)
        staged: dict[tuple[str, str], list[tuple[tuple, dict]]] = {}  # (plugin, kind) -> calls
        failed: set[str] = set()
        impls = {kind: getattr(manager.hook, hook).get_hookimpls() for kind, hook in KINDS.items()}
        for kind, kind_impls in impls.items():
            for impl in kind_impls:
                name = impl.plugin_name
                if name in failed:
                    continue
                own = Registry()
                register = partial(_stage, own, staged.setdefault((name, kind), []), kind,
                                   origins[id(impl.plugin)])
                try:
                    impl.function(register=register)
                except Exception as exc:
                    if name in manager.builtin:
                        raise
                    failed.add(name)
                    _leave_out_registered(manager, name,
                                          f"{impl.function.__name__}: {describe(exc)}")
        registry = Registry()
        for kind, kind_impls in impls.items():
            for impl in kind_impls:
                if impl.plugin_name not in failed:
                    for args, kwargs in staged.get((impl.plugin_name, kind), []):
                        registry.add(*args, **kwargs)
        _registry = registry
    return _registry


def _stage(own: Registry, calls: list, kind: str, origin: Origin, name: str, factory: Any,
           params: Any, doc: str | None = None, **kwargs: Any) -> None:
    """The ``register`` callback: check the component in the plugin's own registry (name,
    schema, duplicates within the plugin), then keep it for the merge."""
    args = (kind, name, factory, params, doc, origin)
    own.add(*args, **kwargs)
    calls.append((args, kwargs))


def _leave_out_registered(manager: FacelabPluginManager, name: str, error: str) -> None:
    package, version = manager.distributions.get(name, (None, None))
    plugin = manager.get_plugin(name)
    module = manager.modules.get(name) or getattr(plugin, "__name__", None) \
        or getattr(plugin, "__module__", None)
    manager.leave_out(PluginFailure(name, package, version, error, module=module,
                                    stage="register"), plugin)


def call_each(hook: str, **kwargs: Any) -> list[Any]:
    """Call every implementation of ``hook`` (e.g. ``register_commands``) one by one, isolating
    third-party plugins: one that raises is left out (recorded in :func:`plugin_failures`) and
    the others still run. Returns the non-None results, in pluggy's call order."""
    manager = get_plugin_manager()
    results = []
    for impl in reversed(getattr(manager.hook, hook).get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue
        try:
            result = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
        except Exception as exc:
            if impl.plugin_name in manager.builtin:
                raise
            _leave_out_registered(manager, impl.plugin_name,
                                  f"{hook}: {describe(exc)}")
            continue
        if result is not None:
            results.append(result)
    return results


#: The core's own Keras classes (the masked accuracy metric).
CORE_KERAS_MODULES = ("facelab.model",)


def import_keras_modules() -> list[str]:
    """Import the modules defining the loaded plugins' Keras classes, so that
    ``keras.models.load_model`` finds them without ``custom_objects``; returns their paths.

    A plugin lists them in a module attribute ``KERAS_MODULES`` (its Keras classes live apart,
    so loading plugins does not import Keras). A third-party module that fails to import is
    recorded in :func:`plugin_failures` (stage ``"keras"``) and logged; a built-in one raises.
    """
    manager = get_plugin_manager()
    modules: dict[str, str | None] = dict.fromkeys(CORE_KERAS_MODULES)
    for name, plugin in manager.list_name_plugin():
        for module in getattr(plugin, "KERAS_MODULES", ()):
            modules.setdefault(module, name)
    imported = []
    for module, owner in modules.items():
        try:
            importlib.import_module(module)
        except Exception as exc:
            if owner is None or owner in manager.builtin:
                raise
            package, version = manager.distributions.get(owner, (None, None))
            manager.leave_out(PluginFailure(owner, package, version,
                                            f"KERAS_MODULES {module}: {describe(exc)}",
                                            module=manager.modules.get(owner), stage="keras"))
            continue
        imported.append(module)
    return imported


def reset(manager: bool = False) -> None:
    """Forget the loaded registry (after registering or unregistering a plugin, e.g. in tests);
    with ``manager=True`` forget the plugin manager too, so the next use loads every plugin
    again (entry points, ``FACELAB_DISABLE_PLUGINS``) and failures start afresh."""
    global _registry, _manager
    _registry = None
    if manager:
        _manager = None


# --------------------------------------------------------------------------------------------
# What happened: failures, disabled plugins, status
# --------------------------------------------------------------------------------------------

def plugin_failures() -> list[PluginFailure]:
    """Plugins left out so far, in the order they failed. Loads the plugin manager (imports
    plugins) if needed, but not the registry: failures of registration hooks appear once
    :func:`get_registry` has run (:func:`plugin_status` runs it)."""
    return list(get_plugin_manager().failures)


def disabled_plugins() -> list[str]:
    """Plugins left out by ``FACELAB_DISABLE_PLUGINS``: module paths of built-ins, entry-point
    names of third-party plugins."""
    return list(get_plugin_manager().disabled)


def plugin_status() -> PluginStatus:
    """Loaded, failed and disabled plugins, after building the registry (so registration
    failures are included). Raises only what :func:`get_registry` raises (duplicate names)."""
    manager = get_plugin_manager()
    get_registry()
    origins = _origins(manager)
    loaded = []
    for name, plugin in manager.list_name_plugin():
        origin = origins[id(plugin)]
        module = manager.modules.get(name) or getattr(plugin, "__name__", None) or name
        loaded.append(PluginInfo(name, module, origin.package, origin.version, origin.builtin))
    return PluginStatus(loaded, list(manager.failures), list(manager.disabled),
                        list(manager.unmatched_disabled))


def _origins(manager: pluggy.PluginManager) -> dict[int, Origin]:
    """Plugin object id -> Origin (distribution name and version)."""
    dists = getattr(manager, "distributions", {})
    builtin = set(importlib.import_module(BUILTIN_PACKAGE).BUILTIN)
    origins = {}
    for name, plugin in manager.list_name_plugin():
        if name in builtin:
            origins[id(plugin)] = Origin(name, "facelab", __version__, builtin=True)
        elif name in dists:
            package, package_version = dists[name]
            origins[id(plugin)] = Origin(getattr(plugin, "__name__", name), package,
                                         package_version, builtin=False)
        else:  # registered by hand (tests, notebooks)
            module = getattr(plugin, "__module__", None) or getattr(plugin, "__name__", name)
            package = module.split(".")[0]
            try:
                package_version = dist_version(package)
            except Exception:
                package_version = "unknown"
            origins[id(plugin)] = Origin(name, package, package_version, builtin=False)
    return origins
