"""Pareto fronts of a sweep: accuracy against latency cost (Ω, T_eff, energy), as data, plots and a report.

Everything here takes a trial table (a ``pandas.DataFrame``, one row per trial run: ``run_id``,
``run_name``, ``status``, params such as ``method``, ``lam``, ``levels``, and metrics such as
``snn_acc``, ``omega``, ``t_eff``) and returns arrays or writes files; none of it knows MLflow.
``snnconv.tracking`` reads such a table from MLflow; ``snnconv.pareto_report`` builds the report
folder and the ``analysis/pareto.py`` command on top of this module. A sweep uses ``front_tags``
and ``write_sweep_fronts`` at its end.

Definitions
-----------
* **Dominance**: run a dominates run b when a is no worse in every objective and strictly better in
  one (accuracy is maximised, every cost minimised). The **front** is the set of runs no other
  finished run dominates; identical points do not dominate each other, so duplicates are all on it.
  Runs that did not finish, or whose value of any objective is missing, NaN or infinite, are on no
  front and do not take part in the comparison.
* **Hypervolume**: the area (volume, for more than two objectives) that the front dominates inside
  the box bounded by the **reference point**: ``snn_acc = 0 %`` and, for each cost,
  ``1.1 x`` the largest finite value of that cost among the finished runs analysed (all compared
  sweeps together, so their hypervolumes are comparable; 1.0 where that largest value is 0 or
  there is none). Units: percent x cost units. ``hypervolume_norm`` divides by the box volume
  (``100 x reference cost ...``), a fraction in [0, 1].
* **Knee** of a 2-D front: scale accuracy and cost to [0, 1] over the front (0 = the best value);
  the front's two end points then lie at (0, 1) and (1, 0). The knee is the front run farthest from
  the straight line through them on the side of the ideal point (0, 0), i.e. the run with the
  smallest sum of scaled distances from the best accuracy and the best cost; a front with no run
  strictly on that side (one or two runs, a straight or concave front) takes the run closest to
  the ideal point. Ties go to the higher accuracy, then to the earlier run.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ACCURACY = "snn_acc"
#: what each objective wants; the costs are the latency / energy measures a front trades accuracy against
SENSES: Mapping[str, str] = {"snn_acc": "max", "omega": "min", "t_eff": "min", "energy_mj": "min",
                             "synops": "min"}
COSTS = ("omega", "t_eff", "energy_mj", "synops")
DEFAULT_COSTS = ("omega", "t_eff")
#: name of the front over accuracy and every cost together
JOINT = "joint"
#: the reference point's cost is (1 + REFERENCE_MARGIN) x the largest cost seen
REFERENCE_MARGIN = 0.1
#: columns of the terminal / report front table: (column, heading)
TABLE_COLUMNS = (("run_name", "run"), ("method", "method"), ("lam", "λ"), ("lr", "lr"),
                 ("sharescale", "sharescale"), ("levels", "levels"), ("snn_acc", "snn_acc"),
                 ("omega", "omega"), ("t_eff", "t_eff"))
_METHOD_COLOURS = {"rnl": "tab:blue", "qcfs": "tab:orange"}


class AnalysisError(ValueError):
    """A problem with what was asked of the analysis (bad objective, nothing to analyse)."""


class ParetoWarning(UserWarning):
    """Runs were left out of a front; the message names them."""


# =============================================================================================
# non-dominated sets, hypervolume, knee (plain arrays)
# =============================================================================================


def _as_minimisation(values: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    """``values`` (n, d) as float with every "max" column negated, after checking shape and senses."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"values must be a 2-D array (runs x objectives), got shape {array.shape}")
    if len(senses) != array.shape[1]:
        raise ValueError(f"{len(senses)} senses for {array.shape[1]} objective columns")
    bad = [s for s in senses if s not in ("max", "min")]
    if bad:
        raise ValueError(f"senses must be 'max' or 'min', got {bad}")
    signs = np.array([-1.0 if s == "max" else 1.0 for s in senses])
    return array * signs


