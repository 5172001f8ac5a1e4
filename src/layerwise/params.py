"""The typed schema of a chapter's parameters.

Every chapter has one cell tagged ``parameters`` (papermill's convention) that assigns its
parameters at top level. It starts with the fields of :class:`CommonParams`, which every chapter has;
the chapter's own parameters follow, and each one's type is the type of its default value
(``n_seqs = 16`` is an int, ``mask_ratios = [0.0, 0.5]`` a list of floats). :func:`chapter_schema`
reads that schema from the cell's source.

Values reach a chapter from a profile file, ``-p NAME=VALUE`` of the book runner, or papermill's own
``-p`` / ``-y``. :func:`coerce` turns each into its parameter's type: YAML text (``"[a, b]"``, what
``papermill -p models '[a, b]'`` injects) becomes the list or mapping it spells, an int becomes a
float where the default is a float; anything else of the wrong type is a :class:`LayerwiseError`
naming the chapter, the parameter, the expected type and the fix. The runner checks every chapter
this way before running any (:func:`validate`); a chapter's first code cell after ``parameters``
calls :func:`coerce_injected` so that a run of papermill alone gets the same types.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from .config import LayerwiseError

__all__ = ["CommonParams", "Param", "COMMON_FIELDS", "chapter_schema", "coerce", "coerce_injected",
           "parameter_sources", "validate"]


@dataclass
class CommonParams:
    """The parameters every chapter declares, with their types and the tiny profile's defaults."""

    profile: str = "tiny"       #: which profile file produced this run: tiny / gpu / paper
    preset: str = "tiny"        #: triplet preset trained or loaded when ``models`` is empty
    #: hub ids, local paths or {id, family, mask_token_id, ...} mappings (layerwise.subjects.ModelEntry);
    #: [] = the triplet
    models: list[str | dict[str, Any]] = field(default_factory=list)
    data_dir: str = ""          #: "" = $LAYERWISE_DATA_DIR (the runner fills it)
    cache_dir: str = ""         #: "" = $LAYERWISE_CACHE_DIR (the runner fills it)
    device: str = "auto"
    seed: int = 0


#: names of :class:`CommonParams`, in the order chapters declare them
COMMON_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CommonParams))
_COMMON_DEFAULTS: dict[str, Any] = dataclasses.asdict(CommonParams())

_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "text", list: "a list",
               dict: "a mapping"}
_ITEM_NAMES = {bool: "true/false values", int: "integers", float: "numbers", str: "strings", list: "lists",
               dict: "mappings"}


@dataclass(frozen=True)
class Param:
    """One declared parameter: its name, default and the type every value must have."""

    name: str
    default: Any
    source: str = ""  #: the default as written in the cell

    @property
    def type(self) -> type | None:
        """bool / int / float / str / list / dict, or None (any value) for a None or unevaluable default."""
        if self.default is None:
            return None
        return type(self.default) if type(self.default) in _TYPE_NAMES else None

    def describe(self) -> str:
        t = self.type
        item = _element_type(self.default) if t is list and self.default else None
        if item is not None:
            return f"a list of {_ITEM_NAMES[item]}"
        return _TYPE_NAMES[t] if t is not None else "anything"


def _element_type(items: Sequence[Any]) -> type | None:
    kinds = {type(x) for x in items}
    if kinds == {int, float}:
        return float
    return kinds.pop() if len(kinds) == 1 and next(iter(kinds)) in _TYPE_NAMES else None


# ---------------------------------------------------------------------------------------------
# Reading the schema from the parameters cell
# ---------------------------------------------------------------------------------------------


def parameter_sources(source: str, chapter: str = "") -> dict[str, str]:
    """Names assigned at top level in a parameters cell, with the source text of each default.

    Read with :mod:`ast` (papermill's own line parser misreads e.g. ``x = ""  # "" = default``).
    Tuple assignments (``a, b = 1, 2``) declare nothing.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise LayerwiseError(f"chapter {chapter or '?'}: its parameters cell is not valid Python "
                             f"(line {e.lineno}: {e.msg}): fix it") from None
    out: dict[str, str] = {}
    for node in tree.body:
        value: ast.expr | None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        for t in targets:
            if isinstance(t, ast.Name):
                out[t.id] = (ast.get_source_segment(source, value) or "") if value is not None else ""
    return out


def _evaluate_default(text: str) -> Any:
    """The value of a default's source text: a literal or constant arithmetic (``1 / 3``); None if
    it needs names (such a parameter takes any value)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError):
        pass
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    if any(isinstance(n, (ast.Name, ast.Call, ast.Attribute, ast.Subscript, ast.Lambda)) for n in ast.walk(tree)):
        return None
    try:
        return eval(compile(tree, "<default>", "eval"), {"__builtins__": {}}, {})  # constants only
    except Exception:
        return None


def chapter_schema(source: str, chapter: str = "") -> dict[str, Param]:
    """The typed schema of a chapter from its parameters cell's source: ``{name: Param}``.

    The common parameters must all be declared, with defaults of :class:`CommonParams`' types.
    """
    schema = {name: Param(name, _evaluate_default(text), text)
              for name, text in parameter_sources(source, chapter).items()}
    missing = [n for n in COMMON_FIELDS if n not in schema]
    if missing:
        raise LayerwiseError(f"chapter {chapter or '?'}: its parameters cell lacks {', '.join(missing)} (every "
                             f"chapter declares {', '.join(COMMON_FIELDS)}): add "
                             + "; ".join(f"{n} = {_COMMON_DEFAULTS[n]!r}" for n in missing))
    for name in COMMON_FIELDS:
        p = schema[name]
        if type(p.default) is not type(_COMMON_DEFAULTS[name]):
            raise LayerwiseError(f"chapter {chapter or '?'}: parameter {name} = {p.source} must default to "
                                 f"{Param(name, _COMMON_DEFAULTS[name]).describe()}: write "
                                 f"{name} = {_COMMON_DEFAULTS[name]!r}")
    return schema


