"""The plugin manager: built-ins, third parties through real entry points, duplicates, unknown
hooks, bad plugins left out, FACELAB_DISABLE_PLUGINS, and lazy, once-only loading."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import facelab
import facelab.manager
from facelab.errors import FacelabError
from facelab.registry import KINDS


@pytest.fixture
def fresh_manager(monkeypatch):
    """No plugin manager and no registry yet (and no FACELAB_DISABLE_PLUGINS); both restored
    afterwards."""
    monkeypatch.delenv("FACELAB_DISABLE_PLUGINS", raising=False)
    saved = (facelab.manager._manager, facelab.manager._registry)
    facelab.manager.reset(manager=True)
    try:
        yield facelab.manager
    finally:
        facelab.manager._manager, facelab.manager._registry = saved


@pytest.fixture
def installed_plugin(tmp_path, fresh_manager):
    """``install(module, source, dist, version)``: a module plus a ``<dist>.dist-info`` with
    METADATA and an entry point in the ``facelab`` group, in a folder on sys.path, as pip would
    install it. Everything is removed again afterwards."""
    added: list[str] = []
    modules: list[str] = []

    def install(module: str, source: str, dist: str = "facelab-example",
                version: str = "1.2.3", *, entry_point: str | None = None) -> Path:
        """``entry_point``: the entry point's name (default: the module's)."""
        site = tmp_path / f"site-{module}-{dist}"
        site.mkdir()
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(
            f"[facelab]\n{entry_point or module} = {module}\n")
        (info / "top_level.txt").write_text(f"{module}\n")
        sys.path.insert(0, str(site))
        added.append(str(site))
        modules.append(module)
        importlib.invalidate_caches()
        return site

    try:
        yield install
    finally:
        for path in added:
            sys.path.remove(path)
        for module in modules:
            sys.modules.pop(module, None)
        importlib.invalidate_caches()


TINY_BACKBONE = """
    import keras
    import facelab
    from facelab.params import NoParams

    CALLS = []

    def build(params, input_shape):
        '''An entry-point test backbone.'''
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, keras.layers.Flatten()(inputs))

    @facelab.hookimpl
    def register_backbones(register):
        CALLS.append(1)
        register({name!r}, build, NoParams)
