"""The whole benchmark suite: ``python -m bench [--quick] [--only NAME ...] [--no-readme]``.

Runs each benchmark in its own process (so one's memory and threads cannot disturb the next), each
printing its evidence header (machine, CPU threads or GPU, versions, date) and its table and writing
``bench/results/<name>.json`` (``<name>_quick.json`` with ``--quick``). Then it prints one summary
table of every target and, for a full run, rewrites the results blocks (between the markers
``<!-- bench:results:start -->`` and ``<!-- bench:results:end -->``) from those JSON files: the
README gets the targets table, ``docs/benchmarks.md`` the full tables (targets, every figure the
prose quotes, the evidence of each run), and ``docs/reliability.md`` gets the tracking server's load
table (``bench_tracking``). So the numbers in all three are always the latest run's;
``tests/test_docs.py`` and ``tests/test_tracking_load.py`` check that they equal what the committed
JSON files give.

Benchmarks: ``bench_if`` (IF simulation vs T x ANN and SpikingJelly), ``bench_pascal`` (PASCAL
exact and spike-level inference vs the QCFS ANN), ``bench_sweep`` (sweep overhead, stage-1 cache),
``pareto`` (front computation vs Optuna), ``bench_tracking`` (the MLflow server under a sweep's load,
SQLite vs PostgreSQL store, and the report on 5,000 runs).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
#: the full tables (targets, figures, evidence); the README holds only the targets
DOCS = ROOT / "docs" / "benchmarks.md"
#: the tracking server's load table (``bench_tracking.load_markdown``)
RELIABILITY = ROOT / "docs" / "reliability.md"
BENCHMARKS = ("bench_if", "bench_pascal", "bench_sweep", "pareto", "bench_tracking")
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"

sys.path.insert(0, str(ROOT))
from bench.common import print_table  # noqa: E402


def result_path(name: str, quick: bool) -> Path:
    return RESULTS / f"{name}{'_quick' if quick else ''}.json"


def _row(benchmark: str, measure: str, value: Any, target: str, met: bool | None) -> dict[str, Any]:
    return {"benchmark": benchmark, "measure": measure, "value": value, "target": target, "met": met}


def summary_rows(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The target rows of one benchmark's JSON (its own ``summary`` list where it has one)."""
    if "summary" in data:
        return list(data["summary"])
    if name == "bench_if":
        return [
            _row("IF simulation (RNL), VGG16, T=32", "time / (T x ANN forward)", data["time_ratio"],
                 f"<= {data['time_target']}", data["time_ratio"] <= data["time_target"]),
            _row("IF simulation (RNL), VGG16, T=32", "peak working memory / one ANN forward",
                 data["memory_ratio_working"], f"<= {data['memory_target']}",
                 data["memory_ratio_working"] <= data["memory_target"]),
        ]
    if name == "bench_pascal":
        config = data["config"]
        label = f"PASCAL, {config['model']}, mixed L (T_max={config['t_max']})"
        return [
            _row(label, "exact inference / one QCFS ANN forward", data["ratio_to_ann"]["exact"],
                 f"<= {data['targets']['exact_ratio_max']}", data["meets_targets"]["exact"]),
            _row(label, "spike-level path / one QCFS ANN forward", data["ratio_to_ann"]["spike"],
                 f"<= T_max = {data['targets']['spike_ratio_max']}", data["meets_targets"]["spike"]),
            _row(label, "exact inference equals the ANN", "yes" if data["exact_equals_ann"] else "no", "yes",
                 bool(data["exact_equals_ann"])),
        ]
    if name == "bench_sweep":
        overhead, cache = data["overhead"], data["cache"]
        trials = int(cache["shared"]["trials"])
        rows = [_row(f"sweep, demo ({int(overhead['trials'])} trials)", "overhead over the trials' own compute",
                     overhead["overhead"], f"<= {data['targets']['overhead']}", data["met"]["overhead"])]
        if data.get("overhead_64"):
            rows.append(_row(f"sweep, demo ({int(data['overhead_64']['trials'])} trials)",
                             "overhead over the trials' own compute", data["overhead_64"]["overhead"],
                             f"<= {data['targets']['overhead']}", data["met"]["overhead_64"]))
        share = data["targets"].get("cache_bound_share")
        target = (f">= {share} x bound = {data['targets']['cache_speedup']:.2f}" if share
                  else f">= {data['targets']['cache_speedup']}")
        rows.append(_row(f"sweep, {trials} RNL trials", "speed-up of the shared stage-1 cache", cache["speedup"],
                         target, data["met"]["cache_speedup"]))
        return rows
    if name == "pareto":
        worst = max(row["ours / optuna"] for row in data["rows"] if row["what"] == "pareto_mask")
        return [_row("Pareto fronts (5000 runs)", "non-dominated sort / Optuna's (worst case)", worst, "(none)", None)]
    return []


