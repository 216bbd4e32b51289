"""The plugin manager: built-ins, third parties through real entry points, duplicates, unknown
hooks, and lazy, once-only loading."""

from __future__ import annotations

import importlib
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
def fresh_manager():
    """No plugin manager and no registry yet; both restored afterwards."""
    saved = (facelab.manager._manager, facelab.manager._registry)
    facelab.manager._manager = facelab.manager._registry = None
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
                version: str = "1.2.3") -> Path:
        site = tmp_path / f"site-{module}"
        site.mkdir()
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[facelab]\n{module} = {module}\n")
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


def test_unknown_hook_fails_check_pending(installed_plugin, fresh_manager, cli_runner):
    installed_plugin("facelab_badhook", """
        import facelab

        @facelab.hookimpl
        def register_foo(register):
            pass
    """, dist="facelab-badhook")
    with pytest.raises(FacelabError) as error:
        fresh_manager.get_plugin_manager()
    message = str(error.value)
    assert "facelab_badhook" in message and "unknown hook" in message
    assert "register_foo" in message
    assert fresh_manager._manager is None, "a failed load must not be cached"

    from facelab.cli import cli

    result = cli_runner.invoke(cli, ["plugins"])
    assert result.exit_code == 2
    assert "error:" in result.output and "register_foo" in result.output
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
