"""The one config mechanism (eclip/config.py) on a config made for the test: files, --set, generated flags and the
checks, with the exact messages a user reads."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import ClassVar

import pytest

from eclip.config import (add_arguments, add_set_argument, apply_arguments, assign, from_dict, leaf_fields, load,
                          option, parse_text, require, section, to_dict, validate)
from eclip.errors import EclipError


@dataclass
class Inner:
    width: int = option(8, "width", above=0)
    ratio: float = option(0.5, "a share", low=0, below=1)
    names: tuple[str, ...] = option(("a", "b"), "names")


@dataclass
class Outer:
    LABEL: ClassVar[str] = "test"
    mode: str = option("fast", "how", choices=("fast", "slow"))
    steps: int = option(3, "steps", low=1)
    flag: bool = option(False, "a switch")
    model: str | None = option(None, "a folder or none")
    inner: Inner = section(Inner, flag_prefix="inner-")

    def check(self) -> None:
        require(self.steps >= self.inner.width or self.mode == "fast", "slow mode needs steps >= inner.width")


def parser_for(defaults=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser, defaults or Outer(), "options")
    add_set_argument(parser, "steps=5")
    return parser


def test_text_values_parse_as_their_field_type():
    assert parse_text("5", int) == 5 and parse_text("2", float) == 2.0 and isinstance(parse_text("2", float), float)
    assert parse_text("true", bool) is True and parse_text("x,y", tuple[str, ...]) == ("x", "y")
    assert parse_text('["x", "y"]', tuple[str, ...]) == ("x", "y") and parse_text("1,2.5", list[float]) == [1.0, 2.5]
    assert parse_text("none", str | None) is None and parse_text("runs/a", str | None) == "runs/a"
    assert parse_text("2024", str) == "2024"  # a name that reads as a number stays a string
    for text, kind in (("x", int), ("1.5", int), ("yes", bool)):
        with pytest.raises(ValueError):
            parse_text(text, kind)


def test_a_file_fills_nested_sections_and_names_what_is_wrong(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('steps = 4\n[inner]\nwidth = 2\nnames = ["z"]\n')
    config = load(Outer, path)
    assert (config.steps, config.inner.width, config.inner.names, config.inner.ratio) == (4, 2, ("z",), 0.5)
    path.write_text("[inner]\nheight = 2\n")
    with pytest.raises(EclipError, match=r"c\.toml \[inner\]: unknown key\(s\) height; known: width, ratio, names$"):
        load(Outer, path)
    path.write_text("steps = true\n")
    with pytest.raises(EclipError, match=r"c\.toml: steps must be int, got True$"):
        load(Outer, path)
    path.write_text("steps = [\n")
    with pytest.raises(EclipError, match=r"c\.toml: cannot parse the config"):
        load(Outer, path)
    with pytest.raises(EclipError, match=r"missing\.toml: no such config file"):
        load(Outer, tmp_path / "missing.toml")
    assert to_dict(from_dict(Outer, {"inner": {"names": ["q"]}}, "x"))["inner"]["names"] == ["q"]


@pytest.mark.parametrize("assignment, message", [
    ("steps=0", "bad test config: steps must be at least 1, got 0"),
    ("inner.width=0", "bad test config: inner.width must be positive, got 0"),
    ("inner.ratio=1", "bad test config: inner.ratio must be at least 0 and below 1, got 1.0"),
    ("inner.ratio=nan", "bad test config: inner.ratio must be at least 0 and below 1, got nan"),
    ("mode=medium", "bad test config: mode must be one of fast, slow, got 'medium'"),
    ("mode=slow", "bad test config: slow mode needs steps >= inner.width"),
    ("inner.depth=2", "--set 'inner.depth=2': expected SECTION.NAME=VALUE with a known name (mode, steps, flag, model, "
                      "inner.width, inner.ratio, inner.names)"),
    ("inner=2", "--set 'inner=2': expected SECTION.NAME=VALUE"),
    ("steps", "--set 'steps': expected SECTION.NAME=VALUE"),
    ("steps=many", "--set 'steps=many': steps must be int"),
])
def test_set_assignments_are_checked_in_one_line(assignment, message):
    with pytest.raises(EclipError) as error:
        assign(Outer(), [assignment])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_flags_come_from_the_fields_and_set_applies_after_them():
    flags = [flag for _, _, _, flag in leaf_fields(Outer)]
    assert flags == ["mode", "steps", "flag", "model", "inner-width", "inner-ratio", "inner-names"]
    args = parser_for().parse_args(["--steps", "9", "--inner-names", "p,q", "--flag", "--set", "steps=10"])
    config = apply_arguments(Outer(), args)
    assert (config.steps, config.inner.names, config.flag) == (10, ("p", "q"), True)
    untouched = apply_arguments(Outer(steps=7), parser_for().parse_args([]))
    assert untouched.steps == 7 and untouched.flag is False  # only typed flags override
    assert apply_arguments(Outer(flag=True), parser_for().parse_args(["--no-flag"])).flag is False
    with pytest.raises(EclipError, match=r"^bad test config: inner\.width \(--inner-width\) must be positive, got 0$"):
        apply_arguments(Outer(), parser_for().parse_args(["--inner-width", "0"]))
    with pytest.raises(SystemExit):  # argparse's own one-line usage error for a value of the wrong type
        parser_for().parse_args(["--steps", "x"])


def test_flags_of_one_section_and_set_on_the_whole():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Outer(), "inner options", part=("inner",))
    add_set_argument(parser, "inner.width=2")
    config = apply_arguments(Outer(), parser.parse_args(["--width", "4", "--set", "steps=2"]), part=("inner",))
    assert (config.inner.width, config.steps) == (4, 2)
    with pytest.raises(EclipError, match=r"inner\.ratio \(--ratio\) must be at least 0 and below 1, got 2\.0"):
        apply_arguments(Outer(), parser.parse_args(["--ratio", "2"]), part=("inner",))


@dataclass
class Fractions:
    LABEL: ClassVar[str] = "fractions"
    shares: tuple[float, ...] = option((0.1, 0.5), "shares", above=0, below=1)


def test_bounds_hold_for_every_item_of_a_list():
    validate(Fractions())
    with pytest.raises(EclipError, match=r"^bad fractions config: shares must be above 0 and below 1, got \(0\.1, 1\.0\)$"):
        assign(Fractions(), ["shares=0.1,1"])
