"""The reference table of every trial-configuration key, generated from :mod:`snnconv.config`.

One source: the table in ``docs/sweeps.md`` is written by this module and never by hand. Each row
is one field of :class:`~snnconv.config.TrialConfig` or of its nested sections, read from the code:

* **key** - the dotted name a sweep space or :func:`~snnconv.config.apply_overrides` uses;
* **type** and **default** - the dataclass annotation and default;
* **allowed** - the rule the field declares in its metadata (:class:`~snnconv.config.Rule`: choices or
  bounds), the same object :func:`~snnconv.config.validate` checks the value with;
* **meaning** - the field's declared ``doc`` (its metadata, beside the rule).

Nothing here reads source code: every column comes from the dataclass fields themselves.

The sections are the trial's own (``data``, ``stage1``) and one per registered conversion method.

Command line::

    python -m snnconv.config_reference                          # print the table
    python -m snnconv.config_reference --write docs/sweeps.md   # rewrite it between the markers
    python -m snnconv.config_reference --check docs/sweeps.md   # exit 1 when the file is stale

Imports neither Ray nor MLflow.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from .config import TrialConfig, field_doc, field_rule
from .method_registry import registered

#: the markers around the generated table in a Markdown file
START = "<!-- config:reference:start -->"
END = "<!-- config:reference:end -->"

#: columns of the generated table
COLUMNS = ("key", "type", "default", "allowed", "meaning")


@dataclass(frozen=True)
class FieldDoc:
    """One row of the reference: a configuration key as the code defines it (plain text, no Markdown)."""

    key: str
    type: str
    default: str
    allowed: str
    meaning: str


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
# the table


def _walk(cls: type, prefix: str) -> Iterator[FieldDoc]:
    hints = get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if item.name == "method_settings":  # one section per registered method, walked by config_fields
            continue
        key = f"{prefix}{item.name}"
        hint = hints[item.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from _walk(hint, f"{key}.")
            continue
        default = _default_of(item)
        rule = field_rule(item)
        yield FieldDoc(key=key, type=type_name(hint),
                       default="(required)" if default is dataclasses.MISSING else repr(default),
                       allowed=rule.text() if rule is not None else "", meaning=field_doc(item))


def config_fields(cls: type = TrialConfig) -> list[FieldDoc]:
    """Every leaf field of ``cls`` and its nested sections, in declaration order; for the trial config
    also each registered method's section (``rnl.lam`` ...), in registration order."""
    rows = list(_walk(cls, ""))
    if cls is TrialConfig:
        for method in registered():
            rows.extend(_walk(method.settings, f"{method.name}."))
    return rows


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
