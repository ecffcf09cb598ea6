"""The Pareto report of a sweep and the ``analysis/pareto.py`` command line.

``write_report`` turns a ``ParetoAnalysis`` (``snnconv.pareto``) into a folder: ``report.html``
(self-contained: the PNGs are embedded as base64), ``report.md``, ``pareto.csv``, ``summary.json``
and the plots: each accuracy-vs-cost front, the joint front, the acc(t) curves and per-layer L of
the front runs, and with a comparison sweep both fronts on one plot per cost. ``main`` reads the
runs through ``snnconv.tracking`` (MLflow) and prints each front as a table.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import tracking
from .pareto import (ACCURACY, COSTS, DEFAULT_COSTS, JOINT, AnalysisError, ParetoAnalysis, ParetoWarning,
                     analyse, axis_label, check_costs, draw_front, format_cell, format_table, front_table,
                     new_figure, objective_values, parse_levels, plot_front, reference_point, run_label,
                     save_figure, write_front_csv)

# =============================================================================================
# plots beyond the 2-D fronts
# =============================================================================================


def plot_joint(analysis: ParetoAnalysis, path: Path | str) -> Path:
    """PNG of the first two costs against each other, colour = snn_acc, joint-front runs ringed."""
    first, second = analysis.costs[:2]
    values = objective_values(analysis.runs, [first, second, ACCURACY])
    shown = np.isfinite(values).all(axis=1)
    members = analysis.fronts[JOINT].members
    figure = new_figure()
    axes = figure.add_subplot()
    points = axes.scatter(values[shown, 0], values[shown, 1], c=values[shown, 2], cmap="viridis", s=30, zorder=2)
    axes.scatter(values[members, 0], values[members, 1], s=110, facecolor="none", edgecolor="crimson",
                 linewidth=1.3, zorder=3, label=f"front of snn_acc + {' + '.join(analysis.costs)}")
    figure.colorbar(points, ax=axes, label=axis_label(ACCURACY))
    axes.set_xlabel(axis_label(first))
    axes.set_ylabel(axis_label(second))
    axes.set_title("joint front")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return save_figure(figure, path)


def plot_acc_curves(runs: pd.DataFrame, curves: Mapping[str, pd.Series], path: Path | str) -> Path | None:
    """PNG of acc(t) of ``runs`` that have a curve (``curves[run_id]``: value by step t), with each run's
    ANN accuracy dashed in the same colour; None when no run has a curve."""
    rows = [row for _, row in runs.iterrows() if row["run_id"] in curves]
    if not rows:
        return None
    figure = new_figure(7.0, 4.6)
    axes = figure.add_subplot()
    for index, row in enumerate(rows):
        colour = f"C{index % 10}"
        curve = curves[row["run_id"]]
        axes.plot(curve.index.to_numpy(), curve.to_numpy(), color=colour, linewidth=1.4,
                  label=f"{row.get('run_name')}: {run_label(row)}")
        ann = pd.to_numeric(pd.Series([row.get("ann_acc")]), errors="coerce").iloc[0]
        if np.isfinite(ann):
            axes.axhline(ann, color=colour, linestyle="--", linewidth=0.9, alpha=0.8)
    axes.plot([], [], color="0.3", linestyle="--", linewidth=0.9, label="ANN accuracy")
    axes.set_xlabel("time step t")
    axes.set_ylabel("SNN accuracy after t steps (%)")
    axes.set_title("acc(t) of the front runs")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    return save_figure(figure, path)


def plot_levels(runs: pd.DataFrame, path: Path | str) -> Path | None:
    """PNG of the per-layer L of the qcfs rows of ``runs`` (log2 axis); None when there is none."""
    rows = [(row, parse_levels(row.get("levels"))) for _, row in runs.iterrows() if row.get("method") == "qcfs"]
    rows = [(row, levels) for row, levels in rows if levels]
    if not rows:
        return None
    figure = new_figure(7.0, 4.2)
    axes = figure.add_subplot()
    for index, (row, levels) in enumerate(rows):
        layers = np.arange(1, len(levels) + 1)
        axes.plot(layers, levels, marker="o", drawstyle="steps-mid", color=f"C{index % 10}",
                  linewidth=1.2, label=f"{row.get('run_name')}: {run_label(row)}")
    axes.set_yscale("log", base=2)
    ticks = sorted({v for _, levels in rows for v in levels})
    axes.set_yticks(ticks, [str(v) for v in ticks])
    axes.set_xlabel("activation layer")
    axes.set_ylabel("levels L")
    axes.set_title("per-layer L of the front's qcfs runs")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    return save_figure(figure, path)


def plot_compare(sweeps: Sequence[tuple[str, ParetoAnalysis]], cost: str, path: Path | str) -> Path:
    """PNG of each sweep's snn_acc-vs-``cost`` front on one axes, hypervolume in the legend."""
    figure = new_figure()
    axes = figure.add_subplot()
    for index, (name, analysis) in enumerate(sweeps):
        front = analysis.fronts[cost]
        draw_front(axes, analysis.runs, cost, ACCURACY, colour=f"C{index}", annotate=False, show_dominated=False,
                   label=f"{name}: HV {front.hypervolume:.4g} ({front.hypervolume_norm:.3f})")
    axes.set_xlabel(axis_label(cost))
    axes.set_ylabel(axis_label(ACCURACY))
    axes.set_title(f"fronts compared: snn_acc vs {cost}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return save_figure(figure, path)


# =============================================================================================
# the report folder
# =============================================================================================


@dataclass
class Comparison:
    """Another sweep analysed with the same reference point, shown beside the main one."""

    name: str
    analysis: ParetoAnalysis


@dataclass
class Report:
    """What ``write_report`` wrote: the folder and its files (plots by name, e.g. "front_omega")."""

    folder: Path
    html: Path
    markdown: Path
    csv: Path
    summary: Path
    plots: dict[str, Path]


def summary_dict(analysis: ParetoAnalysis) -> dict[str, Any]:
    """JSON-ready facts: counts, reference point, and per front its size, knee run, hypervolume."""
    fronts = {}
    for name, front in analysis.fronts.items():
        knee = analysis.runs.iloc[front.knee] if front.knee is not None else None
        fronts[name] = {
            "objectives": list(front.objectives), "size": front.size,
            "run_ids": analysis.runs.loc[front.members, "run_id"].tolist(),
            "knee_run_id": None if knee is None else knee["run_id"],
            "hypervolume": front.hypervolume, "hypervolume_norm": front.hypervolume_norm,
            "reference": list(front.reference),
        }
    return {"counts": analysis.counts, "costs": list(analysis.costs), "reference": analysis.reference,
            "skipped": analysis.skipped, "fronts": fronts}


def write_report(analysis: ParetoAnalysis, folder: Path | str, *, title: str, name: str = "this sweep",
                 facts: Mapping[str, str] | None = None, curves: Mapping[str, pd.Series] | None = None,
                 comparison: Comparison | None = None) -> Report:
    """Write the report folder: plots, ``pareto.csv``, ``summary.json``, ``report.md``, ``report.html``.

    ``name`` labels this sweep beside a comparison; ``facts`` are shown at the top (e.g. sweep id,
    experiment); ``curves`` maps run ids to their acc(t) series (value by step t); ``comparison``
    adds both sweeps' fronts on one plot per cost and their hypervolumes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plots = _write_plots(analysis, name, folder, curves or {}, comparison)
    csv = write_front_csv(analysis, folder / "pareto.csv")
    summary = summary_dict(analysis)
    if comparison is not None:
        summary["comparison"] = {"name": comparison.name, **summary_dict(comparison.analysis)}
    summary_path = folder / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=_json_default))
    sections = _report_sections(analysis, name, plots, comparison)
    facts = dict(facts or {})
    markdown = folder / "report.md"
    markdown.write_text(_render_markdown(title, facts, sections))
    page = folder / "report.html"
    page.write_text(_render_html(title, facts, sections))
    return Report(folder=folder, html=page, markdown=markdown, csv=csv, summary=summary_path, plots=plots)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_plots(analysis: ParetoAnalysis, name: str, folder: Path, curves: Mapping[str, pd.Series],
                 comparison: Comparison | None) -> dict[str, Path]:
    """Every PNG of the report, by name (acc(t) and levels only when there is something to draw)."""
    plots = {f"front_{cost}": plot_front(analysis.runs, cost, ACCURACY, folder / f"front_{cost}.png",
                                         title=f"snn_acc vs {cost}: {analysis.fronts[cost].size} run(s) on the front")
             for cost in analysis.costs}
    if JOINT in analysis.fronts:
        plots["front_joint"] = plot_joint(analysis, folder / "front_joint.png")
    on_fronts = analysis.members_of_any_2d_front()
    optional = {"acc_curves": plot_acc_curves(on_fronts, curves, folder / "acc_curves.png"),
                "levels": plot_levels(on_fronts, folder / "levels.png")}
    plots.update({name: path for name, path in optional.items() if path is not None})
    if comparison is not None:
        sweeps = [(name, analysis), (comparison.name, comparison.analysis)]
        plots.update({f"compare_{cost}": plot_compare(sweeps, cost, folder / f"compare_{cost}.png")
                      for cost in analysis.costs})
    return plots


@dataclass
class _Section:
    heading: str
    text: str = ""
    table: pd.DataFrame | None = None
    image: Path | None = None


def hypervolume_table(analysis: ParetoAnalysis, name: str = "this sweep",
                      comparison: Comparison | None = None) -> pd.DataFrame:
    """One row per front (and per sweep with a comparison): size, knee, hypervolume, reference."""
    rows = []
    for sweep, result in [(name, analysis)] + ([(comparison.name, comparison.analysis)] if comparison else []):
        for name, front in result.fronts.items():
            knee = result.runs.iloc[front.knee]["run_name"] if front.knee is not None else "-"
            rows.append({"sweep": sweep, "front": " vs ".join(front.objectives), "runs on front": front.size,
                         "knee": knee, "hypervolume": front.hypervolume, "hypervolume (fraction of box)":
                         front.hypervolume_norm, "reference": ", ".join(f"{v:.4g}" for v in front.reference)})
    return pd.DataFrame(rows)


def _report_sections(analysis: ParetoAnalysis, name: str, plots: Mapping[str, Path],
                     comparison: Comparison | None) -> list[_Section]:
    """The report's sections in order: overview, each front, acc(t), per-layer L, comparison."""
    counts = analysis.counts
    skipped = "; ".join(f"{metric}: {', '.join(names)}" for metric, names in analysis.skipped.items())
    overview = (f"{counts['runs']} trial runs: {counts['finished']} finished, {counts['failed']} failed "
                f"(counted, not plotted), {counts['unfinished']} not finished. "
                f"Reference point: {', '.join(f'{k} = {v:.4g}' for k, v in analysis.reference.items())}."
                + (f" Left out for a missing/NaN/inf value: {skipped}." if skipped else ""))
    sections = [_Section("Overview", overview, table=hypervolume_table(analysis, name, comparison))]
    for cost in analysis.costs:
        front = analysis.fronts[cost]
        knee = analysis.runs.iloc[front.knee]["run_name"] if front.knee is not None else "-"
        sections.append(_Section(f"Front: snn_acc vs {cost}", f"{front.size} run(s) on the front; knee: {knee}.",
                                 table=front_table(analysis.front_runs(cost)), image=plots.get(f"front_{cost}")))
    if JOINT in analysis.fronts:
        front = analysis.fronts[JOINT]
        sections.append(_Section(f"Front: snn_acc + {' + '.join(analysis.costs)}",
                                 f"{front.size} run(s) on the front of all objectives together.",
                                 table=front_table(analysis.front_runs(JOINT)), image=plots.get("front_joint")))
    sections.append(_Section("Accuracy against time steps", "acc(t) of the runs on a front; dashed: ANN accuracy."
                             if "acc_curves" in plots else "No run on a front logged snn_acc_t.",
                             image=plots.get("acc_curves")))
    sections.append(_Section("Per-layer L", "L of each layer for the front's qcfs runs."
                             if "levels" in plots else "No qcfs run on a front.", image=plots.get("levels")))
    if comparison is not None:
        for cost in analysis.costs:
            sections.append(_Section(f"Compared with {comparison.name}: snn_acc vs {cost}",
                                     image=plots.get(f"compare_{cost}")))
    return sections


def _markdown_table(table: pd.DataFrame) -> str:
    """``table`` as a GitHub-flavoured Markdown table (NaN as '-')."""
    if table.empty:
        return "(no runs)"
    shown = table.apply(lambda column: column.map(format_cell))
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in shown.to_numpy()]
    return "\n".join(lines)


