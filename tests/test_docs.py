"""The documentation agrees with the code: generated tables, links, the README's length, citations.

* the trial-configuration table in ``docs/sweeps.md`` is what ``snnconv.config_reference`` generates;
* the benchmark tables (targets in the README, full tables in ``docs/benchmarks.md``) are what the
  committed ``bench/results/*.json`` give;
* the README stays under 200 lines;
* nothing in the repository's code, configs or docs cites a file outside it;
* every relative link (and heading anchor) in the README and ``docs/*.md`` resolves;
* ``docs/development.md``'s test table names every file in ``tests/``.

No Ray, no MLflow, no training: a few seconds.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import __main__ as bench_suite
from snnconv import config_reference
from snnconv.config import TrialConfig

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MARKDOWN = [README, *sorted(DOCS.glob("*.md"))]

#: where citations of files outside the repository must not appear
SCANNED = ["docs", "configs", "library", "sweeps", "analysis", "bench", "tests", "README.md", "Makefile", ".ci",
           "pyproject.toml", "ray_cluster.yaml", "ray_cluster.local.yaml"]
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".json", ".txt", ".toml", ".cfg", ".sh", ".html", ".csv"}
#: citations of the team's notes outside the repository (spelled in pieces, so that a grep for them
#: over the repository finds none here)
FORBIDDEN = re.compile("|".join(re.escape(name) for name in ("shared" + "/", "DESIGN" + ".md", "algorithms" + ".md")))

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)


def without_code(text: str) -> str:
    """Markdown text with fenced blocks and inline code spans removed (links there are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation and symbols removed,
    spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    kept = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text())):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


# ---------------------------------------------------------------------------------------------
# (i) generated tables


def test_config_table_in_the_docs_is_the_generated_one():
    text = (DOCS / "sweeps.md").read_text()
    block = config_reference.read_block(text)
    assert block is not None, f"docs/sweeps.md lost its markers {config_reference.START} / {config_reference.END}"
    assert block == config_reference.config_table_markdown(), (
        "docs/sweeps.md's trial-configuration table differs from snnconv.config; run "
        "python -m snnconv.config_reference --write docs/sweeps.md")


def test_the_generated_table_covers_every_config_field_once():
    def leaves(config: object, prefix: str = "") -> list[str]:
        keys = []
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            if dataclasses.is_dataclass(value):
                keys += leaves(value, f"{prefix}{field.name}.")
            elif field.name == "method_settings":  # one section per registered method
                for name, section in value.items():
                    keys += leaves(section, f"{prefix}{name}.")
            else:
                keys.append(f"{prefix}{field.name}")
        return keys

    rows = config_reference.config_fields()
    assert [row.key for row in rows] == leaves(TrialConfig())
    assert {"rnl.lam", "qcfs.levels", "datanorm.percentile"} <= {row.key for row in rows}
    by_key = {row.key: row for row in rows}
    # read from the fields: defaults, and each field's declared doc and rule (its metadata)
    assert by_key["rnl.lam"].default == "0.1" and "Rate Inference Loss" in by_key["rnl.lam"].meaning
    assert by_key["rnl.optimizer"].allowed == "one of `sgd`, `adam`"
    assert by_key["model"].allowed.startswith("one of `small`, `vgg11`")
    assert by_key["stage1.lr"].allowed == "> 0" and by_key["qcfs.finetune_epochs"].allowed == ">= 0"
    assert by_key["data.batch_size"].allowed == "> 0"  # checked in a loop over names
    assert by_key["qcfs.al_thresholds"].default == "[20.0, 30.0, 40.0]"
    assert by_key["qcfs.levels"].type == "list[int] | str | None"
    assert by_key["datanorm.percentile"].allowed == "in (0, 100]" and by_key["dropout"].allowed == "in [0, 1)"
    assert by_key["qcfs.al_thresholds"].allowed == "ascending" and by_key["data.download"].allowed == "`false`"


