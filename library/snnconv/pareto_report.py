"""The Pareto report of a sweep and the ``analysis/pareto.py`` command line.

``write_report`` turns a ``ParetoAnalysis`` (``snnconv.pareto``) into a folder: ``report.html``
(self-contained: the PNGs are embedded as base64), ``report.md``, ``pareto.csv``, ``summary.json``
and the plots: each front (``front_latency.png``, ``front_energy.png``, ``front_omega.png`` with
one panel per method), the joint front, the acc(t) curves of the front's rnl runs with their
operating points, the per-layer L of the front's qcfs runs, and with a comparison sweep both
sweeps' fronts on one plot per front. ``main`` reads the runs through ``snnconv.tracking`` (MLflow)
and prints each front as a table.

Which accuracy a front maximises comes from ``--select-on`` (default: the sweep's own
``snnconv.select_on`` tag): ``val_acc_op`` (validation split) or ``acc_op`` (test split; the report
then warns that the fronts are biased). A sweep logged before operating points existed (no
``select_on`` tag, no ``t_op`` / ``val_acc_op`` metrics) gets the legacy fronts of
``pareto.analyse_legacy`` and a warning that they were chosen on the test split.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import json
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import paired, tracking
from .fixed_latency import STEP_CURVES, Published, fixed_latency_table, parse_published, references_text
from .pareto import (
    FRONT_NAMES,
    JOINT,
    LEGACY_FRONTS,
    AnalysisError,
    ParetoAnalysis,
    ParetoWarning,
    accuracy_column,
    analyse,
    analyse_legacy,
    ann_energies,
    as_number,
    axis_label,
    draw_front,
    format_cell,
    format_table,
    front_table,
    is_legacy,
    latency_text,
    method_names,
    method_style,
    new_figure,
    objective_values,
    ordered_methods,
    panel_title,
    parse_levels,
    plot_front,
    reference_point,
    resolve_fronts,
    run_label,
    run_ref,
    save_figure,
    write_front_csv,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: what the report and the command line say when the fronts are chosen on the test split
TEST_SPLIT_WARNING = ("the fronts are chosen on the test split (acc_op): choosing on it biases the fronts, and the "
                      "test split then no longer gives an unbiased estimate of the chosen points' accuracy; "
                      "choose on the validation split (--select-on val) for trustworthy fronts")
#: what they say for a sweep logged before operating points existed
LEGACY_WARNING = ("this sweep was logged before operating points existed: its fronts are selected on the test "
                  "split (snn_acc), so they are biased, and its latency t_eff mixes two definitions (IF time "
                  "steps for rnl, PASCAL T_eff for qcfs); rerun the sweep for trustworthy fronts")
#: the exit status of a user error (as argparse uses for a bad option)
USER_ERROR = 2
#: the stepped metrics drawn in the acc(t) plot: rnl's validation and test curves; legacy: snn_acc_t
VAL_CURVE, TEST_CURVE = "val_snn_acc_t", "snn_acc_t"

# =============================================================================================
# plots beyond the fronts
# =============================================================================================


def _finish(figure: Figure, axes: Axes, path: Path | str, *, xlabel: str, ylabel: str, title: str,
            legend_size: int, legend_loc: str) -> Path:
    """Label, grid and legend a single-axes figure the report's way, then write it as PNG to ``path``."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=legend_size, loc=legend_loc)
    return save_figure(figure, path)


def plot_joint(analysis: ParetoAnalysis, path: Path | str) -> Path:
    """PNG of the joint front's first two costs against each other (marker = method, colour =
    accuracy), joint-front runs ringed."""
    front = analysis.fronts[JOINT]
    first, second = front.objectives[1:3]
    values = objective_values(analysis.runs, [first, second, analysis.accuracy])
    shown = np.isfinite(values).all(axis=1)
    methods = method_names(analysis.runs)
    figure = new_figure()
    axes = figure.add_subplot()
    low, high = (values[shown, 2].min(), values[shown, 2].max()) if shown.any() else (0.0, 100.0)
    points = None
    for method in ordered_methods(methods[shown]):
        pick = shown & (methods == method)
        points = axes.scatter(values[pick, 0], values[pick, 1], c=values[pick, 2], cmap="viridis", vmin=low,
                              vmax=high, marker=method_style(method)[1], s=30, zorder=2, label=method)
    axes.scatter(values[front.members, 0], values[front.members, 1], s=110, facecolor="none", edgecolor="crimson",
                 linewidth=1.3, zorder=3, label=f"front of {' + '.join(front.objectives)}")
    if points is not None:
        figure.colorbar(points, ax=axes, label=axis_label(analysis.accuracy))
    return _finish(figure, axes, path, xlabel=axis_label(first), ylabel=axis_label(second), title="joint front",
                   legend_size=8, legend_loc="best")


