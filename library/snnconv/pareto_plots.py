"""The PNGs of a sweep's Pareto fronts, drawn with matplotlib on its Agg canvas (no pyplot, so no
global backend state; matplotlib is imported only when a figure is made).

``draw_front`` draws one front on an axes and ``plot_front`` writes one front's PNG (one panel per
method for a per-method front); ``write_sweep_fronts`` is what a sweep attaches to its parent run
at its end. The report's other plots (``snnconv.pareto_report``): ``plot_joint``,
``plot_operating_curves`` (acc(t) with the operating points), ``plot_acc_curves`` (legacy sweeps),
``plot_levels`` (per-layer L) and ``plot_compare`` (two sweeps' fronts on one plot).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .method_registry import find_method, registered
from .pareto import (
    FRONT_NAMES,
    FRONTS,
    JOINT,
    LEGACY_FRONTS,
    FrontSpec,
    ParetoAnalysis,
    accuracy_column,
    analyse,
    if_methods,
    knee_index,
    method_names,
    objective_values,
    ordered_methods,
    pareto_mask,
    unconverged_mask,
)
from .pareto_tables import as_number, parse_levels, run_label, write_front_csv

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import LegendLocType

#: colour and marker of a method the registry does not know (a run logged by another version)
OTHER_STYLE = ("tab:gray", "v")
UNCONVERGED_LABEL = "unconverged (raise T_max)"

# =============================================================================================
# the fronts
# =============================================================================================


def new_figure(width: float = 6.4, height: float = 4.4) -> Figure:
    """A figure (size in inches) on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Path | str) -> Path:
    """Write ``figure`` as PNG to ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def axis_label(column: str) -> str:
    """Axis title of a metric column, with its unit."""
    costs = {spec.cost: spec.axis for spec in (*LEGACY_FRONTS.values(), *FRONTS.values())}  # current ones win
    if column == "t_op":  # each method's latency unit, from the registry: rnl, datanorm: IF time steps; qcfs: ...
        units: dict[str, list[str]] = {}
        for method in registered():
            units.setdefault(method.latency_unit, []).append(method.name)
        return "latency t_op (" + "; ".join(f"{', '.join(names)}: {unit}" for unit, names in units.items()) + ")"
    return {"val_acc_op": "validation accuracy at t_op (%)", "acc_op": "test accuracy at t_op (%)",
            "snn_acc": "SNN test accuracy (%)", "energy_mj": "energy per image (mJ)",
            "synops": "synaptic operations per image", **costs}.get(column, column)


def method_style(method: str) -> tuple[str, str]:
    """(colour, marker) of ``method`` in every plot."""
    known = find_method(method)
    return (known.colour, known.marker) if known is not None else OTHER_STYLE


def panel_title(spec: FrontSpec, method: str) -> str:
    """Title of one method's panel of a per-method front (says what its Ω measures)."""
    known = find_method(method)
    if spec.cost == "omega" and known is not None:
        return f"{method}: {known.omega_meaning}"
    return method


def _scatter(axes: Axes, points: np.ndarray, colour: str, marker: str, hollow: np.ndarray,
             label: str | None, **style: Any) -> None:
    """``points`` (k, 2) filled, the ``hollow`` ones (unconverged) as outlines; one legend label."""
    for pick, face in ((~hollow, colour), (hollow, "none")):
        if pick.any():
            axes.scatter(points[pick, 0], points[pick, 1], marker=marker, facecolor=face, edgecolor=colour,
                         linewidth=1.1, label=label, **style)
            label = None