# ---------------------------------------------------------------------------------------------
# Coercion and validation
# ---------------------------------------------------------------------------------------------


def _example(name: str, default: Any) -> str:
    text = yaml.safe_dump(default, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return f"-p {name}='{text}'" if isinstance(default, (list, dict)) else f"-p {name}={text}"


def _wrong(name: str, value: Any, default: Any, expected: str) -> LayerwiseError:
    shown = f"{value!r}" if not isinstance(value, str) else f"'{value}'"
    return LayerwiseError(f"parameter {name or '?'} = {shown} is not {expected} (its default is "
                          f"{default!r}): give {expected}, e.g. {_example(name or 'name', default)}")


def _parse_text(value: str) -> Any:
    try:
        return yaml.safe_load(value) if value.strip() else value
    except yaml.YAMLError:
        return value


def coerce(value: Any, default: Any, name: str = "") -> Any:
    """``value`` as the type of ``default``, or :class:`LayerwiseError` naming the expected type.

    Text is parsed as YAML where the default is not text (``"[a, b]"`` -> ``["a", "b"]``,
    ``"16"`` -> ``16``); an int is accepted for a float; a list's items must have the type of the
    default's items (when the default has items of one type); a ``None`` default accepts anything.
    """
    if default is None or type(default) not in _TYPE_NAMES:
        return value
    want, given = type(default), value
    expected = Param(name, default).describe()
    if isinstance(value, os.PathLike) and want is str:
        value = os.fspath(value)
    if isinstance(value, str) and want is not str:
        value = _parse_text(value)
    if isinstance(value, tuple) and want is list:
        value = list(value)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not want:
        raise _wrong(name, given, default, expected)
    if want is list and default and (item := _element_type(default)) is not None:
        proto = next(x for x in default if type(x) is item)
        try:
            value = [coerce(x, proto, name) for x in value]
        except LayerwiseError:
            raise _wrong(name, given, default, expected) from None
    return value


def validate(chapter: str, schema: Mapping[str, Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """Coerce ``values`` to the chapter's schema; a name it does not declare is an error."""
    unknown = sorted(k for k in values if k not in schema)
    if unknown:
        raise LayerwiseError(f"chapter {chapter}: {', '.join(unknown)} is no parameter of it (declared: "
                             f"{', '.join(schema)}): fix the name or drop it")
    out: dict[str, Any] = {}
    for name, value in values.items():
        try:
            out[name] = coerce(value, schema[name].default, name)
        except LayerwiseError as e:
            raise LayerwiseError(f"chapter {chapter}: {e}") from None
    return out


# ---------------------------------------------------------------------------------------------
# Inside a running chapter
# ---------------------------------------------------------------------------------------------

#: the first line of the cell papermill injects after the parameters cell
_INJECTED_HEADER = "# Parameters"


def _cells_before(namespace: Mapping[str, Any]) -> list[str]:
    """Sources of the cells executed so far in this IPython kernel, newest first (none outside IPython)."""
    history = namespace.get("In")
    if not isinstance(history, list):
        return []
    return [c for c in reversed(history[:-1]) if isinstance(c, str) and c.strip()]


def _defaults_and_injected(namespace: Mapping[str, Any]) -> tuple[str | None, set[str]]:
    """The parameters cell's source (the newest executed cell before papermill's injected one that
    assigns ``profile``) and the names papermill injected, from the kernel's input history."""
    injected: set[str] | None = None
    for src in _cells_before(namespace):
        if src.lstrip().startswith(_INJECTED_HEADER):
            if injected is None:
                injected = set(parameter_sources(src))
            continue
        try:
            names = parameter_sources(src)
        except LayerwiseError:
            continue
        if "profile" in names:
            return src, injected or set()
    return None, injected or set()


def coerce_injected(namespace: MutableMapping[str, Any], chapter: str = "") -> CommonParams:
    """Give the parameters in ``namespace`` (a chapter's ``globals()``) their schema types, in place.

    Call it in the first code cell after the parameters cell. The schema is the parameters cell's,
    found in the kernel's input history: a value papermill injected as text (``papermill -p models
    '[a, b]'``) becomes a list, a wrong type or a name the cell does not declare is a
    :class:`LayerwiseError`. Outside IPython only the common parameters are checked. Returns the
    common parameters, typed.
    """
    source, injected = _defaults_and_injected(namespace)
    schema = (chapter_schema(source, chapter) if source is not None
              else {n: Param(n, d) for n, d in _COMMON_DEFAULTS.items()})
    unknown = sorted(injected - set(schema))
    if unknown:
        raise LayerwiseError(f"chapter {chapter or 'this notebook'}: {', '.join(unknown)} is no parameter of it "
                             f"(declared: {', '.join(schema)}): fix the name given to papermill -p")
    values = validate(chapter or "this notebook", schema, {n: namespace[n] for n in schema if n in namespace})
    namespace.update(values)
    return CommonParams(**{n: values[n] for n in COMMON_FIELDS if n in values})
