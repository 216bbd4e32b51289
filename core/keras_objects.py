"""Keras optimizers and learning-rate schedules named in a recipe (``train.optimizer``,
``train.schedule``): names and argument names checked without importing Keras; objects built
when training starts.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelab.errors import FacelabError, did_you_mean

if TYPE_CHECKING:
    from facelab.recipe import KerasObject

#
# Validating ``train.optimizer`` and ``train.schedule`` must not import Keras: ``import keras``
# imports TensorFlow (about 10 s), and ``facelab validate``, ``show`` and every sweep
# combination validate recipes. Keras has no import-free API for its classes' signatures, so
# the check reads Keras's own source by hand: the public API file (``keras/optimizers/
# __init__.py``, or ``keras/api/optimizers/__init__.py`` in older releases) maps each public name
# to the module defining it, and that module's class gives the ``__init__`` argument names,
# all with ``ast`` and no import. Anything the reader does not expect (another layout, a name
# it cannot follow) makes it fall back to importing Keras, so nothing passes unchecked.
# Argument *values* are checked when the object is built, at training time
# (``build_keras_object``; ``check_keras_values`` does it up front).

#: kind -> (API package below keras/, its base class), e.g. every optimizer subclasses Optimizer.
_KERAS_KINDS = {"optimizer": ("optimizers", "Optimizer"),
                "schedule": ("optimizers.schedules", "LearningRateSchedule")}


class _KerasSourceError(Exception):
    """Keras's source is not laid out as the static reader expects."""


@dataclass(frozen=True)
class _Constructors:
    """Public class name -> its ``__init__`` argument names, for one kind of Keras object."""

    arguments: dict[str, tuple[str, ...]]
    #: public class name -> the arguments without a default (``self`` left out)
    required: dict[str, tuple[str, ...]]
    #: False when some public name could not be followed, so a name missing here may exist
    complete: bool


