"""The one config mechanism of every command: typed dataclasses filled from a TOML or JSON file (a named config
shipped in `eclip/configs/` or a path), then command-line flags generated from the fields' metadata, then
`--set SECTION.NAME=VALUE` assignments, then checked in one place.

A field says what it is with `option(default, help, choices=..., low=..., above=..., high=..., below=...)`; a
nested section is `section(Class, flag_prefix=...)`. Rules between fields go in the section's `check()` method,
which raises `EclipError` with a one-line message; `validate` runs the metadata checks and every `check()`.
Each config class names itself in a `LABEL` class variable, so errors read "bad training config: ...".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import field, fields, is_dataclass
from pathlib import Path

from eclip.errors import EclipError


# ---------------------------------------------------------------- declaring fields
def option(default, help: str, *, choices=None, low=None, above=None, high=None, below=None):
    """A documented field. `low`/`high` are inclusive bounds, `above`/`below` exclusive ones; `choices` the values
    allowed. A list or tuple default is copied for each instance."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None,
                "bounds": (low, above, high, below)}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls, flag_prefix: str = ""):
    """A nested table; its fields' flags start with `flag_prefix` (e.g. "vision-" -> --vision-width)."""
    return field(default_factory=cls, metadata={"flag_prefix": flag_prefix})


def require(ok: bool, message: str) -> None:
    """For `check()` methods: refuse the config with `message` unless `ok`."""
    if not ok:
        raise EclipError(message)


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _sections(config, path: tuple[str, ...] = ()):
    """(path, section instance) of `config` and every nested section, outermost first."""
    yield path, config
    hints = _hints(type(config))
    for f in fields(config):
        if is_dataclass(hints[f.name]):
            yield from _sections(getattr(config, f.name), path + (f.name,))


def leaf_fields(cls, path: tuple[str, ...] = (), prefix: str = ""):
    """(path of the section, field, type, flag) of every non-section field of dataclass `cls`."""
    hints = _hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            yield from leaf_fields(hints[f.name], path + (f.name,), prefix + f.metadata.get("flag_prefix", ""))
        else:
            yield path, f, hints[f.name], prefix + f.name.replace("_", "-")


def _get(config, path: tuple[str, ...]):
    for name in path:
        config = getattr(config, name)
    return config


# ---------------------------------------------------------------- types
def _optional(kind):
    """X for `X | None`, else None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if len(rest) == 1 and len(typing.get_args(kind)) == 2:
            return rest[0]
    return None


def type_name(kind) -> str:
    inner = _optional(kind)
    if inner is not None:
        return f"{type_name(inner)} or none"
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        return f"list of {type_name(typing.get_args(kind)[0])}"
    return kind.__name__


def coerce(value, kind):
    """`value` (from TOML, JSON or a parsed flag) as `kind`, or ValueError: ints pass as floats, nothing else
    is converted (a bool is no int, a number no string)."""
    inner = _optional(kind)
    if inner is not None:
        return None if value is None else coerce(value, inner)
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError
        item = typing.get_args(kind)[0]
        return origin(coerce(v, item) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        raise ValueError
    return value


def parse_text(text: str, kind):
    """A value typed on the command line as `kind`: a TOML literal (`5`, `true`, `[1, 2]`, `"x"`), a bare
    string for string fields, or comma-separated items for lists."""
    text = text.strip()
    base = _optional(kind) or kind
    if _optional(kind) is not None and text.lower() in ("none", ""):
        return None
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    if typing.get_origin(base) in (list, tuple) and not isinstance(value, list):
        item = typing.get_args(base)[0]
        value = [parse_text(part, item) for part in text.split(",") if part.strip()]
    elif base is str and not isinstance(value, str):
        value = text  # a title, a path or a name that happens to read as a number stays as typed
    return coerce(value, kind)


# ---------------------------------------------------------------- filling from files and --set
def from_dict(cls, data: dict, where: str):
    """Dataclass `cls` filled from a nested dict: unknown keys and wrong types raise a one-line EclipError naming
    `where` (the file) and the field; missing keys keep their defaults."""
    if not isinstance(data, dict):
        raise EclipError(f"{where}: expected a table of {cls.__name__} fields, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise EclipError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(names)}")
    values = {}
    for name, value in data.items():
        kind = hints[name]
        if is_dataclass(kind):
            values[name] = from_dict(kind, value, f"{where} [{name}]")
            continue
        try:
            values[name] = coerce(value, kind)
        except ValueError:
            raise EclipError(f"{where}: {name} must be {type_name(kind)}, got {value!r}") from None
    return cls(**values)


def read_file(path: Path) -> dict:
    """The tables of a .toml or .json file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EclipError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise EclipError(f"{path}: cannot read the config ({error})") from None
    try:
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise EclipError(f"{path}: cannot parse the config ({error})") from None


def load(cls, path: Path | None = None, table: str | None = None):
    """`cls` from a file (only its `table` when given; the defaults without a file), validated."""
    if path is None:
        config = cls()
    else:
        data = read_file(path)
        where = str(path)
        if table is not None:
            extra = sorted(set(data) - {table})
            if extra:
                raise EclipError(f"{path}: unknown table(s) {', '.join(extra)}; expected [{table}]")
            data, where = data.get(table, {}), f"{path} [{table}]"
        config = from_dict(cls, data, where)
    validate(config)
    return config


