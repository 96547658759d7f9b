"""One validation layer for options that come from a user (CLI ``--option``, YAML, Python keywords).

Every value is checked against the type annotation of the parameter it will reach, before any work
starts; a wrong value gives one :class:`~medrobust.errors.ConfigError` line naming the key, the value and
what is allowed. Ranges and choices are then checked by the loader itself, still before reading any file.

Normalisation (so that YAML and ``--option`` values need no quoting):

- ``float`` accepts integers (``fs=250``); ``bool`` must be a real boolean (``true``/``false``);
- a ``Sequence[str]`` accepts a list of strings or integers (record names such as ``100`` are numbers
  in YAML) and a single string or integer as a one-item list; an empty list is refused;
- ``str | Sequence[str]`` (e.g. ``leads``) reads an integer as its name (``leads=12`` is ``"12"``);
- ``tuple[int, int]`` accepts a two-item list.
"""

from __future__ import annotations

import collections.abc as cabc
import inspect
import math
import os
import types
import typing
from typing import Any, Callable, Iterable, Mapping

from medrobust.errors import ConfigError

_NONE = type(None)
_MAX_SHOWN = 60


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def describe(annotation: Any) -> str:
    """Words for what ``annotation`` allows, e.g. ``"a number or null"``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    if annotation is _NONE or annotation is None:
        return "null"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if annotation in (os.PathLike, dict) or origin in (os.PathLike, dict, cabc.Mapping):
        return "a path" if (annotation is os.PathLike or origin is os.PathLike) else "a mapping (key: value)"
    if origin is tuple:
        return f"a list of {len(args)} {describe(args[0])}s" if args and args[-1] is not Ellipsis else "a list"
    if origin in (list, cabc.Sequence, tuple):
        inner = describe(args[0]) if args else "value"
        return f"a non-empty list of {inner.removeprefix('an ').removeprefix('a ')}s (one value is a list of one)"
    return getattr(annotation, "__name__", str(annotation))


class _Mismatch(Exception):
    pass


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_SCALARS: dict[Any, tuple[Callable[[Any], bool], Callable[[Any], Any]]] = {
    _NONE: (lambda v: v is None, lambda v: None),
    bool: (lambda v: isinstance(v, bool), bool),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), int),
    float: (_is_number, float),
    str: (lambda v: isinstance(v, str), str),
    os.PathLike: (lambda v: isinstance(v, (str, os.PathLike)), lambda v: v),
    dict: (lambda v: isinstance(v, dict), lambda v: v),
    cabc.Mapping: (lambda v: isinstance(v, dict), lambda v: v),
}


def _coerce_union(value: Any, args: tuple[Any, ...]) -> Any:
    if str in args and isinstance(value, int) and not isinstance(value, bool) and any(
            typing.get_origin(a) in (list, cabc.Sequence) for a in args):
        value = str(value)  # leads=12: YAML reads the name "12" as a number
    for member in args:
        try:
            return _coerce(value, member)
        except _Mismatch:
            continue
    raise _Mismatch


def _coerce(value: Any, annotation: Any) -> Any:
    """``value`` normalised to ``annotation`` or :class:`_Mismatch`."""
    if annotation in (Any, object, inspect.Parameter.empty):
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args)
    key = _NONE if annotation is None else (origin if origin in (os.PathLike, dict, cabc.Mapping) else annotation)
    if key in _SCALARS:
        ok, convert = _SCALARS[key]
        if not ok(value):
            raise _Mismatch
        return convert(value)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(v, a) for v, a in zip(value, args))
        raise _Mismatch
    if origin in (list, cabc.Sequence, tuple):
        return _coerce_sequence(value, args[0] if args else Any)
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    if isinstance(annotation, type) and annotation.__module__ != "builtins":
        raise _Mismatch  # e.g. a torch module where only Python code can pass one
    return value  # an annotation this layer does not model: the receiver checks the value


def _coerce_sequence(value: Any, item: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        value = [value]  # one value: a list of one (records=100)
    if not value:
        raise _Mismatch
    out = []
    for v in value:
        if item is str and isinstance(v, int) and not isinstance(v, bool):
            v = str(v)  # record names and codes are numbers in YAML
        out.append(_coerce(v, item))
    return out


def check_value(value: Any, annotation: Any, name: str, *, where: str = "") -> Any:
    """``value`` checked (and normalised) against the type ``annotation``, else a one-line :class:`ConfigError`.

    ``name`` is the key shown to the user; ``where`` (e.g. ``"config.yaml: dataset"`` or ``"--option"``)
    says where it came from.
    """
    try:
        return _coerce(value, annotation)
    except _Mismatch:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}{name}={_show(value)} is not allowed: {name} must be {describe(annotation)}."
                          ) from None


def check_section(section: Any, schema: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """A config section (a YAML mapping) checked key by key against ``schema`` (key -> annotation).

    ``None`` is an empty section. A section that is not a mapping, an unknown key, or a value of the
    wrong type gives one :class:`ConfigError` line naming ``where``, the key, the value and what is allowed.
    """
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping (key: value) with keys {sorted(schema)}, "
                          f"got {_show(section)}.")
    unknown = [k for k in section if k not in schema]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(schema)}.")
    return {k: check_value(v, schema[k], str(k), where=where) for k, v in section.items()}


def parameter_schema(*functions: Callable[..., Any], exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Keyword parameters of ``functions`` (the first one wins on a shared name) -> their type annotations."""
    skip = set(exclude)
    schema: dict[str, Any] = {}
    for fn in functions:
        hints = typing.get_type_hints(fn)
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in skip:
                schema.setdefault(p.name, hints.get(p.name, Any))
    return schema


def check_options(options: Mapping[str, Any], schema: Mapping[str, Any], *, owner: str,
                  closed: bool = True) -> dict[str, Any]:
    """Options for ``owner`` (e.g. ``"dataset 'mitdb'"``) checked against ``schema``.

    ``closed``: refuse keys the schema does not name (listing the allowed ones).
    """
    out = {}
    for key, value in options.items():
        if key not in schema:
            if closed:
                raise ConfigError(f"{owner}: unknown option {key}={_show(value)}; allowed: {', '.join(sorted(schema))}.")
            out[key] = value
            continue
        out[key] = check_value(value, schema[key], key, where=f"{owner} option")
    return out