def pareto_mask(values: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    """Which rows of ``values`` (n runs x d objectives) are non-dominated; bool array of shape (n,).

    ``senses[k]`` is "max" or "min" for column k. A row with any NaN or inf is never on the front
    and does not dominate others. Identical rows do not dominate each other (all are on the front).
    Works on the distinct rows in lexicographic order, where only an earlier row can dominate a
    later one: a running minimum in 2-D (O(n log n)); above, one pass over the remaining rows per
    front row (O(n x front size x d)).
    """
    points = _as_minimisation(values, senses)
    finite = np.isfinite(points).all(axis=1)
    mask = np.zeros(len(points), dtype=bool)
    if finite.any():
        distinct, inverse = np.unique(points[finite], axis=0, return_inverse=True)
        mask[finite] = _distinct_sorted_front(distinct)[inverse.reshape(-1)]
    return mask


def _distinct_sorted_front(points: np.ndarray) -> np.ndarray:
    """Front of distinct, lexicographically sorted minimisation rows (row j dominates i iff j <= i everywhere)."""
    if points.shape[1] == 2:
        # rows before i have a smaller x, or the same x and a smaller y: i is dominated iff one has y <= y_i
        best_y_before = np.minimum.accumulate(np.concatenate([[np.inf], points[:-1, 1]]))
        return points[:, 1] < best_y_before
    # the first remaining row has no dominator left (one that was dropped would make it dropped too):
    # it is on the front; drop every row it dominates. One vectorised pass per front row.
    on_front = np.zeros(len(points), dtype=bool)
    remaining = np.arange(len(points))
    while len(remaining):
        head, rest = remaining[0], remaining[1:]
        on_front[head] = True
        remaining = rest[~(points[rest] >= points[head]).all(axis=1)]
    return on_front


def hypervolume(values: np.ndarray, senses: Sequence[str], reference: Sequence[float]) -> float:
    """The volume the rows of ``values`` dominate, bounded by ``reference`` (one value per column).

    Rows that are not finite or not strictly better than the reference in every column add nothing.
    Exact: a sorted staircase sum in 2-D, slicing along the last objective above that.
    """
    points = _as_minimisation(values, senses)
    ref = _as_minimisation(np.asarray(reference, dtype=float)[None, :], senses)[0]
    if not np.isfinite(ref).all():
        raise ValueError(f"reference point must be finite, got {list(reference)}")
    inside = np.isfinite(points).all(axis=1) & (points < ref).all(axis=1)
    return _hypervolume_min(points[inside], ref)


def _hypervolume_min(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of minimisation ``points`` (all strictly below ``ref``)."""
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    if points.shape[1] == 2:
        order = np.lexsort((points[:, 1], points[:, 0]))               # by x, then y
        x, y = points[order, 0], points[order, 1]
        best_y = np.minimum.accumulate(y)                              # the staircase height at each x
        widths = np.diff(np.append(x, ref[0]))
        return float(np.sum(widths * (ref[1] - best_y)))
    points = points[pareto_mask(points, ["min"] * points.shape[1])]
    points = points[np.argsort(points[:, -1], kind="stable")]
    tops = np.append(points[1:, -1], ref[-1])
    return float(sum((top - point[-1]) * _hypervolume_min(points[:i + 1, :-1], ref[:-1])
                     for i, (point, top) in enumerate(zip(points, tops)) if top > point[-1]))


def knee_index(values: np.ndarray, senses: Sequence[str]) -> int | None:
    """Row index of the knee of the 2-D front of ``values`` (n, 2); None when no row is finite.

    See the module docstring for the definition.
    """
    points = _as_minimisation(values, senses)
    if points.shape[1] != 2:
        raise ValueError(f"the knee is defined for two objectives, got {points.shape[1]}")
    rows = np.flatnonzero(pareto_mask(values, senses))
    if len(rows) == 0:
        return None
    front = points[rows]
    low, high = front.min(axis=0), front.max(axis=0)
    scaled = (front - low) / np.where(high > low, high - low, 1.0)       # 0 = best, 1 = worst on the front
    chord_side = 1.0 - scaled.sum(axis=1)                                # > 0: ideal side of the end-point line
    if chord_side.max() > 1e-12:
        score = -chord_side
    else:
        score = np.hypot(scaled[:, 0], scaled[:, 1])
    best = np.lexsort((rows, scaled[:, 0], np.round(score, 12)))[0]
    return int(rows[best])


# =============================================================================================
# fronts of a trial table
# =============================================================================================


def check_costs(costs: Sequence[str]) -> tuple[str, ...]:
    """``costs`` as a tuple after checking each is a known cost and none repeats."""
    costs = tuple(costs)
    unknown = [c for c in costs if c not in COSTS]
    if not costs or unknown:
        raise AnalysisError(f"objectives must be one or more of {list(COSTS)}, got {list(costs)}")
    if len(set(costs)) != len(costs):
        raise AnalysisError(f"objectives repeat: {list(costs)}")
    return costs


def _require_columns(trials: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in trials.columns]
    if missing:
        raise AnalysisError(f"trial table lacks columns {missing} (has {list(trials.columns)})")


def objective_values(trials: pd.DataFrame, objectives: Sequence[str]) -> np.ndarray:
    """(n, d) float values of ``objectives``; NaN for runs that did not finish and for missing columns."""
    values = np.array(trials.reindex(columns=list(objectives)).apply(pd.to_numeric, errors="coerce"), dtype=float)
    if "status" in trials.columns:
        values[(trials["status"] != "FINISHED").to_numpy()] = np.nan
    return values


def front_mask(trials: pd.DataFrame, objectives: Sequence[str]) -> np.ndarray:
    """Which rows of ``trials`` are on the front of ``objectives`` (senses from ``SENSES``).

    Only finished runs (``status`` FINISHED, when the column exists) with finite values compete;
    an objective with no column leaves every row off the front.
    """
    unknown = [o for o in objectives if o not in SENSES]
    if unknown:
        raise AnalysisError(f"unknown objectives {unknown}; known: {list(SENSES)}")
    return pareto_mask(objective_values(trials, objectives), [SENSES[o] for o in objectives])


def front_tags(trials: pd.DataFrame, costs: Sequence[str] = DEFAULT_COSTS) -> dict[str, dict[str, str]]:
    """``{run_id: {"pareto_<cost>": "true" | "false"}}``: the tags the sweep sets on each child run.

    "true" where no other finished run has snn_acc >= and cost <= with one of them strict; runs
    that did not finish or whose snn_acc or cost is missing, NaN or inf get "false".
    """
    costs = check_costs(costs)
    _require_columns(trials, ["run_id"])
    tags: dict[str, dict[str, str]] = {run_id: {} for run_id in trials["run_id"]}
    for cost in costs:
        for run_id, member in zip(trials["run_id"], front_mask(trials, (ACCURACY, cost))):
            tags[run_id][f"pareto_{cost}"] = "true" if member else "false"
    return tags


@dataclass
class Front:
    """One front: ``members[i]`` says whether row i of the analysed table is on it.

    ``knee`` is a row position (2-D fronts only); ``reference`` has one value per objective.
    """

    name: str
    objectives: tuple[str, ...]
    members: np.ndarray
    knee: int | None
    hypervolume: float
    hypervolume_norm: float
    reference: tuple[float, ...]

    @property
    def size(self) -> int:
        return int(self.members.sum())


@dataclass
class ParetoAnalysis:
    """The fronts of one sweep's trial table.

    ``runs`` is the table (index 0..n-1) plus ``front_<name>`` and ``knee_<name>`` bool columns;
    ``skipped`` maps each objective to the finished runs left out for a missing/NaN/inf value.
    """

    runs: pd.DataFrame
    costs: tuple[str, ...]
    fronts: dict[str, Front]
    reference: dict[str, float]
    counts: dict[str, int]
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def front_runs(self, name: str) -> pd.DataFrame:
        """The rows on front ``name``, best accuracy first."""
        on_front = self.runs[self.fronts[name].members]
        return on_front.sort_values([ACCURACY, *self.fronts[name].objectives[1:]],
                                    ascending=[False] + [True] * (len(self.fronts[name].objectives) - 1),
                                    kind="stable")

    def members_of_any_2d_front(self) -> pd.DataFrame:
        """Rows on at least one accuracy-vs-cost front, best accuracy first."""
        on_any = np.zeros(len(self.runs), dtype=bool)
        for cost in self.costs:
            on_any |= self.fronts[cost].members
        return self.runs[on_any].sort_values(ACCURACY, ascending=False, kind="stable")


def run_ref(row: Mapping[str, Any]) -> str:
    """How a run is named in messages: ``run name (first 8 characters of the id)``."""
    run_id = str(row.get("run_id", ""))
    name = row.get("run_name")
    name = name if isinstance(name, str) and name else run_id
    return f"{name} ({run_id[:8]})" if name != run_id else run_id


def reference_point(tables: Sequence[pd.DataFrame], costs: Sequence[str]) -> dict[str, float]:
    """The hypervolume reference of the module docstring over the finished runs of all ``tables``."""
    reference = {ACCURACY: 0.0}
    for cost in check_costs(costs):
        columns = [objective_values(t, [cost])[:, 0] for t in tables if cost in t.columns]
        values = np.concatenate(columns) if columns else np.array([])
        values = values[np.isfinite(values)]
        largest = float(values.max()) if len(values) else 0.0
        reference[cost] = (1.0 + REFERENCE_MARGIN) * largest if largest > 0 else 1.0
    return reference


def analyse(trials: pd.DataFrame, costs: Sequence[str] = DEFAULT_COSTS,
            reference: Mapping[str, float] | None = None) -> ParetoAnalysis:
    """Fronts of snn_acc against each cost, and of snn_acc and all costs together (two or more).

    Warns (``ParetoWarning``, naming the runs) about finished runs left out for a missing, NaN or
    inf value. Raises ``AnalysisError`` when no run finished with a finite snn_acc.
    """
    costs = check_costs(costs)
    _require_columns(trials, ["run_id", "status"])
    runs = trials.reset_index(drop=True).copy()
    for column in (ACCURACY, *costs):
        if column not in runs:
            runs[column] = math.nan
    finished = (runs["status"] == "FINISHED").to_numpy()
    counts = {"runs": len(runs), "finished": int(finished.sum()),
              "failed": int((runs["status"] == "FAILED").sum())}
    counts["unfinished"] = counts["runs"] - counts["finished"] - counts["failed"]
    skipped = _skipped_runs(runs, finished, (ACCURACY, *costs))
    if not (finished & np.isfinite(runs[ACCURACY].to_numpy(dtype=float))).any():
        raise AnalysisError(
            f"nothing to analyse: {counts['runs']} trial runs, {counts['finished']} finished with a finite "
            f"{ACCURACY}, {counts['failed']} failed, {counts['unfinished']} not finished")
    reference = dict(reference) if reference is not None else reference_point([runs], costs)
    groups = {cost: (ACCURACY, cost) for cost in costs}
    if len(costs) >= 2:
        groups[JOINT] = (ACCURACY, *costs)
    fronts = {name: _front(runs, name, objectives, reference) for name, objectives in groups.items()}
    for name, front in fronts.items():
        runs[f"front_{name}"] = front.members
        if name != JOINT:
            runs[f"knee_{name}"] = np.arange(len(runs)) == (-1 if front.knee is None else front.knee)
    return ParetoAnalysis(runs=runs, costs=costs, fronts=fronts, reference=reference, counts=counts,
                          skipped=skipped)


def _skipped_runs(runs: pd.DataFrame, finished: np.ndarray, metrics: Sequence[str]) -> dict[str, list[str]]:
    """Finished runs with a missing/NaN/inf value, per metric; one warning per metric names them."""
    skipped: dict[str, list[str]] = {}
    for metric in metrics:
        bad = finished & ~np.isfinite(pd.to_numeric(runs[metric], errors="coerce").to_numpy(dtype=float))
        if bad.any():
            names = [run_ref(row) for _, row in runs[bad].iterrows()]
            skipped[metric] = names
            warnings.warn(f"left out of the fronts using {metric}: {len(names)} finished run(s) with a missing, "
                          f"NaN or inf {metric}: {', '.join(names)}", ParetoWarning, stacklevel=3)
    return skipped


def _front(runs: pd.DataFrame, name: str, objectives: tuple[str, ...], reference: Mapping[str, float]) -> Front:
    values = objective_values(runs, objectives)
    senses = [SENSES[o] for o in objectives]
    members = pareto_mask(values, senses)
    ref = tuple(float(reference[o]) for o in objectives)
    volume = hypervolume(values[members], senses, ref)
    box = math.prod(ref[1:]) * (100.0 - ref[0])
    return Front(name=name, objectives=objectives, members=members,
                 knee=knee_index(values, senses) if len(objectives) == 2 else None,
                 hypervolume=volume, hypervolume_norm=volume / box if box > 0 else math.nan, reference=ref)


# =============================================================================================
# tables and files
# =============================================================================================


def run_label(row: Mapping[str, Any]) -> str:
    """A plot label: ``λ=<lam>`` for rnl, the L profile (or the compact L list) for qcfs."""
    method = row.get("method")
    lam = pd.to_numeric(pd.Series([row.get("lam")]), errors="coerce").iloc[0]
    if method == "rnl" and np.isfinite(lam):
        return f"λ={lam:.3g}"
    if method == "qcfs":
        profile = row.get("levels_profile")
        if isinstance(profile, str) and profile and profile != "custom":
            return f"L={profile}"
        levels = parse_levels(row.get("levels"))
        if levels:
            shown = ",".join(str(v) for v in levels[:6]) + (",…" if len(levels) > 6 else "")
            return f"L=[{shown}]"
    return str(row.get("run_name") or str(row.get("run_id", ""))[:8])


def parse_levels(text: Any) -> list[int] | None:
    """The per-layer L list of a ``levels`` param (JSON text such as "[8, 4, 4, 1]"); None if absent or bad."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        levels = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(levels, list) and levels and all(isinstance(v, int) and v > 0 for v in levels):
        return levels
    return None


def front_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The display table of ``runs`` (``TABLE_COLUMNS``; missing columns shown as empty)."""
    table = pd.DataFrame({heading: runs[column] if column in runs else math.nan
                          for column, heading in TABLE_COLUMNS}, index=runs.index)
    return table.reset_index(drop=True)


def format_table(table: pd.DataFrame) -> str:
    """``table`` as aligned text: numbers to 4 significant digits, NaN as '-'."""
    if table.empty:
        return "(no runs)"
    shown = table.apply(lambda column: column.map(format_cell))
    return shown.to_string(index=False)


def format_cell(value: Any) -> str:
    """One table cell as text: '-' for missing, floats to 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_front_csv(analysis: ParetoAnalysis, path: Path | str) -> Path:
    """``pareto.csv``: every run with its params, objectives, status and ``front_*`` / ``knee_*`` flags."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    analysis.runs.to_csv(path, index=False)
    return path


# =============================================================================================
# plots (matplotlib's Agg canvas; no pyplot, so no global backend state)
# =============================================================================================


def new_figure(width: float = 6.4, height: float = 4.4) -> "Figure":
    """A figure (size in inches) on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: "Figure", path: Path | str) -> Path:
    """Write ``figure`` as PNG to ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def axis_label(name: str) -> str:
    """Axis title of a metric, with its unit."""
    return {"snn_acc": "SNN accuracy (%)", "omega": "Ω (mean)", "t_eff": "T_eff (time steps)",
            "energy_mj": "energy per image (mJ)", "synops": "synaptic operations per image"}.get(name, name)


def draw_front(axes: "Axes", trials: pd.DataFrame, x: str, y: str, *, colour: str | None = None,
                label: str | None = None, annotate: bool = True, show_dominated: bool = True) -> None:
    """Dominated runs grey, front runs coloured (by method unless ``colour``) and joined, knee starred."""
    values = objective_values(trials, [x, y])
    senses = [SENSES[x], SENSES[y]]
    members = pareto_mask(values, senses)
    shown = np.isfinite(values).all(axis=1)
    if show_dominated and (shown & ~members).any():
        rest = values[shown & ~members]
        axes.scatter(rest[:, 0], rest[:, 1], color="0.75", s=22, label="dominated" if label is None else None,
                     zorder=2)
    front = values[members]
    order = np.argsort(front[:, 0], kind="stable")
    axes.step(front[order, 0], front[order, 1], where="post" if SENSES[y] == "max" else "pre",
              color=colour or "0.3", linewidth=1.2, zorder=3, label=label)
    rows = trials[members]
    methods = rows["method"] if "method" in rows else pd.Series([None] * len(rows), index=rows.index)
    for method in dict.fromkeys(methods):
        picked = (methods == method).to_numpy()
        axes.scatter(front[picked, 0], front[picked, 1], zorder=4, s=36,
                     color=colour or _METHOD_COLOURS.get(method, "tab:green"),
                     label=f"{method} (front)" if label is None and method else None)
    knee = knee_index(values, senses)
    if knee is not None:
        axes.scatter([values[knee, 0]], [values[knee, 1]], marker="*", s=220, facecolor="none",
                     edgecolor=colour or "black", linewidth=1.3, zorder=5, label="knee" if label is None else None)
    if annotate:  # one label per point: identical runs share it
        labels: dict[tuple[float, float], list[str]] = {}
        for (_, row), (px, py) in zip(rows.iterrows(), front):
            labels.setdefault((px, py), []).append(run_label(row))
        for point, texts in labels.items():
            axes.annotate(", ".join(dict.fromkeys(texts)), point, textcoords="offset points", xytext=(5, 4),
                          fontsize=7)


def plot_front(trials: pd.DataFrame, x: str, y: str, path: Path | str, *, title: str | None = None) -> Path:
    """PNG of the ``y``-vs-``x`` front of ``trials`` (finished runs with finite values) at ``path``.

    Dominated runs are grey; front runs are coloured by method, joined as a staircase and labelled
    (λ or L profile); the knee is starred.
    """
    _require_columns(trials, [x, y])
    unknown = [o for o in (x, y) if o not in SENSES]
    if unknown:
        raise AnalysisError(f"unknown objectives {unknown}; known: {list(SENSES)}")
    figure = new_figure()
    axes = figure.add_subplot()
    draw_front(axes, trials, x, y)
    axes.set_xlabel(axis_label(x))
    axes.set_ylabel(axis_label(y))
    axes.set_title(title or f"{y} vs {x}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return save_figure(figure, path)


def write_sweep_fronts(trials: pd.DataFrame, folder: Path | str, costs: Sequence[str] = DEFAULT_COSTS) -> list[Path]:
    """What a sweep attaches to its parent run at its end: ``pareto.csv`` and one ``front_<cost>.png``
    per cost in ``folder``. With no finished run that has a finite snn_acc, the CSV alone (every
    ``front_*`` flag false)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        analysis = analyse(trials, costs)
    except AnalysisError:
        runs = trials.reset_index(drop=True).copy()
        for name in (*check_costs(costs), *([JOINT] if len(costs) >= 2 else [])):
            runs[f"front_{name}"] = False
        runs.to_csv(folder / "pareto.csv", index=False)
        return [folder / "pareto.csv"]
    paths = [write_front_csv(analysis, folder / "pareto.csv")]
    paths += [plot_front(analysis.runs, cost, ACCURACY, folder / f"front_{cost}.png") for cost in analysis.costs]
    return paths