def plot_operating_curves(runs: pd.DataFrame, val_curves: Mapping[str, pd.Series],
                          test_curves: Mapping[str, pd.Series], path: Path | str) -> Path | None:
    """PNG of acc(t) of the rnl rows of ``runs``: ``val_snn_acc_t`` solid, ``snn_acc_t`` dotted in
    the same colour, the operating point (t_op, val_acc_op) as a dot; None when no rnl run has a curve.

    qcfs runs are left out: their operating point is PASCAL's exact T_eff, not a point of an IF curve.
    """
    rows = [row for _, row in runs.iterrows()
            if row.get("method") == "rnl" and (row["run_id"] in val_curves or row["run_id"] in test_curves)]
    if not rows:
        return None
    figure = new_figure(7.0, 4.6)
    axes = figure.add_subplot()
    for index, row in enumerate(rows):
        colour, label = f"C{index % 10}", f"{row.get('run_name')}: {run_label(row)}"
        for curves, style in ((val_curves, "-"), (test_curves, ":")):
            if row["run_id"] in curves:
                curve = curves[row["run_id"]]
                axes.plot(curve.index.to_numpy(), curve.to_numpy(), color=colour, linestyle=style, linewidth=1.4,
                          label=label)
                label = None  # one legend entry per run
        t_op, val_acc = as_number(row.get("t_op")), as_number(row.get("val_acc_op"))
        if np.isfinite(t_op) and np.isfinite(val_acc):
            axes.scatter([t_op], [val_acc], color=colour, s=40, zorder=4, edgecolor="black", linewidth=0.6)
    axes.plot([], [], color="0.3", linestyle="-", label="validation acc(t)")
    axes.plot([], [], color="0.3", linestyle=":", label="test acc(t)")
    axes.scatter([], [], color="0.6", edgecolor="black", linewidth=0.6, s=40,
                 label="operating point (t_op, val_acc_op)")
    return _finish(figure, axes, path, xlabel="IF time step t", ylabel="SNN accuracy after t steps (%)",
                   title="acc(t) of the front's rnl runs",
                   legend_size=7, legend_loc="lower right")


def plot_acc_curves(runs: pd.DataFrame, curves: Mapping[str, pd.Series], path: Path | str) -> Path | None:
    """Legacy sweeps: PNG of ``snn_acc_t`` of ``runs`` that have a curve (``curves[run_id]``: value
    by step t), each run's ANN accuracy dashed in the same colour; None when no run has a curve."""
    rows = [row for _, row in runs.iterrows() if row["run_id"] in curves]
    if not rows:
        return None
    figure = new_figure(7.0, 4.6)
    axes = figure.add_subplot()
    for index, row in enumerate(rows):
        colour = f"C{index % 10}"
        curve = curves[row["run_id"]]
        axes.plot(curve.index.to_numpy(), curve.to_numpy(), color=colour, linewidth=1.4,
                  label=f"{row.get('run_name')}: {run_label(row, with_latency=False)}")
        ann = as_number(row.get("ann_acc"))
        if np.isfinite(ann):
            axes.axhline(ann, color=colour, linestyle="--", linewidth=0.9, alpha=0.8)
    axes.plot([], [], color="0.3", linestyle="--", linewidth=0.9, label="ANN accuracy")
    return _finish(figure, axes, path, xlabel="time step t", ylabel="SNN test accuracy after t steps (%)",
                   title="acc(t) of the front runs",
                   legend_size=7, legend_loc="lower right")


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
    return _finish(figure, axes, path, xlabel="activation layer", ylabel="levels L",
                   title="per-layer L of the front's qcfs runs",
                   legend_size=7, legend_loc="best")