def draw_front(axes: Axes, runs: pd.DataFrame, accuracy: str, cost: str, *, colour: str | None = None,
               label: str | None = None, annotate: bool = True, show_dominated: bool = True,
               with_latency: bool = True, tied: np.ndarray | None = None) -> None:
    """The front of every row of ``runs`` (``accuracy`` up, ``cost`` along): points coloured and
    marked by method (``colour`` overrides the colour), dominated ones faded, front ones joined as
    a staircase and labelled (``run_label``), unconverged ones hollow, the knee starred. With
    ``label`` the staircase carries it and no other legend entry is made. ``tied`` (n,) bool: the
    dominated runs the data cannot tell apart from the front (``snnconv.paired``), drawn unfaded
    with a dark edge."""
    values = objective_values(runs, [cost, accuracy])
    finite = np.isfinite(values).all(axis=1)
    members = pareto_mask(values, ["min", "max"])
    methods, hollow = method_names(runs), unconverged_mask(runs)
    tied = np.zeros(len(runs), dtype=bool) if tied is None else np.asarray(tied, dtype=bool) & ~members
    legend = label is None
    interval = accuracy_interval(runs, accuracy)
    for method in ordered_methods(methods[finite]):
        style = {"colour": colour or method_style(method)[0], "marker": method_style(method)[1]}
        shown = finite & (methods == method) & (members | show_dominated) & np.isfinite(interval).all(axis=1)
        if shown.any():  # each accuracy's 95 % interval, as a vertical bar behind its point
            y = values[shown, 1]
            axes.errorbar(values[shown, 0], y, yerr=[y - interval[shown, 0], interval[shown, 1] - y], fmt="none",
                          ecolor=style["colour"], elinewidth=0.8, capsize=2, alpha=0.45, zorder=1)
        dominated = finite & ~members & ~tied & (methods == method)
        close = finite & tied & (methods == method)
        on_front = members & (methods == method)
        # the method's legend entry goes on its front points, else on the first of its other points drawn
        named = "front" if on_front.any() else ("tied" if show_dominated and close.any() else "dominated")
        name = method if legend else None
        if show_dominated and dominated.any():
            _scatter(axes, values[dominated], hollow=hollow[dominated], label=name if named == "dominated" else None,
                     s=20, alpha=0.35, zorder=2, **style)
        if show_dominated and close.any():
            _scatter(axes, values[close], hollow=hollow[close], label=name if named == "tied" else None, s=30,
                     alpha=0.9, zorder=3, linestyle="--", **style)
        _scatter(axes, values[on_front], hollow=hollow[on_front], label=name if named == "front" else None, s=42,
                 zorder=4, **style)
    order = np.argsort(values[members, 0], kind="stable")
    axes.step(values[members, 0][order], values[members, 1][order], where="post", color=colour or "0.3",
              linewidth=1.2, zorder=3, label=label)
    knee = knee_index(values, ["min", "max"])
    if knee is not None:
        axes.scatter([values[knee, 0]], [values[knee, 1]], marker="*", s=220, facecolor="none",
                     edgecolor=colour or "black", linewidth=1.3, zorder=5, label="knee" if legend else None)
    if legend and show_dominated and (finite & tied).any():
        axes.scatter([], [], color="0.4", s=30, linestyle="--", label="tied with the front (McNemar, 5 %)")
    if legend and show_dominated and (finite & ~members & ~tied).any():
        axes.scatter([], [], color="0.6", alpha=0.35, s=20, label="dominated (faded)")
    if legend and (hollow & finite).any():
        axes.scatter([], [], facecolor="none", edgecolor="0.3", s=42, label=UNCONVERGED_LABEL)
    if annotate:
        _annotate(axes, runs[members], values[members], with_latency)
        axes.margins(x=0.15, y=0.08)  # room for the labels of the end points


#: the metric with the ANN's own energy per image (mJ): its dense MACs at the same per-MAC energy
ANN_ENERGY = "ann_energy_mj"


def ann_energies(runs: pd.DataFrame) -> list[float]:
    """The distinct ANN energies per image (mJ, ``ann_energy_mj``) of the finished runs, smallest first (one
    value per model and input size; none for runs logged before it)."""
    if ANN_ENERGY not in runs.columns:
        return []
    values = objective_values(runs, [ANN_ENERGY])[:, 0]
    return sorted({float(f"{value:.6g}") for value in values[np.isfinite(values)]})


def draw_ann_energy(axes: Axes, runs: pd.DataFrame) -> None:
    """A vertical reference line at each ANN energy of ``runs`` (:func:`ann_energies`): a point to its right
    spends more energy per image than the ANN it came from."""
    for value in ann_energies(runs):
        axes.axvline(value, color="0.25", linestyle=":", linewidth=1.2, zorder=0,
                     label=f"ANN: {value:.3g} mJ (its MACs at the same 45 nm energy)")


def accuracy_interval(runs: pd.DataFrame, accuracy: str) -> np.ndarray:
    """(n, 2) the bar (low, high; percent) drawn on column ``accuracy`` of each run: for a configuration run with
    repeats (``snnconv.repeats``), its mean ± the standard deviation across its seeds (``<accuracy>_std``); for a
    single run, the 95 % Wilson interval of its ``<accuracy>_low`` / ``<accuracy>_high`` metrics; NaN where a run
    has neither (logged before they existed)."""
    def column(name: str) -> np.ndarray:
        if name not in runs.columns:
            return np.full(len(runs), np.nan)
        return pd.to_numeric(runs[name], errors="coerce").to_numpy(dtype=float)

    bars = np.column_stack([column(f"{accuracy}_low"), column(f"{accuracy}_high")])
    mean, spread = column(accuracy), column(f"{accuracy}_std")
    repeated = np.isfinite(spread)
    bars[repeated] = np.column_stack([mean - spread, mean + spread])[repeated]
    return bars