def assign(config, assignments: list[str]):
    """Apply `SECTION.NAME=VALUE` (or `NAME=VALUE` for a field of the outer table) assignments, then validate."""
    _assign(config, assignments)
    validate(config)
    return config


def _assign(config, assignments: list[str]) -> None:
    for text in assignments:
        key, equals, value = text.partition("=")
        *path, name = key.strip().split(".")
        try:
            target = _get(config, tuple(path))
        except AttributeError:
            target = None
        kinds = _hints(type(target)) if is_dataclass(target) else {}
        if not equals or name not in kinds or is_dataclass(kinds[name]):
            known = ", ".join(".".join(p + (f.name,)) for p, f, _, _ in leaf_fields(type(config)))
            raise EclipError(f"--set {text!r}: expected SECTION.NAME=VALUE with a known name ({known})")
        try:
            setattr(target, name, parse_text(value, kinds[name]))
        except ValueError:
            raise EclipError(f"--set {text!r}: {key.strip()} must be {type_name(kinds[name])}") from None


def add_set_argument(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.NAME=VALUE",
                        help=f"override a config value, e.g. --set {example} (repeatable; applied after --config)")


# ---------------------------------------------------------------- flags generated from the fields
def add_arguments(parser: argparse.ArgumentParser, defaults, title: str, part: tuple[str, ...] = ()) -> None:
    """One flag per leaf field of the dataclass instance `defaults` (or of its section at path `part`; nested
    sections' fields start with their `flag_prefix`), its help the field's `help` and the default `defaults`
    holds; only flags that were typed override (see `apply_arguments`)."""
    group = parser.add_argument_group(title)
    defaults = _get(defaults, part)
    for path, f, kind, flag in leaf_fields(type(defaults)):
        default = getattr(_get(defaults, path), f.name)
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        meaning = f.metadata.get("help") or f"[{'.'.join(part + path)}] {f.name}"
        help_text = f"{meaning} (default: {shown})"
        choices = f.metadata.get("choices")
        if kind is bool:
            group.add_argument(f"--{flag}", dest=f"flag_{flag}", action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
            continue

        def convert(text, kind=kind):
            try:
                return parse_text(text, kind)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {type_name(kind)}, got {text!r}") from None

        group.add_argument(f"--{flag}", dest=f"flag_{flag}", type=convert, default=None, help=help_text,
                           metavar="{%s}" % ",".join(choices) if choices else type_name(kind).split()[0].upper())


def apply_arguments(config, args: argparse.Namespace, part: tuple[str, ...] = ()):
    """Set the fields of `config` (of its section at path `part`) given as flags, then the `--set` assignments
    (if the parser has them) on the whole config, then validate (errors name a field with its flag)."""
    target = _get(config, part)
    for path, f, _, flag in leaf_fields(type(target)):
        value = getattr(args, f"flag_{flag}", None)
        if value is not None:
            setattr(_get(target, path), f.name, value)
    _assign(config, getattr(args, "assignments", []))
    validate(config, flags=True, part=part)
    return config


# ---------------------------------------------------------------- checks
def _bound_text(low, above, high, below) -> str:
    if above == 0 and high is None and below is None and low is None:
        return "positive"
    if low == 0 and above is None and high is None and below is None:
        return "0 or more"
    lower = f"at least {low}" if low is not None else f"above {above}" if above is not None else None
    upper = f"at most {high}" if high is not None else f"below {below}" if below is not None else None
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return " and ".join(part for part in (lower, upper) if part)


def _in_bounds(value, low, above, high, below) -> bool:
    # `not value >= low` rather than `value < low`: NaN compares false both ways and must fail too
    values = value if isinstance(value, (list, tuple)) else [value]
    return all(not ((low is not None and not v >= low) or (above is not None and not v > above) or
                    (high is not None and not v <= high) or (below is not None and not v < below)) for v in values)


def validate(config, flags: bool = False, part: tuple[str, ...] = ()) -> None:
    """Every field against its metadata (choices, bounds), then every section's `check()`; the first problem
    raises "bad <LABEL> config: ..." naming the field (with its flag when `flags`: the fields of the section at
    path `part` are the command's flags)."""
    label = getattr(config, "LABEL", type(config).__name__)
    flag_of = {(path, f.name): flag for path, f, _, flag in leaf_fields(type(_get(config, part)))}
    for path, f, _, _ in leaf_fields(type(config)):
        value = getattr(_get(config, path), f.name)
        flag = flag_of.get((path[len(part):], f.name)) if flags and path[:len(part)] == part else None
        name = ".".join(path + (f.name,)) + (f" (--{flag})" if flag else "")
        choices, bounds = f.metadata.get("choices"), f.metadata.get("bounds", (None,) * 4)
        if choices and value not in choices:
            raise EclipError(f"bad {label} config: {name} must be one of {', '.join(choices)}, got {value!r}")
        if value is not None and any(b is not None for b in bounds) and not _in_bounds(value, *bounds):
            raise EclipError(f"bad {label} config: {name} must be {_bound_text(*bounds)}, got {value}")
    for path, section_config in _sections(config):
        check = getattr(section_config, "check", None)
        if check is None:
            continue
        try:
            check()
        except EclipError as error:
            where = f"[{'.'.join(path)}] " if path else ""
            raise EclipError(f"bad {label} config: {where}{error}") from None


def to_dict(config) -> dict:
    """The config as plain JSON-ready data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
