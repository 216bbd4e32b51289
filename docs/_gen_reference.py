"""Generate the reference parts of the docs from the code, so they cannot drift from it.

- ``docs/plugins-reference.md``: every built-in component (from its docstring and its
  ``facelab.Params`` schema) and every hook of ``facelab.hookspecs``.
- the recipe key tables in ``docs/writing-a-recipe.md``, between the ``BEGIN GENERATED`` and
  ``END GENERATED`` markers, from the pydantic schemas in ``facelab.recipe``;
- the output of every ``$ facelab ...`` line in its ``console`` blocks, run for real on the
  page's ``<!-- file: NAME -->`` recipes (so the error messages shown are the real ones).

Usage::

    python docs/_gen_reference.py          # rewrite both files
    python docs/_gen_reference.py --check  # exit 1 if a committed file is stale

``tests/test_docs.py`` runs the same functions in memory and fails when the files are stale.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

DOCS = Path(__file__).resolve().parent
REFERENCE = DOCS / "plugins-reference.md"
RECIPE_DOC = DOCS / "writing-a-recipe.md"
BEGIN = "<!-- BEGIN GENERATED: recipe keys (python docs/_gen_reference.py) -->"
END = "<!-- END GENERATED: recipe keys -->"

#: Human titles of the component kinds (keys of ``facelab.registry.KINDS``).
TITLES = {"dataset": "Datasets", "detector": "Detectors", "split": "Splits",
          "balancer": "Balancers",
          "augmentation": "Augmentations", "backbone": "Backbones",
          "attention": "Attention modules", "head": "Heads", "loss": "Losses"}

#: Recipe keys that hold components: key path -> how the key holds them.
COMPONENT_KEYS = {
    "data.dataset": "dataset component",
    "data.datasets": "mapping: source name -> dataset component",
    "data.detector": "detector component",
    "data.split": "split component",
    "data.balancer": "balancer component",
    "data.augment": "list of augmentation components",
    "model.backbone": "backbone component",
    "model.attention": "attention component",
    "model.heads": "mapping: task name -> head component",
    "train.loss": "loss component",
}


# ------------------------------------------------------------------------------------------
# Rendering helpers
# ------------------------------------------------------------------------------------------

def type_text(annotation: Any) -> str:
    """A pydantic field annotation as short, YAML-minded text: ``int | null``, ``"a" | "b"``."""
    from facelab.params import Params

    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_text(a) for a in args)}]" if args else name
    if isinstance(annotation, type) and issubclass(annotation, Params):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def yaml_text(value: Any) -> str:
    """A default value as it would be written in a recipe (YAML flow style)."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        try:
            plain = yaml.safe_load(value) == value and value.strip() == value and value != ""
        except yaml.YAMLError:
            plain = False
        return value if plain and not any(c in value for c in ",[]{}#") else json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def cell(text: str) -> str:
    """Text safe in a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(text: str) -> str:
    return f"`{cell(text)}`"


def params_table(schema: type, *, prefix: str = "", see: dict[str, str] | None = None,
                 nested: tuple[str, ...] = ()) -> str:
    """A Markdown table of a Params schema: key, type, default, description."""
    from facelab.params import is_path_field

    fields = schema.model_fields
    if not fields:
        return "No parameters.\n"
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, info in fields.items():
        path = f"{prefix}{name}"
        kind = (see or {}).get(path)
        type_cell = cell(kind) if kind else code(type_text(info.annotation))
        if is_path_field(info):
            type_cell += ", path"  # expands ${ENV} and ~ (facelab.params)
        if path in nested:
            type_cell = "section" + (" or `null`" if type_text(info.annotation).endswith(
                "| null") else "")
            default = "**required**" if info.is_required() else f"see `{path}`"
        elif info.is_required():
            default = "**required**"
        else:
            default = code(yaml_text(info.get_default(call_default_factory=True)))
        rows.append(f"| `{name}` | {type_cell} | {default} | {cell(info.description or '')} |")
    return "\n".join(rows) + "\n"


def _doc_body(doc: str) -> str:
    """A docstring as Markdown: dedented, Sphinx roles (``:class:`x```) as code."""
    return re.sub(r":[a-z]+:`([^`]+)`", r"`\1`", inspect.cleandoc(doc).strip()) if doc else ""


# ------------------------------------------------------------------------------------------
# docs/plugins-reference.md
# ------------------------------------------------------------------------------------------

def plugins_reference(registry: Any = None) -> str:
    """The plugin reference: hooks and every built-in component, by kind."""
    from facelab import hookspecs
    from facelab.manager import get_registry
    from facelab.registry import KINDS

    registry = registry or get_registry()
    out = [
        "# Plugin reference",
        "",
        "<!-- Generated by `python docs/_gen_reference.py` from the hookspecs, the docstrings and",
        "     the parameter schemas. Do not edit by hand: tests/test_docs.py fails when stale. -->",
        "",
        "Every component facelab ships, by kind. A recipe names one with `type:`; its other keys",
        "are the parameters below, validated before any work starts (unknown keys are errors).",
        "`facelab plugins --all` prints the same from the installed code, third-party plugins",
        "included. How to add a component: [writing-a-plugin.md](writing-a-plugin.md).",
        "",
        "## Contents",
        "",
    ]
    builtin = [c for c in registry if c.origin.builtin]
    for kind in KINDS:
        names = [c.name for c in builtin if c.kind == kind]
        links = ", ".join(f"[`{n}`](#{kind}-{n})" for n in names) or "none"
        out.append(f"- [{TITLES[kind]}](#{TITLES[kind].lower().replace(' ', '-')}): {links}")
    out.append("- [Lifecycle hooks and commands](#lifecycle-hooks-and-commands)")
    out.append("")
    for kind, hook_name in KINDS.items():
        hook = getattr(hookspecs, hook_name)
        out += [f"## {TITLES[kind]}", "", f"Hook: `{hook_name}(register)`. "
                + _doc_body(hook.__doc__), ""]
        for component in (c for c in builtin if c.kind == kind):
            out += [f'<a id="{kind}-{component.name}"></a>', "",
                    f"### {kind} `{component.name}`", "",
                    _doc_body(component.doc), "",
                    f"Plugin module: `{component.origin.plugin}`. "
                    f"Parameters (`{component.params.__name__}`):", "",
                    params_table(component.params)]
    out += ["## Lifecycle hooks and commands", "",
            "Observers (tracking, reports, figures) implement these; the runner calls them with "
            "a `facelab.run.Run`. Built-in observers: the `facelab.plugins.mlflow`, "
            "`facelab.plugins.reports.*` and `facelab.plugins.papers` plugins.", ""]
    registration = set(KINDS.values())
    for name, hook in vars(hookspecs).items():
        if callable(hook) and hasattr(hook, "facelab_spec") and name not in registration:
            arguments = ", ".join(inspect.signature(hook).parameters)
            out += [f"### `{name}({arguments})`", "", _doc_body(hook.__doc__), ""]
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------------------
# Recipe key tables (inside docs/writing-a-recipe.md)
# ------------------------------------------------------------------------------------------

def recipe_tables() -> str:
    """One table per recipe section, walked from ``facelab.recipe.RecipeSchema``."""
    from facelab.params import Params
    from facelab.recipe import KerasObject, RecipeSchema

    sections: list[tuple[str, type]] = []
    seen: dict[type, str] = {}

    def walk(schema: type, path: str) -> None:
        if schema in seen and schema is KerasObject:
            return
        seen.setdefault(schema, path)
        sections.append((path, schema))
        for name, info in schema.model_fields.items():
            child = f"{path}.{name}" if path else name
            if child in COMPONENT_KEYS:
                continue
            annotation = info.annotation
            is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
            for arg in typing.get_args(annotation) if is_union else (annotation,):
                if isinstance(arg, type) and issubclass(arg, Params):
                    walk(arg, child)
                elif typing.get_origin(arg) is dict:
                    value = typing.get_args(arg)[1]
                    if isinstance(value, type) and issubclass(value, Params):
                        walk(value, f"{child}.<source>")

    walk(RecipeSchema, "")
    for key in COMPONENT_KEYS:  # a renamed key must be renamed here too
        section, name = key.rsplit(".", 1)
        schema = dict(sections)[section]
        if name not in schema.model_fields:
            raise KeyError(f"COMPONENT_KEYS names {key}, which the recipe schema lacks")

    out = []
    for path, schema in sections:
        title = "Top level" if not path else f"`{path}`"
        if schema is KerasObject:
            title = "`train.optimizer` and `train.schedule`"
        out += [f"#### {title}", ""]
        doc = (schema.__doc__ or "").strip()
        if doc and schema.__doc__ is not Params.__doc__ and schema is not RecipeSchema:
            out += [" ".join(inspect.cleandoc(doc).split()), ""]
        if schema is KerasObject:
            out += ["Every other key is passed to the Keras constructor and checked against its "
                    "signature.", ""]
        prefix = f"{path}." if path else ""
        nested = tuple(p for p, s in sections if s is not KerasObject and "<" not in p)
        out.append(params_table(schema, prefix=prefix, see=COMPONENT_KEYS, nested=nested))
    return "\n".join(out).rstrip() + "\n"


def recipe_doc(current: str) -> str:
    """``writing-a-recipe.md`` with the generated region replaced."""
    if BEGIN not in current or END not in current:
        raise ValueError(f"{RECIPE_DOC.name} lacks the markers {BEGIN!r} ... {END!r}")
    head, rest = current.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{recipe_tables()}\n{END}{tail}"


# ------------------------------------------------------------------------------------------
# Console examples: ``$ facelab ...`` blocks get the command's real output
# ------------------------------------------------------------------------------------------

FILE_BLOCK = re.compile(r"<!-- file: (?P<path>[^ ]+) -->\n```[a-z]*\n(?P<body>.*?)\n```\n", re.S)
CONSOLE_BLOCK = re.compile(r"```console\n(?P<body>.*?)```\n", re.S)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_command(line: str, folder: Path) -> str:
    """Run ``[VAR=value ...] facelab ARGS`` in ``folder`` in process; its output, as printed."""
    import os
    import shlex

    from click.testing import CliRunner

    from facelab.cli import cli

    words = shlex.split(line)
    env: dict[str, str | None] = {}
    while words and "=" in words[0] and words[0] != "facelab":
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if not words or words[0] != "facelab":
        raise ValueError(f"console examples run facelab only, got {line!r}")
    # The examples must not depend on the caller's environment.
    for name in ("UTKFACE_DIR", "GENKI4K_DIR", "IMDB_WIKI_DIR"):
        env.setdefault(name, None)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(cli, words[1:], env={"COLUMNS": "1000", **env})
    finally:
        os.chdir(cwd)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise RuntimeError(f"{line!r} crashed: {result.exception!r}") from result.exception
    return ANSI.sub("", result.output).rstrip()


def console_examples(text: str) -> str:
    """``text`` with every ``$ facelab ...`` console block's output regenerated.

    The recipes the commands use are the doc's ``<!-- file: NAME -->`` blocks, written to a
    temporary folder next to a copy of ``recipes/quickstart.yaml``.
    """
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="facelab-doc-") as tmp:
        folder = Path(tmp)
        shutil.copy(DOCS.parent / "recipes" / "quickstart.yaml", folder / "quickstart.yaml")
        for match in FILE_BLOCK.finditer(text):
            (folder / match["path"]).write_text(match["body"] + "\n", encoding="utf-8")

        def regenerate(match: re.Match) -> str:
            commands = [line[2:] for line in match["body"].splitlines() if line.startswith("$ ")]
            if not commands or not all("facelab" in c for c in commands):
                return match[0]
            parts = [f"$ {c}\n{run_command(c, folder)}" for c in commands]
            return "```console\n" + "\n".join(parts) + "\n```\n"

        return CONSOLE_BLOCK.sub(regenerate, text)


def outputs() -> dict[Path, str]:
    """Every generated file and its expected content."""
    return {REFERENCE: plugins_reference(),
            RECIPE_DOC: console_examples(recipe_doc(RECIPE_DOC.read_text(encoding="utf-8")))}


def main(argv: list[str]) -> int:
    stale = []
    for path, text in outputs().items():
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            stale.append(path)
            if "--check" not in argv:
                path.write_text(text, encoding="utf-8")
    verb = "stale" if "--check" in argv else "rewrote"
    for path in stale:
        print(f"{verb}: {path.relative_to(DOCS.parent)}")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