class _KerasSource:
    """Reads Keras's modules with ``ast``: what a module-level name is bound to, class bases,
    constructor arguments."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("keras")  # finds the package; does not import it
        if spec is None or not spec.submodule_search_locations:
            raise _KerasSourceError("keras is not installed")
        self.root = Path(list(spec.submodule_search_locations)[0])
        self._trees: dict[Path, ast.Module] = {}

    def file(self, module: str) -> Path | None:
        """The source file of Keras module ``module`` (``keras.src.optimizers.adam``)."""
        parts = module.split(".")
        if parts[0] != "keras":
            return None
        path = self.root.joinpath(*parts[1:])
        if len(parts) > 1 and path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
        return path / "__init__.py" if (path / "__init__.py").is_file() else None

    def tree(self, module: str) -> ast.Module:
        path = self.file(module)
        if path is None:
            raise _KerasSourceError(f"no source for {module}")
        if path not in self._trees:
            self._trees[path] = ast.parse(path.read_text(encoding="utf-8"), str(path))
        return self._trees[path]

    def is_module(self, module: str) -> bool:
        return self.file(module) is not None

    def lookup(self, module: str, name: str, depth: int = 0) -> tuple[str, Any]:
        """What ``name`` is bound to at the top level of ``module``: ("class", (module,
        ClassDef)), ("module", dotted name), ("other", None) for functions and constants,
        ("outside", None) for something outside Keras, or ("unknown", None)."""
        if depth > 20:
            return "unknown", None
        if module != "keras" and not module.startswith("keras."):
            return "outside", None
        if self.is_module(f"{module}.{name}"):
            return "module", f"{module}.{name}"
        if self.file(module) is None:
            return "unknown", None
        found: tuple[str, Any] = ("unknown", None)
        for node in self.tree(module).body:  # the last top-level binding wins, as in Python
            if isinstance(node, ast.ClassDef) and node.name == name:
                found = ("class", (module, node))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                found = ("other", None)
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        source = self._absolute(module, node)
                        if source is None:
                            found = ("unknown", None)
                            continue
                        found = ("import", (source, alias.name))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname == name:
                        found = ("module", alias.name)
                    elif alias.asname is None and alias.name.split(".")[0] == name:
                        found = ("module", name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    found = ("unknown", None)
        if found[0] == "import":
            source, original = found[1]
            return self.lookup(source, original, depth + 1)
        return found

    def _absolute(self, module: str, node: ast.ImportFrom) -> str | None:
        """The absolute module name of ``from <module> import ...`` inside ``module``."""
        if not node.level:
            return node.module
        parts = module.split(".")
        is_package = (self.file(module) or Path()).name == "__init__.py"
        keep = len(parts) - node.level + (1 if is_package else 0)
        if keep < 1:
            return None
        return ".".join([*parts[:keep], *([node.module] if node.module else [])])

    def resolve(self, module: str, expr: ast.expr) -> tuple[str, Any]:
        """What the expression ``expr`` (a class base: ``Name`` or ``module.Name``) refers to."""
        if isinstance(expr, ast.Name):
            return self.lookup(module, expr.id)
        if isinstance(expr, ast.Attribute):
            kind, value = self.resolve(module, expr.value)
            if kind == "module":
                return self.lookup(value, expr.attr)
            return (kind, None) if kind == "outside" else ("unknown", None)
        return "unknown", None

    def subclasses(self, module: str, cls: ast.ClassDef, target: tuple[str, str],
                   depth: int = 0) -> bool:
        """Whether the class is ``target`` (module, name) or derives from it."""
        if (module, cls.name) == target:
            return True
        if depth > 20:
            raise _KerasSourceError(f"class hierarchy of {cls.name} too deep")
        for base in cls.bases:
            kind, value = self.resolve(module, base)
            if kind == "class" and self.subclasses(*value, target, depth + 1):
                return True
            if kind not in ("class", "outside"):
                raise _KerasSourceError(f"cannot follow base {ast.unparse(base)} of {cls.name}")
        return False

    def init_arguments(self, module: str, cls: ast.ClassDef, depth: int = 0,
                       ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``__init__``'s parameter names in ``inspect.signature`` order (self included), and
        those without a default (self left out)."""
        for node in cls.body:
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                args = node.args
                positional = [a.arg for a in (*args.posonlyargs, *args.args)]
                names = [*positional, *([args.vararg.arg] if args.vararg else []),
                         *(a.arg for a in args.kwonlyargs),
                         *([args.kwarg.arg] if args.kwarg else [])]
                required = positional[1:len(positional) - len(args.defaults)]
                required += [a.arg for a, default in zip(args.kwonlyargs, args.kw_defaults)
                             if default is None]
                return tuple(names), tuple(required)
        if depth > 20:
            raise _KerasSourceError(f"class hierarchy of {cls.name} too deep")
        for base in cls.bases:  # inherited: the first base's (the MRO, for single inheritance)
            kind, value = self.resolve(module, base)
            if kind != "class":
                raise _KerasSourceError(f"cannot follow base {ast.unparse(base)} of {cls.name}")
            return self.init_arguments(*value, depth + 1)
        raise _KerasSourceError(f"no __init__ found for {cls.name}")

    def constructors(self, kind: str) -> _Constructors:
        package, base_name = _KERAS_KINDS[kind]
        api = next((m for m in (f"keras.{package}", f"keras.api.{package}")
                    if (self.file(m) or Path()).name == "__init__.py"), None)
        if api is None:
            raise _KerasSourceError(f"no API file for keras.{package}")
        kind_of_base, base = self.lookup(api, base_name)
        if kind_of_base != "class":
            raise _KerasSourceError(f"{api}.{base_name} is not a class")
        target = (base[0], base[1].name)
        arguments, required, complete = {}, {}, True
        for node in self.tree(api).body:
            if not isinstance(node, ast.ImportFrom):
                if not isinstance(node, ast.Expr):  # the docstring
                    complete = False
                continue
            for alias in node.names:
                public = alias.asname or alias.name
                if public.startswith("_"):
                    continue
                what, value = self.lookup(api, public)
                if what in ("module", "other"):
                    continue
                if what != "class":
                    complete = False
                    continue
                if (value[0], value[1].name) == target:
                    continue
                try:
                    if self.subclasses(*value, target):
                        arguments[public], required[public] = self.init_arguments(*value)
                except _KerasSourceError:
                    complete = False
        if not arguments:
            raise _KerasSourceError(f"no {kind} classes found in {api}")
        return _Constructors(arguments, required, complete)