def plot_compare(sweeps: Sequence[tuple[str, ParetoAnalysis]], name: str, path: Path | str) -> Path:
    """PNG of each sweep's front ``name`` on one axes (one panel per method for a per-method
    front), each front's hypervolume in the legend."""
    spec = sweeps[0][1].spec(name)
    methods = ordered_methods({f.method for _, a in sweeps for f in a.spec_fronts(name)}) if spec.per_method else [None]
    figure = new_figure(5.6 * len(methods) if spec.per_method else 6.4, 4.6)
    for axes, method in zip(figure.subplots(1, len(methods), squeeze=False)[0], methods):
        key = name if method is None else f"{name}:{method}"
        for index, (sweep, analysis) in enumerate(sweeps):
            front = analysis.fronts.get(key)
            if front is None:
                continue
            rows = analysis.runs if method is None else analysis.runs[method_names(analysis.runs) == method]
            label = f"{sweep}: HV {front.hypervolume:.4g} ({front.hypervolume_norm:.3f})"
            draw_front(axes, rows, analysis.accuracy, spec.cost, colour=f"C{index}", annotate=False,
                       show_dominated=False, label=label)
        axes.set_xlabel(spec.axis)
        axes.set_ylabel(axis_label(sweeps[0][1].accuracy))
        if method is not None:
            axes.set_title(panel_title(spec, method), fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="best")
    figure.suptitle(f"fronts compared: {sweeps[0][1].accuracy} vs {spec.cost}")
    return save_figure(figure, path)


# =============================================================================================
# the report folder
# =============================================================================================


@dataclass
class Comparison:
    """Another sweep analysed with the same accuracy and reference point, shown beside the main one."""

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


def selection_text(analysis: ParetoAnalysis) -> str:
    """One sentence: which accuracy the fronts maximise, and how far to trust it."""
    if analysis.legacy:
        return f"Fronts maximise snn_acc (test split). Warning: {LEGACY_WARNING}."
    if analysis.select_on == "test":
        return f"Fronts maximise acc_op (test split). Warning: {TEST_SPLIT_WARNING}."
    return ("Fronts maximise val_acc_op (validation split); acc_op beside it is the test accuracy of the same "
            "operating point, an unbiased estimate of the chosen runs' accuracy.")


def unconverged_text(analysis: ParetoAnalysis) -> str:
    """Which finished runs did not converge within T_max ("" when none)."""
    rows = analysis.unconverged()
    if rows.empty:
        return ""
    names = ", ".join(run_ref(row) for _, row in rows.iterrows())
    return (f"{len(rows)} trial(s) did not converge within T_max (drawn hollow; raise T_max to place their "
            f"operating point): {names}.")


def summary_dict(analysis: ParetoAnalysis) -> dict[str, Any]:
    """JSON-ready facts: counts, accuracy and split, reference point, and per front its size, knee
    run, hypervolume."""
    fronts = {}
    for key, front in analysis.fronts.items():
        knee = analysis.runs.iloc[front.knee] if front.knee is not None else None
        fronts[key] = {
            "front": front.name, "method": front.method, "objectives": list(front.objectives), "size": front.size,
            "run_ids": analysis.runs.loc[front.members, "run_id"].tolist(),
            "knee_run_id": None if knee is None else knee["run_id"],
            "hypervolume": front.hypervolume, "hypervolume_norm": front.hypervolume_norm,
            "reference": list(front.reference),
        }
    return {"counts": analysis.counts, "accuracy": analysis.accuracy, "select_on": analysis.select_on,
            "legacy": analysis.legacy, "fronts_analysed": [s.name for s in analysis.specs],
            "reference": analysis.reference, "skipped": analysis.skipped,
            "unconverged_run_ids": analysis.unconverged()["run_id"].tolist(), "fronts": fronts}