def _render_markdown(title: str, facts: Mapping[str, str], sections: Sequence[_Section]) -> str:
    lines = [f"# {title}", ""] + [f"- **{key}**: {value}" for key, value in facts.items()] + [""]
    for section in sections:
        lines += [f"## {section.heading}", ""]
        if section.text:
            lines += [section.text, ""]
        if section.image is not None:
            lines += [f"![{section.heading}]({section.image.name})", ""]
        if section.table is not None:
            lines += [_markdown_table(section.table), ""]
    return "\n".join(lines)


_STYLE = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222}"
          "table{border-collapse:collapse;font-size:.85em;margin:.5em 0}"
          "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#f3f3f3}"
          "img{max-width:100%;border:1px solid #eee}")


def _render_html(title: str, facts: Mapping[str, str], sections: Sequence[_Section]) -> str:
    """A single self-contained page: the PNGs are embedded as base64 data URIs."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><ul>"]
    parts += [f"<li><b>{html.escape(key)}</b>: {html.escape(str(value))}</li>" for key, value in facts.items()]
    parts.append("</ul>")
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        if section.image is not None:
            encoded = base64.b64encode(section.image.read_bytes()).decode("ascii")
            parts.append(f"<img alt='{html.escape(section.heading)}' src='data:image/png;base64,{encoded}'>")
        if section.table is not None:
            parts.append(section.table.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    parts.append("</body></html>")
    return "\n".join(parts)


# =============================================================================================
# command line (``analysis/pareto.py``)
# =============================================================================================


def build_parser() -> argparse.ArgumentParser:
    """The ``analysis/pareto.py`` arguments."""
    parser = argparse.ArgumentParser(
        prog="analysis/pareto.py",
        description="Pareto fronts of a sweep's trial runs in MLflow (snn_acc against omega, t_eff, energy): "
                    "prints each front and writes a report folder (report.html, report.md, pareto.csv, PNGs).")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    parser.add_argument("--experiment", default="snnconv", help="experiment name (default: snnconv)")
    parser.add_argument("--sweep", default=None, metavar="RUN_ID",
                        help="parent run id of the sweep (default: the experiment's latest sweep)")
    parser.add_argument("--out", default=None, type=Path, metavar="DIR",
                        help="report folder (default: reports/<sweep run name>)")
    parser.add_argument("--objectives", nargs="+", default=list(DEFAULT_COSTS), metavar="COST",
                        help=f"costs to trade snn_acc against, each from {list(COSTS)} "
                             f"(default: omega t_eff; add energy_mj for a third)")
    parser.add_argument("--compare", default=None, metavar="RUN_ID",
                        help="parent run id of another sweep of the experiment: both fronts on one plot, "
                             "with the hypervolume of each")
    parser.add_argument("--log-to-mlflow", action="store_true",
                        help="attach the report folder to the sweep's parent run under report/")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the analysis; 0 on success, 1 with a one-line ``error:`` message for a user error.

    Warnings (runs left out of a front) go to stderr as ``warning: ...`` lines as they arise.
    """
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", ParetoWarning)
        warnings.showwarning = _print_warning
        try:
            return _run(args)
        except (AnalysisError, tracking.TrackingError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1


def _print_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    costs = check_costs(args.objectives)
    sweep = tracking.load_sweep(args.tracking_uri, args.experiment, args.sweep)
    other = tracking.load_sweep(args.tracking_uri, args.experiment, args.compare) if args.compare else None
    tables = [sweep.trials] + ([other.trials] if other is not None else [])
    reference = reference_point(tables, costs)
    analysis = analyse(sweep.trials, costs, reference)
    comparison = Comparison(other.sweep_name, analyse(other.trials, costs, reference)) if other is not None else None
    on_fronts = analysis.members_of_any_2d_front()
    curves = tracking.metric_histories(sweep.tracking_uri, on_fronts["run_id"], "snn_acc_t")
    folder = args.out or Path("reports") / sweep.sweep_name
    facts = {"sweep": f"{sweep.sweep_name} ({sweep.sweep_id})", "experiment": sweep.experiment_name,
             "preset": sweep.preset or "-", "tracking URI": sweep.tracking_uri,
             "objectives": f"snn_acc (max) vs {', '.join(costs)} (min)"}
    if other is not None:
        facts["compared with"] = f"{other.sweep_name} ({other.sweep_id})"
    report = write_report(analysis, folder, title=f"Pareto fronts of {sweep.sweep_name}", name=sweep.sweep_name,
                          facts=facts, curves=curves, comparison=comparison)
    _print_summary(sweep.sweep_name, analysis, comparison)
    if args.log_to_mlflow:
        tracking.attach_report(sweep.tracking_uri, sweep.sweep_id, report.folder)
        print(f"report attached to run {sweep.sweep_id} under report/")
    print(f"report: {report.html.resolve()}")
    return 0


def _print_summary(name: str, analysis: ParetoAnalysis, comparison: Comparison | None) -> None:
    """Counts, each 2-D front as a table (best accuracy first), and the hypervolumes compared."""
    counts = analysis.counts
    print(f"sweep {name}: {counts['runs']} trial runs, {counts['finished']} finished, {counts['failed']} failed, "
          f"{counts['unfinished']} not finished")
    for cost in analysis.costs:
        front = analysis.fronts[cost]
        knee = analysis.runs.iloc[front.knee]["run_name"] if front.knee is not None else "-"
        print(f"\nfront snn_acc vs {cost}: {front.size} run(s), knee {knee}, hypervolume {front.hypervolume:.4g} "
              f"({front.hypervolume_norm:.3f} of the box)")
        print(format_table(front_table(analysis.front_runs(cost))))
    if JOINT in analysis.fronts:
        print(f"\nfront snn_acc + {' + '.join(analysis.costs)}: {analysis.fronts[JOINT].size} run(s)")
    if comparison is not None:
        print()
        print(format_table(hypervolume_table(analysis, name, comparison)))
    print()