"""


def test_builtins_are_loaded_with_their_origin(fresh_manager):
    from facelab.plugins import BUILTIN

    manager = fresh_manager.get_plugin_manager()
    for module_path in BUILTIN:
        plugin = manager.get_plugin(module_path)
        assert plugin is importlib.import_module(module_path), module_path
        assert manager.get_hookcallers(plugin), f"{module_path} implements no hook"
    registry = fresh_manager.get_registry()
    builtin = [c for c in registry if c.origin.builtin]
    # (a module may register nothing, e.g. keras_cv.py when keras-cv is not installed)
    assert {c.origin.plugin for c in builtin} <= set(BUILTIN)
    for component in builtin:
        assert component.origin.package == "facelab"
        assert component.origin.version == facelab.__version__
    assert {c.kind for c in builtin} == set(KINDS)


def test_entry_point_plugin_origin_names_its_distribution(installed_plugin, fresh_manager):
    installed_plugin("facelab_ep_example", TINY_BACKBONE.format(name="ep-example-net"),
                     dist="facelab-ep-example", version="1.2.3")
    registry = fresh_manager.get_registry()
    component = registry.get("backbone", "ep-example-net")
    assert component.origin.plugin == "facelab_ep_example"
    assert component.origin.package == "facelab-ep-example"
    assert component.origin.version == "1.2.3"
    assert component.origin.builtin is False
    assert str(component.origin) == "facelab_ep_example (facelab-ep-example 1.2.3)"
    assert component.summary == "An entry-point test backbone."
    assert [c.name for c in registry.find("backbone", include_builtin=False)] == ["ep-example-net"]
    # and it is an ordinary component: it builds
    model = component.factory(component.validate({}, "model.backbone"), (4, 4, 1))
    assert model.output_shape == (None, 16)


def test_cli_lists_entry_point_plugin(installed_plugin, fresh_manager, cli_runner):
    import json

    from facelab.cli import cli

    installed_plugin("facelab_ep_cli", TINY_BACKBONE.format(name="ep-cli-net"),
                     dist="facelab-ep-cli", version="0.0.7")
    result = cli_runner.invoke(cli, ["plugins", "backbone", "ep-*", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{
        "kind": "backbone", "name": "ep-cli-net", "package": "facelab-ep-cli",
        "version": "0.0.7", "plugin": "facelab_ep_cli", "builtin": False,
        "summary": "An entry-point test backbone."}]


def test_duplicate_name_names_both_origins(installed_plugin, fresh_manager):
    installed_plugin("facelab_dup", TINY_BACKBONE.format(name="simple-cnn"),
                     dist="facelab-dup", version="0.0.1")
    with pytest.raises(FacelabError) as error:
        fresh_manager.get_registry()
    message = str(error.value)
    assert "duplicate backbone 'simple-cnn'" in message
    assert f"facelab.plugins.backbones.simple_cnn (facelab {facelab.__version__})" in message
    assert "facelab_dup (facelab-dup 0.0.1)" in message


def test_duplicate_name_registered_by_hand(fresh_manager):
    class Duplicate:
        @facelab.hookimpl
        def register_heads(self, register):
            register("classification", lambda params, task: None, facelab.params.NoParams)

    manager = fresh_manager.get_plugin_manager()
    manager.register(Duplicate(), name="my-duplicate")
    try:
        with pytest.raises(FacelabError, match=r"duplicate head 'classification': registered by "
                                               r"facelab\.plugins\.heads\.classification .* and "
                                               r"by my-duplicate"):
            fresh_manager.get_registry()
    finally:
        manager.unregister(name="my-duplicate")
    assert fresh_manager.get_registry().get("head", "classification").origin.builtin


def test_unknown_hook_leaves_the_plugin_out(installed_plugin, fresh_manager, cli_runner, caplog):
    installed_plugin("facelab_badhook", """
        import facelab

        @facelab.hookimpl
        def register_backbone(register):  # typo: register_backbones
            register("badhook-net", None, None)
    """, dist="facelab-badhook", version="0.3.0")
    installed_plugin("facelab_goodhook", TINY_BACKBONE.format(name="goodhook-net"),
                     dist="facelab-goodhook")
    builtins = _builtin_components()
    with caplog.at_level(logging.WARNING, logger="facelab.manager"):
        manager = fresh_manager.get_plugin_manager()  # does not raise
    assert fresh_manager._manager is manager
    [failure] = fresh_manager.plugin_failures()
    assert (failure.name, failure.package, failure.version) == \
        ("facelab_badhook", "facelab-badhook", "0.3.0")
    # the did-you-mean message is the failure's error
    assert failure.error.startswith("unknown hook 'register_backbone'; did you mean "
                                    "'register_backbones'"), failure.error
    assert str(failure) == f"plugin 'facelab_badhook' (package facelab-badhook 0.3.0) left out: " \
                           f"{failure.error}"
    assert [r.getMessage() for r in caplog.records] == [str(failure)]
    assert manager.get_plugin("facelab_badhook") is None, "left out of the manager"
    assert "register_backbone" not in {name for name, caller in vars(manager.hook).items()
                                       if caller.get_hookimpls()}
    registry = fresh_manager.get_registry()
    assert _components(registry, builtin=True) == builtins
    assert [c.name for c in registry.find(include_builtin=False)] == ["goodhook-net"]

    from facelab.cli import cli

    result = cli_runner.invoke(cli, ["plugins", "backbone", "--json"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def test_registration_is_lazy_and_happens_once(installed_plugin, fresh_manager):
    installed_plugin("facelab_counting", TINY_BACKBONE.format(name="counting-net"),
                     dist="facelab-counting")
    assert fresh_manager._manager is None and fresh_manager._registry is None
    manager = fresh_manager.get_plugin_manager()
    assert fresh_manager.get_plugin_manager() is manager
    calls = sys.modules["facelab_counting"].CALLS
    assert calls == [], "hooks run when the registry is first needed, not when plugins load"
    registry = fresh_manager.get_registry()
    assert fresh_manager.get_registry() is registry
    assert calls == [1]
    fresh_manager.reset()  # forget the registry; the manager (and its plugins) stay
    assert fresh_manager.get_registry() is not registry
    assert fresh_manager.get_plugin_manager() is manager
    assert calls == [1, 1]


# ------------------------------------------------------------------------------------------
# Bad plugins are left out, reported on one line; everything else keeps working
# ------------------------------------------------------------------------------------------

def _components(registry, *, builtin: bool) -> set[tuple[str, str]]:
    return {(c.kind, c.name) for c in registry if c.origin.builtin == builtin}


def _builtin_components() -> set[tuple[str, str]]:
    """Every built-in component, from a manager of its own that loads no entry point (the
    current manager is untouched)."""
    saved = (facelab.manager._manager, facelab.manager._registry,
             facelab.manager.ENTRY_POINT_GROUP)
    facelab.manager.reset(manager=True)
    facelab.manager.ENTRY_POINT_GROUP = "facelab-tests-no-such-group"
    try:
        components = _components(facelab.manager.get_registry(), builtin=True)
    finally:
        (facelab.manager._manager, facelab.manager._registry,
         facelab.manager.ENTRY_POINT_GROUP) = saved
    assert len(components) > 20
    return components


BROKEN_AT_IMPORT = {
    "raises": ("raise RuntimeError('the plugin is broken')",
               "RuntimeError: the plugin is broken"),
    "missing-dependency": ("import facelab_surely_not_installed_dependency",
                           "ModuleNotFoundError: No module named "
                           "'facelab_surely_not_installed_dependency'"),
    "syntax-error": ("def broken(:\n    pass", "SyntaxError: "),
    "exits": ("import sys\nsys.exit('no GPU, giving up')", "SystemExit: no GPU, giving up"),
}


@pytest.mark.parametrize("case", BROKEN_AT_IMPORT)
def test_plugin_that_fails_to_import_is_left_out(case, installed_plugin, fresh_manager, caplog):
    source, error = BROKEN_AT_IMPORT[case]
    builtins = _builtin_components()
    installed_plugin("facelab_broken", "import facelab\n" + source + "\n",
                     dist="facelab-broken", version="2.0.1")
    installed_plugin("facelab_fine", TINY_BACKBONE.format(name="fine-net"), dist="facelab-fine")
    with caplog.at_level(logging.WARNING, logger="facelab.manager"):
        registry = fresh_manager.get_registry()
    [failure] = fresh_manager.plugin_failures()
    assert isinstance(failure, fresh_manager.PluginFailure)
    assert failure.name == "facelab_broken"
    assert (failure.package, failure.version) == ("facelab-broken", "2.0.1")
    assert failure.error.startswith(error), failure.error
    assert failure.stage == "load"
    line = str(failure)
    assert "\n" not in line
    assert line.startswith("plugin 'facelab_broken' (package facelab-broken 2.0.1) left out: "
                           + error), line
    assert [r.getMessage() for r in caplog.records] == [line]
    # everything else is there
    assert _components(registry, builtin=True) == builtins
    assert [c.name for c in registry.find(include_builtin=False)] == ["fine-net"]
    assert registry.get("backbone", "fine-net").origin.package == "facelab-fine"
    status = fresh_manager.plugin_status()
    assert status.failed == [failure]
    assert "facelab_fine" in {p.name for p in status.loaded}
    assert "facelab_broken" not in {p.name for p in status.loaded}


def test_registration_hook_that_raises_leaves_the_whole_plugin_out(installed_plugin,
                                                                   fresh_manager):
    installed_plugin("facelab_halfway", """
        import facelab
        from facelab.params import NoParams

        @facelab.hookimpl
        def register_heads(register):
            register("halfway-head", lambda params, task: None, NoParams)

        @facelab.hookimpl
        def register_backbones(register):
            raise KeyError("weights-url")

        @facelab.hookimpl
        def register_losses(register):
            register("halfway-loss", lambda params, tasks: None, NoParams)
    """, dist="facelab-halfway", version="0.9")
    installed_plugin("facelab_fine", TINY_BACKBONE.format(name="fine-net"), dist="facelab-fine")
    builtins = _builtin_components()
    manager = fresh_manager.get_plugin_manager()
    assert fresh_manager.plugin_failures() == [], "registration hooks run with the registry"
    registry = fresh_manager.get_registry()
    [failure] = fresh_manager.plugin_failures()
    assert (failure.name, failure.package, failure.version, failure.stage) == \
        ("facelab_halfway", "facelab-halfway", "0.9", "register")
    assert failure.error == "register_backbones: KeyError: 'weights-url'"
    assert str(failure) == ("plugin 'facelab_halfway' (package facelab-halfway 0.9) left out: "
                            "register_backbones: KeyError: 'weights-url'")
    # none of its components, even those registered before the failing hook
    assert [c.name for c in registry.find(include_builtin=False)] == ["fine-net"]
    assert _components(registry, builtin=True) == builtins
    assert manager.get_plugin("facelab_halfway") is None, "its other hooks must not run either"
    # rebuilding the registry neither retries it nor reports it twice
    fresh_manager.reset()
    assert [c.name for c in fresh_manager.get_registry().find(include_builtin=False)] == \
        ["fine-net"]
    assert fresh_manager.plugin_failures() == [failure]


def test_invalid_registration_leaves_the_plugin_out(installed_plugin, fresh_manager):
    """A plugin bug (a schema that is not a Params subclass, a name registered twice by the
    same plugin) is that plugin's failure, not the user's."""
    installed_plugin("facelab_noschema", """
        import facelab

        @facelab.hookimpl
        def register_backbones(register):
            register("noschema-net", lambda params, shape: None, dict)
    """, dist="facelab-noschema")
    installed_plugin("facelab_twice", TINY_BACKBONE.format(name="twice-net") + """
    @facelab.hookimpl
    def register_heads(register):
        register("twice-head", build, NoParams)
        register("twice-head", build, NoParams)
    """, dist="facelab-twice")
    registry = fresh_manager.get_registry()
    failures = {f.name: f for f in fresh_manager.plugin_failures()}
    assert set(failures) == {"facelab_noschema", "facelab_twice"}
    assert failures["facelab_noschema"].error.startswith(
        "register_backbones: FacelabError: plugin facelab_noschema: backbone 'noschema-net' must "
        "declare its parameters as a facelab.Params subclass"), failures["facelab_noschema"]
    assert failures["facelab_twice"].error.startswith(
        "register_heads: FacelabError: duplicate head 'twice-head'"), failures["facelab_twice"]
    assert registry.find(include_builtin=False) == []


def test_same_entry_point_name_in_two_packages(installed_plugin, fresh_manager):
    installed_plugin("facelab_first", TINY_BACKBONE.format(name="first-net"),
                     dist="facelab-first", version="1.0", entry_point="samename")
    installed_plugin("facelab_second", TINY_BACKBONE.format(name="second-net"),
                     dist="facelab-second", version="2.0", entry_point="samename")
    registry = fresh_manager.get_registry()
    [failure] = fresh_manager.plugin_failures()
    [component] = registry.find(include_builtin=False)
    kept = {"first-net": "facelab-first", "second-net": "facelab-second"}
    assert component.origin.package == kept[component.name]
    assert failure.name == "samename" and failure.package != component.origin.package
    assert failure.error == f"the plugin name 'samename' is already used by package " \
                            f"{component.origin.package} {component.origin.version}"


def test_call_each_isolates_third_party_hooks(installed_plugin, fresh_manager):
    installed_plugin("facelab_fine", TINY_BACKBONE.format(name="fine-net"), dist="facelab-fine")
    installed_plugin("facelab_raising", """
        import facelab

        @facelab.hookimpl
        def register_backbones(register):
            raise ValueError("not today")
    """, dist="facelab-raising")
    seen = []
    fresh_manager.call_each("register_backbones",
                            register=lambda name, *args, **kwargs: seen.append(name))
    assert "fine-net" in seen and "simple-cnn" in seen
    [failure] = fresh_manager.plugin_failures()
    assert failure.name == "facelab_raising"
    assert failure.error == "register_backbones: ValueError: not today"
    assert fresh_manager.get_plugin_manager().get_plugin("facelab_raising") is None


def test_duplicates_between_good_plugins_stay_an_error(installed_plugin, fresh_manager):
    """A broken plugin is left out, but two working ones with the same name are a conflict the
    recipe author must resolve (e.g. with FACELAB_DISABLE_PLUGINS)."""
    installed_plugin("facelab_broken", "raise ImportError('nope')\n", dist="facelab-broken")
    installed_plugin("facelab_one", TINY_BACKBONE.format(name="same-net"), dist="facelab-one")
    installed_plugin("facelab_two", TINY_BACKBONE.format(name="same-net"), dist="facelab-two")
    with pytest.raises(FacelabError, match=r"duplicate backbone 'same-net': registered by "
                                           r"facelab_(one|two) .* and by facelab_(one|two)"):
        fresh_manager.get_registry()
    assert [f.name for f in fresh_manager.plugin_failures()] == ["facelab_broken"]


# ------------------------------------------------------------------------------------------
# FACELAB_DISABLE_PLUGINS
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("disable", ["facelab_off", "facelab-off-dist", "Facelab_Off.Dist",
                                     "  facelab_off  ,"])
def test_disable_a_third_party_plugin(disable, installed_plugin, fresh_manager, monkeypatch):
    """By entry-point name, by distribution name (any spelling pip accepts), whitespace ok; a
    disabled plugin is not even imported (so disabling works for a broken one too)."""
    installed_plugin("facelab_off", "raise RuntimeError('imported although disabled')\n",
                     dist="facelab-off-dist")
    installed_plugin("facelab_on", TINY_BACKBONE.format(name="on-net"), dist="facelab-on")
    monkeypatch.setenv("FACELAB_DISABLE_PLUGINS", disable)
    registry = fresh_manager.get_registry()
    assert "facelab_off" not in sys.modules
    assert fresh_manager.plugin_failures() == []
    assert fresh_manager.disabled_plugins() == ["facelab_off"]
    assert [c.name for c in registry.find(include_builtin=False)] == ["on-net"]
    assert fresh_manager.plugin_status().unmatched == []


def test_disable_by_module_path_and_package(installed_plugin, fresh_manager, monkeypatch):
    installed_plugin("facelab_bymodule", TINY_BACKBONE.format(name="bymodule-net"),
                     dist="facelab-bymodule", entry_point="renamed")
    monkeypatch.setenv("FACELAB_DISABLE_PLUGINS", "facelab_bymodule")
    assert fresh_manager.disabled_plugins() == ["renamed"]
    assert fresh_manager.get_registry().find(include_builtin=False) == []


def test_disable_builtins(fresh_manager, monkeypatch):
    from facelab.plugins import BUILTIN

    builtins = _builtin_components()
    monkeypatch.setenv("FACELAB_DISABLE_PLUGINS",
                       "cbam, facelab.plugins.balancers.smote,facelab.plugins.losses, typo-plugin")
    registry = fresh_manager.get_registry()
    left_out = {"facelab.plugins.attention.cbam", "facelab.plugins.balancers.smote",
                *(m for m in BUILTIN if m.startswith("facelab.plugins.losses."))}
    assert len(left_out) >= 4
    assert sorted(fresh_manager.disabled_plugins()) == sorted(left_out)
    manager = fresh_manager.get_plugin_manager()
    assert not any(manager.get_plugin(module) for module in left_out)
    assert "cbam" not in registry.names("attention") and "se" in registry.names("attention")
    assert "smote" not in registry.names("balancer")
    assert registry.names("loss") == []
    assert _components(registry, builtin=True) == {
        (kind, name) for kind, name in builtins
        if not (kind == "loss" or (kind, name) in {("attention", "cbam"), ("balancer", "smote")})}
    status = fresh_manager.plugin_status()
    assert status.unmatched == ["typo-plugin"]
    assert status.failed == []
    assert {p.name for p in status.loaded} == set(BUILTIN) - left_out


def test_disable_builtin_by_relative_path(fresh_manager, monkeypatch):
    monkeypatch.setenv("FACELAB_DISABLE_PLUGINS", "attention.se,attention.none")
    assert fresh_manager.get_registry().names("attention") == ["cbam"]
    assert sorted(fresh_manager.disabled_plugins()) == ["facelab.plugins.attention.none",
                                                        "facelab.plugins.attention.se"]


def test_reset_manager_reloads_plugins(installed_plugin, fresh_manager, monkeypatch):
    manager = fresh_manager.get_plugin_manager()
    installed_plugin("facelab_late", TINY_BACKBONE.format(name="late-net"), dist="facelab-late")
    fresh_manager.reset()  # the registry only: the manager loaded before the install
    assert fresh_manager.get_registry().find(include_builtin=False) == []
    fresh_manager.reset(manager=True)
    assert fresh_manager.get_plugin_manager() is not manager
    assert [c.name for c in fresh_manager.get_registry().find(include_builtin=False)] == \
        ["late-net"]
    monkeypatch.setenv("FACELAB_DISABLE_PLUGINS", "facelab_late")
    fresh_manager.reset(manager=True)
    assert fresh_manager.get_registry().find(include_builtin=False) == []


def test_importing_facelab_loads_no_plugin():
    """Importing the core, the recipe loader and the CLI loads neither plugins nor Keras."""
    code = textwrap.dedent("""
        import sys
        import facelab, facelab.cli, facelab.manager, facelab.recipe, facelab.registry
        assert facelab.manager._manager is None and facelab.manager._registry is None
        loaded = [m for m in sys.modules if m.startswith("facelab.plugins.")]
        assert not loaded, loaded
        assert "keras" not in sys.modules and "tensorflow" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_keeps_working_and_names_a_broken_plugin(installed_plugin, fresh_manager,
                                                    cli_runner):
    """Every command still works with a plugin that fails to import; `facelab plugins` says
    which one failed and why."""
    from conftest import RECIPES
    from facelab.cli import cli

    installed_plugin("facelab_broken_cli", "import facelab\nraise RuntimeError('kaput')\n",
                     dist="facelab-broken-cli", version="0.3.0")
    result = cli_runner.invoke(cli, ["validate", str(RECIPES / "quickstart.yaml")])
    assert result.exit_code == 0, result.output
    result = cli_runner.invoke(cli, ["plugins"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "plugins left out" in result.output
    assert "facelab_broken_cli" in result.output and "facelab-broken-cli 0.3.0" in result.output
    assert "failed: RuntimeError: kaput" in result.output