def write_report(analysis: ParetoAnalysis, folder: Path | str, *, title: str, name: str = "this sweep",
                 facts: Mapping[str, str] | None = None, curves: Mapping[str, Mapping[str, pd.Series]] | None = None,
                 comparison: Comparison | None = None, fixed: FixedLatency | None = None) -> Report:
    """Write the report folder: plots, ``pareto.csv``, ``summary.json``, ``report.md``, ``report.html``.

    ``name`` labels this sweep beside a comparison; ``facts`` are shown at the top (e.g. sweep id,
    experiment); ``curves`` maps a stepped metric ("val_snn_acc_t", "snn_acc_t") to ``{run_id:
    Series(value, index=step t)}``; ``comparison`` adds both sweeps' fronts on one plot per front
    and their hypervolumes; ``fixed`` adds the papers' table (accuracy at fixed latencies, the published figures
    beside it).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plots = _write_plots(analysis, name, folder, curves or {}, comparison)
    csv = write_front_csv(analysis, folder / "pareto.csv")
    summary = summary_dict(analysis)
    if comparison is not None:
        summary["comparison"] = {"name": comparison.name, **summary_dict(comparison.analysis)}
    if fixed is not None:
        summary["fixed_latency"] = fixed.table.to_dict(orient="records")
        summary["published"] = [dataclasses.asdict(item) for item in fixed.published]
    summary_path = folder / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=_json_default))
    sections = _report_sections(analysis, name, plots, comparison)
    if fixed is not None:
        sections.insert(len(sections) - (len(analysis.specs) if comparison is not None else 0),
                        _Section("Accuracy at fixed latencies (the papers' format)", fixed.text(), table=fixed.table))
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


def _write_plots(analysis: ParetoAnalysis, name: str, folder: Path, curves: Mapping[str, Mapping[str, pd.Series]],
                 comparison: Comparison | None) -> dict[str, Path]:
    """Every PNG of the report, by name (acc(t) and levels only when there is something to draw)."""
    plots = {f"front_{spec.name}": plot_front(analysis, spec.name, folder / f"front_{spec.name}.png")
             for spec in analysis.specs}
    if JOINT in analysis.fronts:
        plots["front_joint"] = plot_joint(analysis, folder / "front_joint.png")
    on_fronts = analysis.members_of_any_2d_front()
    if analysis.legacy:
        acc_curves = plot_acc_curves(on_fronts, curves.get(TEST_CURVE, {}), folder / "acc_curves.png")
    else:
        acc_curves = plot_operating_curves(on_fronts, curves.get(VAL_CURVE, {}), curves.get(TEST_CURVE, {}),
                                           folder / "acc_curves.png")
    optional = {"acc_curves": acc_curves, "levels": plot_levels(on_fronts, folder / "levels.png")}
    plots.update({key: path for key, path in optional.items() if path is not None})
    if comparison is not None:
        sweeps = [(name, analysis), (comparison.name, comparison.analysis)]
        plots.update({f"compare_{spec.name}": plot_compare(sweeps, spec.name, folder / f"compare_{spec.name}.png")
                      for spec in analysis.specs})
    return plots


@dataclass
class FixedLatency:
    """The papers' table of a sweep (``fixed_latency.fixed_latency_table``) and the published figures in it."""

    table: pd.DataFrame
    published: Sequence[Published] = ()

    def text(self) -> str:
        text = ("For each method and latency: the run with the best validation accuracy there, and its test accuracy "
                "with the 95 % Wilson interval (rnl: its IF curve; qcfs: its QCFS → IF rate-coded curve, the QCFS "
                "paper's format, and its PASCAL operating points at each T_eff present; ANN: the best validation "
                "ANN). Each row chooses on its own, so rows may name different runs.")
        if self.published:
            text += " Published figures beside ours, ours minus theirs: " + "; ".join(
                f"[{item.label}] {item.source}" for item in self.published) + "."
        else:
            text += " This sweep's preset names no published figures."
        return text


def fixed_latency_of(sweep: tracking.SweepRuns) -> FixedLatency:
    """The papers' table of ``sweep``: the stepped curves of its finished runs and its logged published figures."""
    client = tracking.client_for(sweep.tracking_uri)
    published = parse_published(tracking.published_figures(client, sweep.sweep_id), list(STEP_CURVES))
    trials = sweep.trials
    curves: dict[str, dict[str, pd.Series]] = {}
    for method, keys in STEP_CURVES.items():
        run_ids = trials.loc[(trials["status"] == "FINISHED") & (method_names(trials) == method), "run_id"].tolist()
        for key in keys:
            curves[key] = tracking.metric_histories(sweep.tracking_uri, run_ids, key) if run_ids else {}
    return FixedLatency(fixed_latency_table(trials, curves, published), published)


@dataclass
class _Section:
    heading: str
    text: str = ""
    table: pd.DataFrame | None = None
    image: Path | None = None


def hypervolume_table(analysis: ParetoAnalysis, name: str = "this sweep",
                      comparison: Comparison | None = None) -> pd.DataFrame:
    """One row per front (per method for a per-method front, and per sweep with a comparison):
    size, knee, hypervolume, reference."""
    rows = []
    for sweep, result in [(name, analysis)] + ([(comparison.name, comparison.analysis)] if comparison else []):
        for key, front in result.fronts.items():
            knee = result.runs.iloc[front.knee]["run_name"] if front.knee is not None else "-"
            rows.append({"sweep": sweep, "front": key, "objectives": " vs ".join(front.objectives),
                         "runs on front": front.size, "knee": knee, "hypervolume": front.hypervolume,
                         "hypervolume (fraction of box)": front.hypervolume_norm,
                         "reference": ", ".join(f"{v:.4g}" for v in front.reference)})
    return pd.DataFrame(rows)