def detail_rows(name: str, data: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(benchmark, figure, value): the figures the README's prose quotes, from one JSON."""
    rows: list[tuple[str, str, Any]] = [(name, figure, value) for figure, value in data.get("details", {}).items()]
    if name == "bench_if":
        for row in data.get("table", []):
            rows.append((name, f"{row['label']}: seconds (best of n)", row["seconds"]))
            rows.append((name, f"{row['label']}: ratio to T x ANN", row["ratio_to_t_ann"]))
            rows.append((name, f"{row['label']}: peak working memory (MiB)", row["peak_working_mib"]))
        rows.append((name, "snn: time ratio with glibc's default malloc", data["time_ratio_default_malloc"]))
        for what, memory in data["memory"].items():
            if "total_mib" in memory:
                rows.append((name, f"{what}: process peak (MiB)", memory["total_mib"]))
            elif "mib" in memory:
                rows.append((name, f"{what} (MiB)", memory["mib"]))
    elif name == "bench_pascal":
        for path, ms in data["ms"].items():
            rows.append((name, f"{path}: ms (median)", ms))
            rows.append((name, f"{path}: ms (min)", data["min_ms"][path]))
        rows.append((name, "synops per image", data["synops_per_image"]))
    elif name == "bench_sweep":
        overhead, cache = data["overhead"], data["cache"]
        rows += [(name, "Ray start, demo sweep (s, not counted)", data["ray_start_s"])]
        for key, label in (("wall_s", "demo: wall (s)"), ("trial_compute_s", "demo: trials' own compute (s)"),
                           ("ideal_s", "demo: ideal = compute / concurrency (s)"),
                           ("start_s", "demo: start beyond Ray's, MLflow store + parent run (s)"),
                           ("tracking_s", "demo: MLflow logging inside trials, summed (s)"),
                           ("tracking_wall_s", "demo: MLflow logging, share of the wall time (s)"),
                           ("tune_extra_s", "demo: Tune beyond ideal and logging (s)"),
                           ("finish_s", "demo: finish, fronts + plots + tags (s)")):
            rows.append((name, label, overhead[key]))
        rows += [(name, "cache: wall with the cache (s)", cache["shared"]["wall_s"]),
                 (name, "cache: wall retraining per trial (s)", cache["retrain"]["wall_s"]),
                 (name, "cache: one stage-1 training, S1 = mean of the retraining sweep's (s)",
                  cache["retrain"]["stage1_s"]),
                 (name, "cache: the shared sweep's one stage-1 training (s)", cache["shared"]["stage1_s"]),
                 (name, "cache: a trial loading stage 1, S2 (s)", cache["shared"]["cached_trial_s"]),
                 (name, "cache: bound (S1 + S2) / (S2 + S1/N)", cache["speedup_bound"])]
    elif name == "pareto":
        for row in data["rows"]:
            rows.append((name, f"{row['what']} ({row['runs']}, n={row['n']}, d={row['d']}): ours / Optuna",
                         row["ours / optuna"]))
        rows.append((name, f"sweep end, {data['sweep_end']['n']} runs: write_sweep_fronts (ms)",
                     data["sweep_end"]["write_sweep_fronts_ms"]))
    return rows


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 1e6:
        return f"{value:.3e}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _met(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "-"}[met]


def summary_table(quick: bool) -> tuple[list[str], list[list[str]], list[dict[str, str]], list[list[str]]]:
    """(columns, target rows, evidence per benchmark, detail rows) from the result files present."""
    rows, evidence, details = [], [], []
    for name in BENCHMARKS:
        path = result_path(name, quick)
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        facts = data.get("evidence") or data.get("header") or {}
        evidence.append({"benchmark": name, **{k: str(v) for k, v in facts.items()}})
        for row in summary_rows(name, data):
            rows.append([row["benchmark"], row["measure"], _format(row["value"]), row["target"], _met(row["met"])])
        details += [[bench, figure, _format(value)] for bench, figure, value in detail_rows(name, data)]
    return ["benchmark", "measure", "value", "target", "status"], rows, evidence, details


def markdown(columns: list[str], rows: list[list[str]], evidence: list[dict[str, str]],
             details: list[list[str]] | None = None, collapsed: bool = True) -> str:
    """The targets table, then (if given) every figure, folded away unless not ``collapsed``, then
    one evidence line per benchmark."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    if details:
        title = "All figures of the latest run (what the prose quotes)"
        lines += [f"<details><summary>{title}</summary>", ""] if collapsed else [f"{title}:", ""]
        lines += ["| benchmark | figure | value |", "|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in details]
        lines += ["", "</details>", ""] if collapsed else [""]
    for facts in evidence:
        details = "; ".join(f"{k}: {v}" for k, v in facts.items() if k != "benchmark")
        lines.append(f"- `{facts['benchmark']}` — {details}")
    return "\n".join(lines)


def targets_markdown(columns: list[str], rows: list[list[str]]) -> str:
    """The targets table alone (the README's block)."""
    return markdown(columns, rows, []).rstrip("\n")


def read_block(path: Path) -> str | None:
    """What ``path`` holds between the results markers (stripped), or None when they are missing."""
    content = path.read_text()
    if START not in content or END not in content:
        return None
    return content.split(START, 1)[1].split(END, 1)[0].strip()


def update_readme(text: str, path: Path = README) -> bool:
    """Replace the results block of ``path`` (the README by default) with ``text``; False when the
    markers are missing."""
    content = path.read_text()
    if START not in content or END not in content:
        return False
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    return True


def reliability_block() -> str | None:
    """The results block of ``docs/reliability.md``: the tracking server's load table from the committed
    ``bench_tracking.json`` (None when there is none)."""
    path = result_path("bench_tracking", False)
    if not path.is_file():
        return None
    from bench.bench_tracking import load_markdown

    return load_markdown(json.loads(path.read_text()))


def update_docs(columns: list[str], rows: list[list[str]], evidence: list[dict[str, str]],
                details: list[list[str]], readme: Path = README, docs: Path = DOCS,
                reliability: Path = RELIABILITY) -> list[Path]:
    """Rewrite the results blocks: the targets in ``readme``, the full tables in ``docs``, the load
    table in ``reliability``. Returns the files whose markers were found (and so were rewritten)."""
    written = []
    if update_readme(targets_markdown(columns, rows), readme):
        written.append(readme)
    if update_readme(markdown(columns, rows, evidence, details, collapsed=False), docs):
        written.append(docs)
    block = reliability_block()
    if block is not None and update_readme(block, reliability):
        written.append(reliability)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke run of every benchmark")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--no-readme", action="store_true",
                        help="do not rewrite the results tables of README.md and docs/benchmarks.md")
    parser.add_argument("--summary-only", action="store_true", help="run nothing; summarise the result files")
    args = parser.parse_args(argv)

    failed = []
    if not args.summary_only:
        for name in args.only or BENCHMARKS:
            command = [sys.executable, "-m", f"bench.{name}", "--out", str(result_path(name, args.quick))]
            if args.quick:
                command.append("--quick")
            print(f"\n$ {' '.join(command[1:])}", flush=True)
            if subprocess.run(command, cwd=ROOT).returncode != 0:
                failed.append(name)
    columns, rows, evidence, details = summary_table(args.quick)
    print("\n== targets")
    print_table(columns, rows)
    if not args.quick and not args.no_readme and not args.only:
        for path in update_docs(columns, rows, evidence, details):
            print(f"\n{path.relative_to(ROOT)}: results table rewritten from {RESULTS.relative_to(ROOT)}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
