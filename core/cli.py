"""The ``facelab`` command line: the core's commands, plus those plugins add through the
``register_commands`` hook.

Start-up is cheap on purpose: this module imports click and rich, and loading the plugins
imports their light registration modules. TensorFlow and Keras are imported by the commands
that build or run a model (``run``, ``data``, ``summary``), MLflow by those that read a store.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from facelab import __version__
from facelab.errors import FacelabError, RunTerminated
from facelab.tables import PlainTable

console = Console()
err_console = Console(stderr=True)

RECIPE = click.argument("recipe", type=click.Path(path_type=Path, dir_okay=True))
SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                   help="Override a recipe value (a YAML scalar), e.g. --set train.epochs=5. "
                        "Repeatable.")
#: Exit codes for a run stopped by Ctrl-C and by SIGTERM (128 + signal number).
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


def quiet_tensorflow() -> None:
    """Import TensorFlow with stderr muted: its C++ start-up notices (oneDNN, CUDA probing) are
    printed before its logging honours TF_CPP_MIN_LOG_LEVEL. Import errors still raise.
    Commands that build or run a model call this first."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def error_line(message: str) -> Text:
    """``error: <message>``, the message shown verbatim (brackets are not markup)."""
    return Text.assemble(("error:", "bold red"), " ", message)