def front_text(analysis: ParetoAnalysis, name: str) -> str:
    """What a front's section says: size and knee (per method for a per-method front)."""
    spec = analysis.spec(name)

    def describe(front: Any) -> str:
        knee = analysis.runs.iloc[front.knee]["run_name"] if front.knee is not None else "-"
        return f"{front.size} run(s) on the front, knee {knee}, hypervolume {front.hypervolume:.4g}"

    if spec.per_method:
        parts = [f"{panel_title(spec, front.method)}: {describe(front)}" for front in analysis.spec_fronts(name)]
        text = ("Each method's own front (its Ω is not comparable across methods); a run is on the front when it "
                "is on its method's. " + "; ".join(parts) + ".")
    else:
        text = f"{describe(analysis.fronts[name])}."
    unconverged = set(analysis.unconverged()["run_id"])
    hollow = [run_ref(row) for _, row in analysis.front_runs(name).iterrows() if row["run_id"] in unconverged]
    ties = paired.front_tie_sentence(analysis, name)
    return (text + (f" Unconverged on this front (raise T_max): {', '.join(hollow)}." if hollow else "")
            + (f" Tied: {ties} (drawn with a dashed edge)." if ties else "") + ann_energy_text(analysis, spec))


def ann_energy_text(analysis: ParetoAnalysis, spec: Any) -> str:
    """For the energy front: the ANN's own energy per image, and how many front runs spend less ("" otherwise)."""
    energies = ann_energies(analysis.runs)
    if spec.cost != "energy_op_mj" or not energies:
        return ""
    front = analysis.front_runs(spec.name)
    below = int((pd.to_numeric(front["energy_op_mj"], errors="coerce") < max(energies)).sum())
    values = " and ".join(f"{value:.3g} mJ" for value in energies)
    return (f" The ANN spends {values} per image (its dense MACs at the SNN's per-MAC energy; the dotted line): "
            f"{below} of the {len(front)} front run(s) spend less; a run to the right of the line saves nothing.")


def _report_sections(analysis: ParetoAnalysis, name: str, plots: Mapping[str, Path],
                     comparison: Comparison | None) -> list[_Section]:
    """The report's sections in order: overview, each front, joint, acc(t), per-layer L, comparison."""
    counts = analysis.counts
    skipped = "; ".join(f"{metric}: {', '.join(names)}" for metric, names in analysis.skipped.items())
    overview = " ".join(part for part in (
        f"{counts['runs']} trial runs: {counts['finished']} finished, {counts['failed']} failed "
        f"(counted, not plotted), {counts['unfinished']} not finished.", selection_text(analysis),
        unconverged_text(analysis),
        f"Reference point: {', '.join(f'{k} = {v:.4g}' for k, v in analysis.reference.items())}.",
        f"Left out for a missing/NaN/inf value: {skipped}." if skipped else "") if part)
    sections = [_Section("Overview", overview, table=hypervolume_table(analysis, name, comparison))]
    for spec in analysis.specs:
        sections.append(_Section(f"Front {spec.name}: {analysis.accuracy} vs {spec.cost}",
                                 front_text(analysis, spec.name),
                                 table=front_table(analysis.front_runs(spec.name), analysis.legacy),
                                 image=plots.get(f"front_{spec.name}")))
    if JOINT in analysis.fronts:
        front = analysis.fronts[JOINT]
        sections.append(_Section(f"Front joint: {' + '.join(front.objectives)}",
                                 f"{front.size} run(s) on the front of all these objectives together.",
                                 table=front_table(analysis.front_runs(JOINT), analysis.legacy),
                                 image=plots.get("front_joint")))
    sections.append(_Section("Accuracy against time steps", _curves_text(analysis, "acc_curves" in plots),
                             image=plots.get("acc_curves")))
    sections.append(_Section("Per-layer L", "L of each layer for the front's qcfs runs."
                             if "levels" in plots else "No qcfs run on a front.", image=plots.get("levels")))
    if comparison is not None:
        for spec in analysis.specs:
            sections.append(_Section(f"Compared with {comparison.name}: front {spec.name}",
                                     image=plots.get(f"compare_{spec.name}")))
    return sections