def test_the_table_and_validate_read_the_same_declared_rule():
    """One source: the rule a field declares is what validate checks and what the table prints."""
    import pytest

    from snnconv.config import ConfigError, apply_overrides, field_rule
    from snnconv.methods.datanorm import DatanormConfig

    (percentile,) = [f for f in dataclasses.fields(DatanormConfig) if f.name == "percentile"]
    rule = field_rule(percentile)
    assert rule is not None and rule.text() == "in (0, 100]"
    for bad in (0.0, 100.5, float("nan")):
        with pytest.raises(ConfigError, match=r"datanorm.percentile: must be in \(0, 100\]"):
            apply_overrides(TrialConfig(), {"datanorm.percentile": bad})
    assert apply_overrides(TrialConfig(), {"datanorm.percentile": 100.0}).datanorm.percentile == 100.0


def test_config_reference_command_line(tmp_path):
    stale = tmp_path / "page.md"
    stale.write_text(f"intro\n{config_reference.START}\nold\n{config_reference.END}\nend\n")
    (tmp_path / "bare.md").write_text("no markers\n")
    assert config_reference.main(["--check", str(stale)]) == 1
    assert config_reference.main(["--write", str(stale)]) == 0
    text = stale.read_text()
    assert text.startswith("intro\n") and text.endswith("end\n") and "| `rnl.lam` |" in text
    assert config_reference.main(["--check", str(stale)]) == 0
    assert config_reference.main(["--write", str(tmp_path / "bare.md")]) == 2
    # and as a module, the way the docs tell people to run it
    done = subprocess.run([sys.executable, "-m", "snnconv.config_reference", "--check", str(stale)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_benchmark_tables_are_the_committed_results():
    """README: the targets table; docs/benchmarks.md: the full tables; both from bench/results/*.json
    (``python -m bench --summary-only`` rewrites them)."""
    columns, rows, evidence, details = bench_suite.summary_table(quick=False)
    assert bench_suite.read_block(README) == bench_suite.targets_markdown(columns, rows), \
        "README's benchmark table differs from bench/results; run python -m bench --summary-only"
    full = bench_suite.markdown(columns, rows, evidence, details, collapsed=False).strip()
    assert bench_suite.read_block(bench_suite.DOCS) == full, \
        "docs/benchmarks.md's tables differ from bench/results; run python -m bench --summary-only"
    assert bench_suite.DOCS == DOCS / "benchmarks.md"


# ---------------------------------------------------------------------------------------------
# (ii) - (v)


def test_readme_is_at_most_200_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= 200, f"README.md has {lines} lines; move detail into docs/"


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else path.rglob("*")
        for file in candidates:
            if not file.is_file() or file.suffix not in TEXT_SUFFIXES:
                continue
            if any(part == "__pycache__" or part.endswith(".egg-info") for part in file.relative_to(ROOT).parts):
                continue  # build products (the egg-info holds an old copy of the README)
            files.append(file)
    return files


def test_nothing_cites_files_outside_the_repository():
    files = scanned_files()
    assert len(files) > 40 and README in files and DOCS / "methods.md" in files
    offenders = []
    for file in files:
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
            if FORBIDDEN.search(line):
                offenders.append(f"{file.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not offenders, "cite docs/methods.md instead:\n" + "\n".join(offenders)


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(without_code(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading with anchor #{fragment} in {linked.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_slug_rule():
    assert slug("The operating point: one latency per trial, at which its accuracy is reached") == \
        "the-operating-point-one-latency-per-trial-at-which-its-accuracy-is-reached"
    assert slug("2. RNL + RIL") == "2-rnl--ril"
    assert slug("IF simulation against SpikingJelly (`bench_if`)") == "if-simulation-against-spikingjelly-bench_if"
    assert slug("One trial: `run_trial`") == "one-trial-run_trial"


def test_development_doc_lists_every_test_file():
    text = (DOCS / "development.md").read_text()
    table = text.split("\n## Tests", 1)[1]
    listed = set(re.findall(r"^\| `([\w.]+\.py)` \|", table, re.M))
    present = {path.name for path in (ROOT / "tests").glob("*.py")}
    assert not present - listed, f"docs/development.md's test table misses {sorted(present - listed)}"
    assert not listed - present, f"docs/development.md's test table lists missing files {sorted(listed - present)}"