@functools.cache
def _static_constructors(kind: str) -> _Constructors:
    """The Keras classes of ``kind`` and their arguments, read from Keras's source (no import)."""
    return _KerasSource().constructors(kind)


@functools.cache
def _imported_constructors(kind: str) -> _Constructors:
    """The same as ``_static_constructors``, by importing Keras (the fallback; ~10 s)."""
    signatures = {name: inspect.signature(cls.__init__).parameters.values()
                  for name, cls in _keras_classes(kind).items()}
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return _Constructors(
        {name: tuple(p.name for p in params) for name, params in signatures.items()},
        {name: tuple(p.name for p in list(params)[1:]
                     if p.default is p.empty and p.kind not in variadic)
         for name, params in signatures.items()},
        complete=True)


def _keras_classes(kind: str) -> dict[str, type]:
    """Public name -> class of every Keras optimizer (or learning-rate schedule); imports Keras."""
    import keras

    module = keras.optimizers if kind == "optimizer" else keras.optimizers.schedules
    base = keras.optimizers.Optimizer if kind == "optimizer" else \
        keras.optimizers.schedules.LearningRateSchedule
    return {n: c for n, c in vars(module).items()
            if isinstance(c, type) and issubclass(c, base) and c is not base}


def _find(names: Iterable[str], name: str) -> str | None:
    by_key = {_normalise(n): n for n in names}
    return by_key.get(_normalise(name))


def keras_class(kind: str, name: str, where: str) -> type:
    """The Keras optimizer or learning-rate schedule class called ``name`` (any case, - or _).

    Imports Keras; validation uses :func:`check_keras_object`, which does not.
    """
    classes = _keras_classes(kind)
    found = _find(classes, name)
    if found is None:
        suggestions = sorted(_kebab(n) for n in classes)
        raise FacelabError(f"{where}.type: {did_you_mean(name, suggestions, what=kind)}")
    return classes[found]


def check_keras_object(kind: str, spec: KerasObject, where: str, supplied: Sequence[str] = (),
                       ) -> None:
    """Check ``type`` and the argument names against the Keras constructor, without importing
    Keras (see the comment above): unknown names get a suggestion, and arguments without a
    default must be given (in the recipe, or by facelab: ``supplied``)."""
    try:
        constructors = _static_constructors(kind)
    except Exception:  # noqa: BLE001 - any surprise in Keras's source: ask Keras itself
        constructors = _imported_constructors(kind)
    found = _find(constructors.arguments, spec.type)
    if found is None and not constructors.complete:
        constructors = _imported_constructors(kind)
        found = _find(constructors.arguments, spec.type)
    if found is None:
        suggestions = sorted(_kebab(n) for n in constructors.arguments)
        raise FacelabError(f"{where}.type: {did_you_mean(spec.type, suggestions, what=kind)}")
    accepted = constructors.arguments[found]
    for key in spec.model_extra or {}:
        if key not in accepted:
            names = [p for p in accepted if p not in ("self", "kwargs", "name")]
            raise FacelabError(f"{where}.{key}: {did_you_mean(key, names, what=f'{kind} argument')}")
    for key in constructors.required[found]:
        if key not in (spec.model_extra or {}) and key not in supplied:
            raise FacelabError(f"{where}.{key}: field required ({kind} {spec.type!r} has no "
                               "default for it)")


def build_keras_object(kind: str, spec: KerasObject, where: str, **extra: Any) -> Any:
    """The Keras object (imports Keras); a bad value is a FacelabError naming ``where``."""
    cls = keras_class(kind, spec.type, where)
    kwargs = {**(spec.model_extra or {}), **extra}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, AttributeError) as exc:
        message = " ".join(str(exc).split())
        raise FacelabError(f"{where}: invalid {kind} arguments {kwargs!r}: {message}") from None


def _normalise(name: str) -> str:
    return re.sub(r"[-_ ]", "", name).lower()


def _kebab(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", name).lower()