def _curves_text(analysis: ParetoAnalysis, drawn: bool) -> str:
    if analysis.legacy:
        return "acc(t) (test split) of the runs on a front; dashed: ANN accuracy." if drawn else \
            "No run on a front logged snn_acc_t."
    qcfs = ("qcfs runs are not drawn: their operating point is PASCAL's exact T_eff, not a point of an IF curve "
            "(their if_snn_acc_t is only an IF comparison).")
    if not drawn:
        return f"No rnl run on a front logged val_snn_acc_t or snn_acc_t. {qcfs}"
    return ("acc(t) of the rnl runs on a front: validation solid, test dotted; the dot is the operating point "
            f"(t_op, val_acc_op). {qcfs}")


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
        description="Pareto fronts of a sweep's trial runs in MLflow (accuracy at each trial's operating point "
                    "against its latency t_op, its energy, and Ω within each method): prints each front and "
                    "writes a report folder (report.html, report.md, pareto.csv, PNGs).")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    parser.add_argument("--experiment", default="snnconv", help="experiment name (default: snnconv)")
    parser.add_argument("--sweep", default=None, metavar="RUN_ID",
                        help="parent run id of the sweep (default: the experiment's latest sweep)")
    parser.add_argument("--out", default=None, type=Path, metavar="DIR",
                        help="report folder (default: reports/<sweep run name>)")
    parser.add_argument("--fronts", nargs="+", default=None, metavar="NAME",
                        help=f"fronts to analyse, each from {list(FRONT_NAMES)} (default: all; a sweep logged "
                             f"before operating points has {list(LEGACY_FRONTS)})")
    parser.add_argument("--select-on", default=None, metavar="{val,test}",
                        help="split whose accuracy the fronts maximise: val (val_acc_op) or test (acc_op, biased); "
                             "default: the split the sweep chose on (its snnconv.select_on tag)")
    parser.add_argument("--compare", default=None, metavar="RUN_ID",
                        help="parent run id of another sweep of the experiment: both fronts on one plot, "
                             "with the hypervolume of each")
    parser.add_argument("--log-to-mlflow", action="store_true",
                        help="attach the report folder to the sweep's parent run under report/")
    parser.add_argument("--register", default=None, metavar="NAME", type=registered_model_name,
                        help="register the model of the latency front's knee run in MLflow's Model Registry as "
                             "NAME (a new version each time); load it with "
                             "mlflow.pytorch.load_model('models:/NAME/<version>')")
    return parser


