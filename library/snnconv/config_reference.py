"""The reference table of every trial-configuration key, generated from :mod:`snnconv.config`.

One source: the table in ``docs/sweeps.md`` is written by this module and never by hand. Each row
is one field of :class:`~snnconv.config.TrialConfig` or of its nested sections, read from the code:

* **key** - the dotted name a sweep space or :func:`~snnconv.config.apply_overrides` uses;
* **type** and **default** - the dataclass annotation and default;
* **allowed** - the checks :func:`~snnconv.config.validate` makes on that key (its ``_choice``,
  ``_positive`` and ``_non_negative`` calls, and its ``ConfigError`` messages that say "must be" or
  "allowed"), read from the source of ``validate`` with :mod:`ast`;
* **meaning** - the field's ``#:`` comment (the lines right above the field, or one on its line).

Command line::

    python -m snnconv.config_reference                          # print the table
    python -m snnconv.config_reference --write docs/sweeps.md   # rewrite it between the markers
    python -m snnconv.config_reference --check docs/sweeps.md   # exit 1 when the file is stale

Imports neither Ray nor MLflow (only :mod:`snnconv.config` and, to name the models, ``snnconv.models``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import re
import sys
import textwrap
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from . import config as config_module
from .config import TrialConfig

#: the markers around the generated table in a Markdown file
START = "<!-- config:reference:start -->"
END = "<!-- config:reference:end -->"

#: columns of the generated table
COLUMNS = ("key", "type", "default", "allowed", "meaning")

_SAME_LINE_COMMENT = re.compile(r"\s#:\s?(.*)$")


@dataclass(frozen=True)
class FieldDoc:
    """One row of the reference: a configuration key as the code defines it (plain text, no Markdown)."""

    key: str
    type: str
    default: str
    allowed: str
    meaning: str


def field_comments(cls: type) -> dict[str, str]:
    """``{field name: its #: comment}`` for the fields of dataclass ``cls`` ('' where there is none).

    A field's comment is the run of ``#:`` lines directly above it, joined with spaces, or a ``#:``
    comment at the end of its own line.
    """
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    (node,) = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    comments: dict[str, str] = {}
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        above: list[str] = []
        index = statement.lineno - 2  # the line above, 0-based
        while index >= 0 and lines[index].strip().startswith("#:"):
            above.insert(0, lines[index].strip()[2:].strip())
            index -= 1
        same_line = _SAME_LINE_COMMENT.search(lines[(statement.end_lineno or statement.lineno) - 1])
        if same_line and not above:
            above = [same_line.group(1).strip()]
        comments[statement.target.id] = " ".join(above)
    return comments


def type_name(hint: Any) -> str:
    """A type annotation as people write it: ``float | None``, ``list[int] | str | None``."""
    if hint is type(None):
        return "None"
    origin = get_origin(hint)
    if origin is Union or isinstance(hint, types.UnionType):
        return " | ".join(type_name(arg) for arg in get_args(hint))
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in get_args(hint))}]"
    return getattr(hint, "__name__", str(hint))


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


# ---------------------------------------------------------------------------------------------
# what validate() checks, read from its source


def _path_text(node: ast.AST, env: dict[str, str]) -> str | None:
    """The dotted key a check names: a string literal, or an f-string over loop variables in ``env``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name) \
                    and value.value.id in env:
                parts.append(env[value.value.id])
            else:
                return None
        return "".join(parts)
    return None


