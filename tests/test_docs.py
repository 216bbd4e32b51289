"""The docs match the code: the generated reference is current, and every registered component
and every hook is documented."""

from __future__ import annotations

import importlib.util
import re

import pytest

from conftest import REPO
from facelab import hookspecs
from facelab.manager import get_registry
from facelab.registry import KINDS

DOCS = REPO / "docs"
HAND_WRITTEN = ("architecture.md", "writing-a-recipe.md", "writing-a-plugin.md", "own-data.md",
                "deploying.md", "comparing-configurations.md", "reliability.md")


def _generator():
    spec = importlib.util.spec_from_file_location("facelab_docs_gen", DOCS / "_gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hooks() -> list[str]:
    return sorted(name for name, fn in vars(hookspecs).items()
                  if callable(fn) and hasattr(fn, "facelab_spec"))


def test_generated_docs_are_current():
    stale = [path.name for path, text in _generator().outputs().items()
             if not path.exists() or path.read_text(encoding="utf-8") != text]
    assert not stale, f"{stale} are stale: run `python docs/_gen_reference.py` and commit the result"


def test_every_builtin_component_is_in_the_reference():
    reference = (DOCS / "plugins-reference.md").read_text()
    missing = [f"{c.kind} {c.name}" for c in get_registry() if c.origin.builtin
               and f"### {c.kind} `{c.name}`" not in reference]
    assert not missing, f"{missing} are not in docs/plugins-reference.md: run docs/_gen_reference.py"


LIFECYCLE = ["epoch_ended", "find_run_output", "register_commands", "run_failed",
             "run_finished", "run_preflight", "run_started", "run_tags"]


def test_every_hook_is_a_kind_or_a_lifecycle_hook():
    assert _hooks() == sorted([*KINDS.values(), *LIFECYCLE])


@pytest.mark.parametrize("doc", ["architecture.md", "writing-a-plugin.md", "plugins-reference.md"])
def test_every_hook_is_documented(doc):
    text = (DOCS / doc).read_text()
    missing = [hook for hook in _hooks() if f"`{hook}" not in text]
    assert not missing, f"docs/{doc} does not mention {missing}"


def test_every_kind_is_in_the_architecture_contracts():
    text = (DOCS / "architecture.md").read_text()
    contracts = text.split("## Component contracts", 1)[1].split("\n## ", 1)[0]
    for kind, hook in KINDS.items():
        assert re.search(rf"^\| {kind} \| `{hook}` \|", contracts, re.M), kind


def test_every_recipe_section_is_documented():
    from facelab.recipe import SECTIONS

    text = (DOCS / "writing-a-recipe.md").read_text()
    for section in SECTIONS:
        assert f"| `{section}` |" in text, section


@pytest.mark.parametrize("doc", [*HAND_WRITTEN, "plugins-reference.md"])
def test_relative_links_resolve(doc):
    text = (DOCS / doc).read_text()
    anchors_by_file = {}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (DOCS / path).resolve() if path else DOCS / doc
        assert file.exists(), f"docs/{doc} links to missing {target}"
        if anchor and file.suffix == ".md":
            if file not in anchors_by_file:
                body = file.read_text()
                anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                           for h in re.findall(r"^#+ (.+)$", body, re.M)}
                anchors |= set(re.findall(r'<a id="([^"]+)"', body))
                anchors_by_file[file] = anchors
            assert anchor in anchors_by_file[file], f"docs/{doc}: no anchor #{anchor} in {path}"
