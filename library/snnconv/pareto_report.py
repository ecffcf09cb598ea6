"""The Pareto report of a sweep: a folder with ``report.html``, ``report.md``, ``pareto.csv``,
``summary.json`` and the plots.

``write_report`` turns a ``ParetoAnalysis`` (``snnconv.pareto``) into the folder: ``report.html``
(self-contained: the PNGs are embedded as base64), ``report.md``, ``pareto.csv``, ``summary.json``
and the plots (``snnconv.pareto_plots``): each front (``front_latency.png``, ``front_energy.png``,
``front_omega.png`` with one panel per method), the joint front, the acc(t) curves of the front's
IF runs (rnl, datanorm) with their operating points, the per-layer L of the front's qcfs runs, and with a
comparison sweep both sweeps' fronts on one plot per front. It reads nothing from MLflow: the
``analysis/pareto.py`` command (``snnconv.pareto_command``) reads the sweep and passes it in.

Which accuracy a front maximises is the analysis's (``select_on``): ``val_acc_op`` (validation
split) or ``acc_op`` (test split; the report then warns that the fronts are biased). A sweep logged
before operating points existed gets the legacy fronts of ``pareto.analyse_legacy`` and a warning
that they were chosen on the test split.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from . import paired
from .fixed_latency import Published
from .pareto import JOINT, ParetoAnalysis, run_ref
from .pareto_plots import (
    ann_energies,
    panel_title,
    plot_acc_curves,
    plot_compare,
    plot_front,
    plot_joint,
    plot_levels,
    plot_operating_curves,
)
from .pareto_tables import format_cell, front_table, write_front_csv

#: what the report and the command line say when the fronts are chosen on the test split
TEST_SPLIT_WARNING = ("the fronts are chosen on the test split (acc_op): choosing on it biases the fronts, and the "
                      "test split then no longer gives an unbiased estimate of the chosen points' accuracy; "
                      "choose on the validation split (--select-on val) for trustworthy fronts")
#: what they say for a sweep logged before operating points existed
LEGACY_WARNING = ("this sweep was logged before operating points existed: its fronts are selected on the test "
                  "split (snn_acc), so they are biased, and its latency t_eff mixes two definitions (IF time "
                  "steps for rnl, PASCAL T_eff for qcfs); rerun the sweep for trustworthy fronts")
#: the stepped metrics drawn in the acc(t) plot: rnl's validation and test curves; legacy: snn_acc_t
VAL_CURVE, TEST_CURVE = "val_snn_acc_t", "snn_acc_t"


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
        # each front of a per-method spec is one method's (its method is set)
        parts = [f"{panel_title(spec, cast(str, front.method))}: {describe(front)}"
                 for front in analysis.spec_fronts(name)]
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
        return f"No IF run (rnl, datanorm) on a front logged val_snn_acc_t or snn_acc_t. {qcfs}"
    return ("acc(t) of the IF runs (rnl, datanorm) on a front: validation solid, test dotted; the dot is the "
            f"operating point (t_op, val_acc_op). {qcfs}")


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
# the folder it is written to
# =============================================================================================


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