def registered_model_name(text: str) -> str:
    """``--register``'s value: a Model Registry name (not empty, no '/' or ':')."""
    if not text.strip() or "/" in text or ":" in text:
        raise argparse.ArgumentTypeError(f"a registered model name is not empty and has no '/' or ':', got {text!r}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the analysis; 0 on success, ``USER_ERROR`` (2) with a one-line ``error:`` message for a
    user error (a bad store, tracking URI, report folder, experiment, run or option).

    The tracking URI and the ``--out`` folder are checked before MLflow is read or anything is
    written. Warnings (runs left out of a front, a biased choice of split) go to stderr as
    ``warning: ...`` lines.
    """
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", ParetoWarning)
        warnings.showwarning = _print_warning
        try:
            args.tracking_uri = tracking.check_tracking_uri(args.tracking_uri, create=False)
            if args.out is not None:
                check_report_folder(args.out)
            return _run(args)
        except (AnalysisError, tracking.TrackingError, ReportFolderError) as error:
            print(f"error: {error}", file=sys.stderr)
            return USER_ERROR


class ReportFolderError(ValueError):
    """The report folder cannot be created or written (the message names it)."""


def check_report_folder(folder: Path) -> None:
    """Raise ``ReportFolderError`` unless files can be written in ``folder``; leaves no trace.

    The folder (and missing parents) is created, a probe file written in it and removed, and the
    folders this created are removed again, so that a later error still leaves nothing behind.
    """
    folder = Path(folder).absolute()
    created = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".pareto-probe-", dir=folder):
            pass
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise ReportFolderError(f"cannot write the report folder {folder} ({reason}); pass another --out") from None
    finally:
        for path in created:  # deepest first
            try:
                path.rmdir()
            except OSError:
                pass


def _print_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"warning: {message}", file=sys.stderr)


def sweep_is_legacy(sweep: tracking.SweepRuns) -> bool:
    """A sweep logged before operating points: no ``select_on`` tag and no operating-point metrics."""
    return sweep.select_on == "" and is_legacy(sweep.trials)


def resolve_select_on(requested: str | None, sweep: tracking.SweepRuns, legacy: bool) -> str:
    """The split the fronts are chosen on: ``requested``, else the sweep's tag, else "val";
    always "test" for a legacy sweep (it has no validation accuracy)."""
    if legacy:
        if requested == "val":
            raise AnalysisError(f"sweep {sweep.sweep_name} was logged before operating points existed: it has only "
                                f"test accuracies (snn_acc), so --select-on val is not possible")
        return "test"
    chosen = requested or sweep.select_on or "val"
    accuracy_column(chosen)  # raises AnalysisError for anything but val / test
    return chosen


def _analyse_sweep(sweep: tracking.SweepRuns, fronts: Sequence[str], select_on: str, legacy: bool,
                   reference: Mapping[str, float]) -> ParetoAnalysis:
    if legacy:
        return analyse_legacy(sweep.trials, fronts, reference)
    return analyse(sweep.trials, fronts, select_on, reference)


def _run(args: argparse.Namespace) -> int:
    sweep = tracking.load_sweep(args.tracking_uri, args.experiment, args.sweep)
    legacy = sweep_is_legacy(sweep)
    fronts = tuple(args.fronts or (LEGACY_FRONTS if legacy else FRONT_NAMES))
    resolve_fronts(fronts, legacy)  # a bad name fails before anything is read or written
    select_on = resolve_select_on(args.select_on, sweep, legacy)
    other = tracking.load_sweep(args.tracking_uri, args.experiment, args.compare) if args.compare else None
    if other is not None and sweep_is_legacy(other) != legacy:
        old, new = (sweep, other) if legacy else (other, sweep)
        raise AnalysisError(f"cannot compare {old.sweep_name} (logged before operating points) with "
                            f"{new.sweep_name}: their fronts use different accuracies and latencies")
    tables = [sweep.trials] + ([other.trials] if other is not None else [])
    reference = reference_point(tables, fronts, legacy=legacy)
    analysis = _analyse_sweep(sweep, fronts, select_on, legacy, reference)
    paired.add_tie_columns(analysis, tracking.image_results(tracking.client_for(sweep.tracking_uri), sweep.trials))
    comparison = (Comparison(other.sweep_name, _analyse_sweep(other, fronts, select_on, legacy, reference))
                  if other is not None else None)
    if legacy or select_on == "test":
        print(f"warning: {LEGACY_WARNING if legacy else TEST_SPLIT_WARNING}", file=sys.stderr)
    knee = None
    if args.register is not None:  # checked before anything is written
        knee = latency_knee(analysis)
        tracking.find_run_model(sweep.tracking_uri, knee["run_id"])
    folder = args.out or Path("reports") / sweep.sweep_name
    if args.out is None:
        check_report_folder(folder)  # --out was checked before anything was read
    fixed = None if legacy else fixed_latency_of(sweep)
    report = write_report(analysis, folder, title=f"Pareto fronts of {sweep.sweep_name}", name=sweep.sweep_name,
                          facts=_facts(sweep, other, analysis), curves=_curves(sweep, analysis),
                          comparison=comparison, fixed=fixed)
    _print_summary(sweep.sweep_name, analysis, comparison)
    if fixed is not None:
        print("accuracy at fixed latencies (the papers' format; chosen on validation, test reported):")
        print(format_table(fixed.table))
        if fixed.published:
            print(references_text(fixed.published))
        print()
    if args.log_to_mlflow:
        tracking.attach_report(sweep.tracking_uri, sweep.sweep_id, report.folder)
        print(f"report attached to run {sweep.sweep_id} under report/")
    print(f"report: {report.html.resolve()}")
    if knee is not None:
        version = register_knee(sweep, knee, args.register)
        print(f"registered the latency knee {run_ref(knee)} ({knee.get('method')}, {latency_text(knee)}, "
              f"{analysis.accuracy} {as_number(knee.get(analysis.accuracy)):.2f} %) as {version.name} version "
              f"{version.version}: load it with mlflow.pytorch.load_model({version.uri!r})")
    return 0


#: the front whose knee ``--register`` registers
REGISTER_FRONT = "latency"


def latency_knee(analysis: ParetoAnalysis) -> pd.Series:
    """The knee run (a row of ``analysis.runs``) of the latency front; ``AnalysisError`` when the
    latency front was not analysed or has no knee."""
    if analysis.legacy:
        raise AnalysisError("--register: this sweep was logged before operating points and before trials logged "
                            "MLflow models; rerun the sweep")
    front = analysis.fronts.get(REGISTER_FRONT)
    if front is None:
        raise AnalysisError(f"--register registers the knee of the {REGISTER_FRONT} front, which was not analysed; "
                            f"add {REGISTER_FRONT} to --fronts")
    if front.knee is None:
        raise AnalysisError(f"--register: the {REGISTER_FRONT} front has no knee (no finished run with a finite "
                            f"{analysis.accuracy} and t_op)")
    return analysis.runs.iloc[front.knee]


def register_knee(sweep: tracking.SweepRuns, knee: Mapping[str, Any], name: str) -> tracking.RegisteredVersion:
    """Register the model of ``knee`` (a trial row of ``sweep``) as a new version of ``name``,
    tagged with the sweep, the front and the run."""
    tags = {"snnconv.sweep": sweep.sweep_id, "snnconv.front": REGISTER_FRONT, "snnconv.method": str(knee.get("method")),
            "snnconv.t_op": f"{as_number(knee.get('t_op')):g}", "snnconv.acc_op": f"{as_number(knee.get('acc_op')):g}"}
    description = (f"Knee of the {REGISTER_FRONT} front of sweep {sweep.sweep_name}: {run_ref(knee)}, "
                   f"{knee.get('method')} at {latency_text(knee)}. Rebuild and run its SNN with "
                   f"snnconv.export.evaluate_snn(model, metadata).")
    return tracking.register_run_model(sweep.tracking_uri, str(knee["run_id"]), name, description=description,
                                       tags=tags)


def _curves(sweep: tracking.SweepRuns, analysis: ParetoAnalysis) -> dict[str, dict[str, pd.Series]]:
    """The stepped metrics the acc(t) plot draws, for the runs on a front (rnl only, unless legacy)."""
    on_fronts = analysis.members_of_any_2d_front()
    if analysis.legacy:
        return {TEST_CURVE: tracking.metric_histories(sweep.tracking_uri, on_fronts["run_id"], TEST_CURVE)}
    rnl = on_fronts.loc[method_names(on_fronts) == "rnl", "run_id"].tolist()
    return {key: tracking.metric_histories(sweep.tracking_uri, rnl, key) for key in (VAL_CURVE, TEST_CURVE)}


def _facts(sweep: tracking.SweepRuns, other: tracking.SweepRuns | None, analysis: ParetoAnalysis) -> dict[str, str]:
    """The facts at the top of the report."""
    split = {"val": "validation", "test": "test"}[analysis.select_on]
    chosen = f"{split} split ({analysis.accuracy})"
    if analysis.legacy:
        chosen += "; logged before operating points existed"
    elif sweep.select_on and sweep.select_on != analysis.select_on:
        chosen += f"; the sweep itself chose on {sweep.select_on} (its pareto_* tags)"
    facts = {"sweep": f"{sweep.sweep_name} ({sweep.sweep_id})", "experiment": sweep.experiment_name,
             "preset": sweep.preset or "-", "tracking URI": sweep.tracking_uri, "fronts chosen on": chosen,
             "fronts": ", ".join(f"{s.name} ({analysis.accuracy} vs {s.cost}{', per method' if s.per_method else ''})"
                                 for s in analysis.specs)}
    if other is not None:
        facts["compared with"] = f"{other.sweep_name} ({other.sweep_id})"
    return facts


def _print_summary(name: str, analysis: ParetoAnalysis, comparison: Comparison | None) -> None:
    """Counts, the split chosen on, each front as a table (best accuracy first), unconverged runs,
    and the hypervolumes compared."""
    counts = analysis.counts
    print(f"sweep {name}: {counts['runs']} trial runs, {counts['finished']} finished, {counts['failed']} failed, "
          f"{counts['unfinished']} not finished")
    print(selection_text(analysis))
    for spec in analysis.specs:
        print(f"\nfront {spec.name} ({analysis.accuracy} vs {spec.cost}): {front_text(analysis, spec.name)}")
        print(format_table(front_table(analysis.front_runs(spec.name), analysis.legacy)))
    if JOINT in analysis.fronts:
        print(f"\nfront joint ({' + '.join(analysis.fronts[JOINT].objectives)}): {analysis.fronts[JOINT].size} run(s)")
    unconverged = unconverged_text(analysis)
    if unconverged:
        print(f"\n{unconverged}")
    if comparison is not None:
        print()
        print(format_table(hypervolume_table(analysis, name, comparison)))
    print()