def _static_text(node: ast.AST) -> str | None:
    """The literal text of a string or f-string, each placeholder written as ``{}``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def _message_rule(message: str) -> tuple[str, str] | None:
    """(key, rule) from a ``ConfigError`` message ``"<key>: ... must be X, got {}"`` or ``"...; allowed: X"``."""
    key, sep, rest = message.partition(": ")
    if not sep or " " in key or "{" in key:
        return None
    rest = rest.split(", got", 1)[0].strip()
    if "allowed: " in rest:
        return key, _one_of(rest.split("allowed: ", 1)[1].strip().split(", "))
    if "must be " in rest:
        return key, rest[len("must be "):] if rest.startswith("must be ") else rest
    return None


def _one_of(values: Sequence[Any]) -> str:
    return "one of " + ", ".join(f"`{value}`" for value in values)


class _ValidateReader:
    """Walks the source of ``validate`` and collects one list of rules per dotted key."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.module = inspect.getmodule(function)
        self.imports: dict[str, str] = {}
        self.rules: dict[str, list[str]] = {}
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        self._visit(tree, {})

    def _resolve(self, node: ast.AST) -> Sequence[Any] | None:
        """The values of an allowed-values argument: a tuple/list literal or a module-level name."""
        if isinstance(node, (ast.Tuple, ast.List)):
            if all(isinstance(e, ast.Constant) for e in node.elts):
                return [e.value for e in node.elts]
            return None
        if isinstance(node, ast.Name):
            if node.id in self.imports:
                return getattr(importlib.import_module(self.imports[node.id]), node.id, None)
            return getattr(self.module, node.id, None)
        return None

    def _add(self, key: str, rule: str) -> None:
        rules = self.rules.setdefault(key, [])
        if rule not in rules:
            rules.append(rule)

    def _visit(self, node: ast.AST, env: dict[str, str]) -> None:
        if isinstance(node, ast.ImportFrom) and node.level and self.module is not None:
            package = self.module.__package__ or ""
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            for alias in node.names:
                self.imports[alias.asname or alias.name] = f"{base}.{node.module}" if node.module else base
            return
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) \
                and isinstance(node.iter, (ast.Tuple, ast.List)) \
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.iter.elts):
            for element in node.iter.elts:
                for statement in node.body:
                    self._visit(statement, {**env, node.target.id: element.value})
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            key = _path_text(node.args[0], env)
            if key is not None:
                if node.func.id == "_choice" and len(node.args) >= 3:
                    values = self._resolve(node.args[2])
                    if values is not None:
                        self._add(key, _one_of(values))
                elif node.func.id == "_positive":
                    self._add(key, "> 0")
                elif node.func.id == "_non_negative":
                    self._add(key, ">= 0")
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            message = _static_text(node.exc.args[0])
            rule = _message_rule(message) if message else None
            if rule is not None:
                self._add(*rule)
        for child in ast.iter_child_nodes(node):
            self._visit(child, env)


def validation_rules() -> dict[str, list[str]]:
    """``{dotted key: [rule, ...]}``: what :func:`snnconv.config.validate` checks, read from its source."""
    return _ValidateReader(config_module.validate).rules


# ---------------------------------------------------------------------------------------------
# the table


def _walk(cls: type, prefix: str, rules: dict[str, list[str]]) -> Iterator[FieldDoc]:
    hints = get_type_hints(cls)
    comments = field_comments(cls)
    for field in dataclasses.fields(cls):
        key = f"{prefix}{field.name}"
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            yield from _walk(hint, f"{key}.", rules)
            continue
        default = _default_of(field)
        yield FieldDoc(key=key, type=type_name(hint),
                       default="(required)" if default is dataclasses.MISSING else repr(default),
                       allowed="; ".join(rules.get(key, [])), meaning=comments.get(field.name, ""))


def config_fields(cls: type = TrialConfig) -> list[FieldDoc]:
    """Every leaf field of ``cls`` and its nested sections, in declaration order."""
    return list(_walk(cls, "", validation_rules()))


def _cell(text: str, code: bool = False) -> str:
    if not text:
        return ""
    escaped = text.replace("|", "\\|")
    return f"`{escaped}`" if code else escaped


def config_table_markdown(cls: type = TrialConfig) -> str:
    """The Markdown table of :func:`config_fields` (no trailing newline); what the docs hold between
    :data:`START` and :data:`END`."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in config_fields(cls):
        cells = [_cell(row.key, True), _cell(row.type, True), _cell(row.default, True),
                 _cell(row.allowed), _cell(row.meaning)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_block(text: str) -> str | None:
    """What ``text`` holds between the markers (stripped), or None when a marker is missing."""
    if START not in text or END not in text:
        return None
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def replace_block(text: str, table: str) -> str:
    """``text`` with the part between the markers replaced by ``table``; ValueError without markers."""
    if read_block(text) is None:
        raise ValueError(f"the markers {START} and {END} are missing")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snnconv.config_reference",
                                     description="The trial-configuration reference table, generated "
                                                 "from snnconv.config.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", type=Path, help="rewrite the table between the markers of FILE")
    group.add_argument("--check", metavar="FILE", type=Path, help="exit 1 when FILE's table differs from the code")
    args = parser.parse_args(argv)
    table = config_table_markdown()
    target = args.write or args.check
    if target is None:
        print(table)
        return 0
    try:
        text = target.read_text()
        current = read_block(text)
        if current is None:
            raise ValueError(f"the markers {START} and {END} are missing")
    except (OSError, ValueError) as error:
        print(f"error: {target}: {error}", file=sys.stderr)
        return 2
    if args.check:
        if current != table:
            print(f"{target}: the configuration table is stale; run "
                  f"python -m snnconv.config_reference --write {target}", file=sys.stderr)
            return 1
        print(f"{target}: the configuration table matches snnconv.config")
        return 0
    if current != table:
        target.write_text(replace_block(text, table))
        print(f"{target}: configuration table rewritten ({len(config_fields())} keys)")
    else:
        print(f"{target}: configuration table already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