def _annotate(axes: Axes, rows: pd.DataFrame, points: np.ndarray, with_latency: bool) -> None:
    """One label per front point (identical runs share it)."""
    labels: dict[tuple[float, float], list[str]] = {}
    for (_, row), (x, y) in zip(rows.iterrows(), points):
        labels.setdefault((x, y), []).append(run_label(row, with_latency))
    for point, texts in labels.items():
        axes.annotate(", ".join(dict.fromkeys(texts)), point, textcoords="offset points", xytext=(5, 4), fontsize=7)


def plot_front(analysis: ParetoAnalysis, name: str, path: Path | str, *, title: str | None = None) -> Path:
    """PNG of front ``name`` of ``analysis`` at ``path``: one axes for a cross-method front, one
    panel per method side by side for a per-method front (each with its method's own front)."""
    spec = analysis.spec(name)
    fronts = analysis.spec_fronts(name)
    figure = new_figure(5.6 * len(fronts) if spec.per_method else 6.4, 4.6)
    panels = figure.subplots(1, len(fronts), squeeze=False)[0]
    for axes, front in zip(panels, fronts):
        rows = analysis.runs if front.method is None else analysis.runs[method_names(analysis.runs) == front.method]
        tied = rows[f"tied_{name}"].to_numpy() == True if f"tied_{name}" in rows else None  # noqa: E712 - object column
        draw_front(axes, rows, analysis.accuracy, spec.cost, with_latency=not analysis.legacy, tied=tied)
        if spec.cost == "energy_op_mj":
            draw_ann_energy(axes, rows)
        axes.set_xlabel(spec.axis)
        axes.set_ylabel(axis_label(analysis.accuracy))
        if front.method is not None:
            axes.set_title(f"{panel_title(spec, front.method)}: {front.size} on its front", fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="best")
    default = f"{analysis.accuracy} vs {spec.cost}" + (" (each method's own front)" if spec.per_method else "")
    if analysis.legacy:
        default += " (logged before operating points: chosen on the test split)"
    figure.suptitle(title or default)
    return save_figure(figure, path)


def write_sweep_fronts(trials: pd.DataFrame, folder: Path | str, select_on: str = "val") -> list[Path]:
    """What a sweep attaches to its parent run at its end, in ``folder``: ``pareto.csv`` (every run
    with ``front_<name>`` / ``knee_<name>`` flags) and ``front_latency.png``, ``front_energy.png``,
    ``front_omega.png``. With no finished run that has a finite accuracy, the CSV alone (every flag
    false)."""
    accuracy = accuracy_column(select_on)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not _any_finite_finished(trials, accuracy):
        runs = trials.reset_index(drop=True).copy()
        for column in [f"{flag}_{name}" for name in FRONT_NAMES for flag in ("front", "knee")] + [f"front_{JOINT}"]:
            runs[column] = False
        runs.to_csv(folder / "pareto.csv", index=False)
        return [folder / "pareto.csv"]
    analysis = analyse(trials, FRONT_NAMES, select_on)
    paths = [write_front_csv(analysis, folder / "pareto.csv")]
    paths += [plot_front(analysis, spec.name, folder / f"front_{spec.name}.png") for spec in analysis.specs]
    return paths


def _any_finite_finished(trials: pd.DataFrame, accuracy: str) -> bool:
    return accuracy in trials.columns and bool(np.isfinite(objective_values(trials, [accuracy])).any())


# =============================================================================================
# the report's other plots
# =============================================================================================


def _finish(figure: Figure, axes: Axes, path: Path | str, *, xlabel: str, ylabel: str, title: str,
            legend_size: int, legend_loc: LegendLocType) -> Path:
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
    """PNG of acc(t) of the rows of ``runs`` whose method runs a rate-coded IF network (rnl, datanorm):
    ``val_snn_acc_t`` solid, ``snn_acc_t`` dotted in the same colour, the operating point (t_op, val_acc_op)
    as a dot; None when no such run has a curve.

    qcfs runs are left out: their operating point is PASCAL's exact T_eff, not a point of an IF curve.
    """
    on_curves = set(if_methods())
    rows = [row for _, row in runs.iterrows()
            if row.get("method") in on_curves and (row["run_id"] in val_curves or row["run_id"] in test_curves)]
    if not rows:
        return None
    figure = new_figure(7.0, 4.6)
    axes = figure.add_subplot()
    label: str | None
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
                   title=f"acc(t) of the front's IF runs ({', '.join(if_methods())})",
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
    parsed = [(row, parse_levels(row.get("levels"))) for _, row in runs.iterrows() if row.get("method") == "qcfs"]
    rows = [(row, levels) for row, levels in parsed if levels]
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