class FacelabGroup(click.Group):
    """The command group: user errors from any command (the core's or a plugin's) print one
    line and exit 2; Ctrl-C and SIGTERM print one line and exit 130 and 143. ``--debug`` shows
    tracebacks. Plugins add their commands (hook ``register_commands``) the first time a command
    is looked up or listed."""

    plugin_commands_added = False

    def add_plugin_commands(self) -> None:
        if not self.plugin_commands_added:
            self.plugin_commands_added = True
            from facelab.manager import call_each

            call_each("register_commands", cli=self)  # a plugin that raises is left out

    def get_command(self, ctx: click.Context, name: str):
        self.add_plugin_commands()
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context):
        self.add_plugin_commands()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FacelabError as exc:
            if ctx.params.get("debug"):
                raise
            err_console.print(error_line(str(exc)), highlight=False, soft_wrap=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            if ctx.params.get("debug"):
                raise
            err_console.print(Text("interrupted (Ctrl-C)", style="bold red"))
            ctx.exit(EXIT_INTERRUPTED)
        except RunTerminated:
            if ctx.params.get("debug"):
                raise
            err_console.print(Text("terminated (SIGTERM)", style="bold red"))
            ctx.exit(EXIT_TERMINATED)


@click.group(cls=FacelabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facelab")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """facelab: plugin-based experiments for face-attribute classification.

    \b
    Example:
      facelab run recipes/quickstart.yaml
      facelab plugins backbone 'eff*'
    """


def _load(recipe: Path, overrides: tuple[str, ...]):
    from facelab.recipe import load_recipe

    return load_recipe(recipe, overrides)


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=True), required=False)
@SET
@click.option("--resume", "resume", metavar="RUN",
              help="Continue a stopped run (Ctrl-C, SIGTERM, SIGKILL, a crash) from its last "
                   "checkpoint, in its output folder and its tracking run: RUN is the output "
                   "folder, facelab's run id, or a run id a tracking plugin knows. RECIPE and "
                   "--set, if given, must resolve to the run's recipe.")
@click.option("--dry-run", is_flag=True, help="Validate and show the plan; train nothing.")
def run(recipe: Path | None, overrides: tuple[str, ...], resume: str | None,
        dry_run: bool) -> None:
    """Run a recipe: data, training, evaluation, reports and tracking (MLflow, by default).

    After every epoch the run keeps a checkpoint in its output folder (train.checkpoints), so
    a stopped run can be continued with --resume.

    \b
    Example:
      facelab run recipes/quickstart.yaml --set train.epochs=3
      facelab run --resume runs/quickstart-20250101-120000
    """
    if resume is not None:
        _resume(resume, recipe, overrides, dry_run)
        return
    if recipe is None:
        raise FacelabError("missing RECIPE (or --resume RUN to continue a stopped run)")
    resolved = _load(recipe, overrides)
    if dry_run:
        console.print(Text.assemble(("valid", "green"), f" {recipe}: would run ",
                                    (resolved.name, "bold"),
                                    f" (tasks: {', '.join(resolved.tasks)}); nothing trained "
                                    "(--dry-run)"))
        console.print(resolved.to_yaml(), highlight=False, markup=False)
        return
    from facelab.runner import run_recipe

    _run_with_progress(resolved, lambda **kw: run_recipe(resolved, **kw))


def _run_with_progress(resolved, start) -> None:
    from facelab.console import RichProgress
    from facelab.signals import stop_on_signals

    progress = RichProgress(console)
    # the first Ctrl-C / SIGTERM stops the run; later ones are ignored until the process exits,
    # so the run's cleanup and the one line the group prints are not cut short
    with stop_on_signals(keep_after_stop=True):
        with progress.phase("starting TensorFlow"):
            quiet_tensorflow()
        from facelab.callbacks import EpochProgress
        from facelab.console import print_result

        callbacks = [EpochProgress(progress, resolved.schema.train.epochs)]
        print_result(console, start(progress=progress, callbacks=callbacks))


def _resume(ref: str, recipe: Path | None, overrides: tuple[str, ...], dry_run: bool) -> None:
    """``run --resume``: find the run, check it may be resumed (and that RECIPE and --set, if
    given, resolve to its recipe), then continue it."""
    from facelab import checkpoints
    from facelab.manager import get_plugin_manager

    given = _load(recipe, overrides) if recipe is not None else None
    search = [Path(given.schema.output_dir if given else "runs")]
    folder = checkpoints.locate(ref, search, get_plugin_manager().hook)
    stored = checkpoints.read_run(folder)
    checkpoints.check_resumable(stored)
    if given is None and overrides:
        from facelab.manager import get_registry
        from facelab.recipe import apply_overrides, validate_recipe

        given = validate_recipe(apply_overrides(stored.recipe.to_dict(), overrides),
                                get_registry(), where=str(folder / checkpoints.RUN_FILE),
                                overrides=overrides)
    if given is not None:
        checkpoints.check_same_recipe(stored, given)
    if dry_run:
        console.print(Text.assemble(("valid", "green"), " would resume ", (stored.name, "bold"),
                                    f" (run {stored.id}, {stored.status}) in {folder}; "
                                    "nothing trained (--dry-run)"))
        return
    from facelab.runner import resume_run

    _run_with_progress(stored.recipe, lambda **kw: resume_run(stored, **kw))


@cli.command()
@RECIPE
@SET
def validate(recipe: Path, overrides: tuple[str, ...]) -> None:
    """Validate a recipe and every component's parameters; no work is done.

    \b
    Example:
      facelab validate recipes/quickstart.yaml --set model.backbone.type=simple-cnn
    """
    resolved = _load(recipe, overrides)
    console.print(Text.assemble(("valid", "green"), f" {recipe}: {resolved.name} "
                                f"(tasks: {', '.join(resolved.tasks)})"))


@cli.command()
@RECIPE
@SET
def show(recipe: Path, overrides: tuple[str, ...]) -> None:
    """Print the resolved recipe (extends merged, overrides applied, defaults filled) as YAML.

    \b
    Example:
      facelab show recipes/quickstart.yaml --set train.epochs=1
    """
    click.echo(_load(recipe, overrides).to_yaml(), nl=False)


@cli.command()
@click.argument("kind", required=False)
@click.argument("pattern", required=False)
@click.option("--all", "show_all", is_flag=True, help="Show parameters and full docs too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(kind: str | None, pattern: str | None, show_all: bool, as_json: bool) -> None:
    """List registered components: name, kind, package, version and summary; then the plugins
    that failed to load or were disabled (FACELAB_DISABLE_PLUGINS).

    KIND is one of dataset, detector, split, balancer, augmentation, backbone, attention, head,
    loss (plural forms work too); PATTERN is a shell wildcard.

    \b
    Example:
      facelab plugins backbone 'eff*'
      facelab plugins --json
    """
    from facelab.errors import did_you_mean
    from facelab.manager import get_registry, plugin_status
    from facelab.registry import KINDS

    if kind is not None and kind not in KINDS:
        singular = kind[:-1] if kind.endswith("s") else kind
        if singular in KINDS:
            kind = singular
        elif pattern is None and any(c in kind for c in "*?["):
            kind, pattern = None, kind
        else:
            raise FacelabError(did_you_mean(kind, KINDS, what="component kind"))
    components = get_registry().find(kind, pattern)
    if as_json:
        click.echo(json.dumps([_component_json(c, show_all) for c in components], indent=2))
        return
    table = PlainTable(title="facelab components")
    for column in ("kind", "name", "package", "version", "summary"):
        table.add_column(column)
    for c in components:
        table.add_row(c.kind, c.name, c.origin.package, c.origin.version, c.summary)
        if show_all:
            for name, f in c.params.model_fields.items():
                default = "required" if f.is_required() else repr(f.default)
                table.add_row("", f"  {name}", "", default, f.description or "")
            for name, text in _terms(c).items():
                table.add_row("", f"  ({name})", "", "", text)
    console.print(table)
    status = plugin_status()
    if status.failed or status.disabled or status.unmatched:
        left_out = PlainTable(title="plugins left out")
        left_out.add_column("plugin")
        left_out.add_column("package")
        left_out.add_column("why", overflow="fold")
        for failure in status.failed:
            package = f"{failure.package} {failure.version or ''}".strip() if failure.package \
                else ""
            left_out.add_row(failure.name, package, f"failed: {failure.error}")
        for name in status.disabled:
            left_out.add_row(name, "", "disabled by FACELAB_DISABLE_PLUGINS")
        for name in status.unmatched:
            left_out.add_row(name, "", "in FACELAB_DISABLE_PLUGINS, but no plugin has this name")
        console.print(left_out)


def _component_json(c, full: bool) -> dict:
    out = {"kind": c.kind, "name": c.name, "package": c.origin.package,
           "version": c.origin.version, "plugin": c.origin.plugin, "builtin": c.origin.builtin,
           "summary": c.summary}
    if full:
        out["doc"] = c.doc
        out["params"] = c.params.model_json_schema()
        out.update(_terms(c))
    return out


def _terms(c) -> dict[str, str]:
    """A dataset's declared licence and citation (what model cards show), as far as they are
    known without a recipe; nothing for other kinds."""
    if c.kind != "dataset":
        return {}
    try:  # the declaration, asked with the schema's defaults
        declared = c.terms(c.params.model_construct())
    except (AttributeError, KeyError, TypeError, ValueError):  # it reads a required parameter
        declared = {"licence": None, "citation": None, "depends": True}
    out = {}
    for key in ("licence", "citation"):
        if declared[key]:
            out[key] = declared[key]
        elif key in c.params.model_fields:
            out[key] = f"the recipe's `{key}` parameter, else not declared"
        elif declared.get("depends"):
            out[key] = "depends on the recipe's parameters"
        else:
            out[key] = "not declared"
    return out


@cli.command()
@RECIPE
@SET
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def data(recipe: Path, overrides: tuple[str, ...], as_json: bool) -> None:
    """Load, crop, split and balance a recipe's data; print class counts at every stage.

    \b
    Example:
      facelab data recipes/quickstart.yaml --json
    """
    resolved = _load(recipe, overrides)
    quiet_tensorflow()
    from facelab.console import RichProgress, counts_table
    from facelab.context import QuietProgress
    from facelab.pipeline import make_context, prepare_data

    progress = QuietProgress() if as_json else RichProgress(console)
    prepared = prepare_data(resolved, make_context(resolved, progress))
    if as_json:
        click.echo(json.dumps(prepared.counts.to_json(), indent=2))
        return
    tasks = {name: list(task.classes) for name, task in prepared.tasks.items()}
    for table in counts_table(prepared.counts.to_json(), tasks):
        console.print(table)


@cli.command()
@RECIPE
@SET
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def summary(recipe: Path, overrides: tuple[str, ...], as_json: bool) -> None:
    """Build a recipe's model and print its parameters and RAM (the race paper's eq. 7).

    \b
    Example:
      facelab summary recipes/race-2025/bd-am.yaml --set model.backbone.weights=null
    """
    resolved = _load(recipe, overrides)
    quiet_tensorflow()
    from facelab.context import QuietProgress
    from facelab.model import build_model, parameter_counts, ram_mb
    from facelab.pipeline import make_context, recipe_tasks

    ctx = make_context(resolved, QuietProgress())
    tasks = recipe_tasks(resolved, ctx)
    shape = resolved.detector.build(ctx).output_shape
    model = build_model(resolved, tuple(shape), tasks)
    counts = parameter_counts(model)
    counts["ram_mb"] = round(ram_mb(counts["total"]), 2)
    counts["input_shape"] = list(shape)
    if as_json:
        click.echo(json.dumps(counts))
        return
    table = PlainTable(title=f"{resolved.name}: model summary")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("input shape", "x".join(map(str, shape)))
    table.add_row("total parameters", f"{counts['total']:,}")
    table.add_row("trainable parameters", f"{counts['trainable']:,}")
    table.add_row("non-trainable parameters", f"{counts['non_trainable']:,}")
    table.add_row("RAM (MB, eq. 7, float32)", f"{counts['ram_mb']:.2f}")
    console.print(table)


def main() -> None:
    cli(prog_name="facelab")



if __name__ == "__main__":
    main()
