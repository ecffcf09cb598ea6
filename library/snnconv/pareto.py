"""Pareto fronts of a sweep: accuracy at each trial's operating point against its latency, energy and Ω.

Everything here takes a trial table (a ``pandas.DataFrame``, one row per trial run, as
``snnconv.tracking.load_sweep`` reads it: ``run_id``, ``run_name``, ``status``, params such as
``method``, ``lam``, ``levels``, and metrics) and returns arrays or writes files; none of it knows
MLflow. ``snnconv.pareto_report`` builds the report folder and the ``analysis/pareto.py`` command
on top of this module. A sweep calls ``front_tags`` and ``write_sweep_fronts`` at its end.

What a front compares
---------------------
Each trial logs an **operating point**: ``t_op`` (latency: rate-coded IF time steps for rnl, an
integer; PASCAL's energy-normalised T_eff for qcfs, a float), ``val_acc_op`` / ``acc_op`` (accuracy
in percent at ``t_op`` on the validation / test split), ``energy_op_mj`` (energy per image at
``t_op``, mJ) and ``converged`` (0 when an rnl trial's validation acc(t) still left the tolerance
band in the second half of T_max).
The **accuracy objective** is ``val_acc_op`` when the sweep selects on the validation split
(``select_on = "val"``, the default) and ``acc_op`` when it selects on the test split
(``accuracy_column``); choosing on the test split leaves no unbiased estimate of the chosen runs'
accuracy. ``FRONTS`` names the three fronts (``FrontSpec``):

* ``latency``: max accuracy, min ``t_op``, all methods together;
* ``energy``: max accuracy, min ``energy_op_mj``, all methods together;
* ``omega``: max accuracy, min ``omega``, **within each method** (Ω of rnl is measured on its
  Rate-Norm activations, Ω of qcfs on a/λ: the two are not comparable). The analysis keeps one
  ``Front`` per method, keyed ``"omega:rnl"``, ``"omega:qcfs"``, each with its own knee and
  hypervolume; a run is on the omega front (column ``front_omega``, tag ``pareto_omega``) when it is
  on its own method's sub-front, and ``knee_omega`` marks each method's knee.

With both ``latency`` and ``energy`` analysed there is also a ``joint`` front over accuracy,
``t_op`` and ``energy_op_mj`` together (omega is per method, so it takes no part).

**Legacy sweeps**, logged before operating points existed, have only ``snn_acc`` (test split),
``omega`` and ``t_eff``; ``analyse_legacy`` gives them the old fronts (``LEGACY_FRONTS``, asked for
by the same names ``latency`` and ``omega``: snn_acc against ``t_eff`` and against ``omega``, all
methods together, named ``t_eff`` and ``omega`` as their ``pareto_*`` tags were). Those fronts were
chosen on the test split and mix two latency definitions (IF steps and PASCAL T_eff).

Definitions
-----------
* **Dominance**: run a dominates run b when a is no worse in every objective and strictly better in
  one (accuracy is maximised, every cost minimised). The **front** is the set of runs no other
  competing run dominates; identical points do not dominate each other, so duplicates are all on
  it. Runs that did not finish, or whose value of any objective is missing, NaN or infinite, are on
  no front and do not take part in the comparison.
* **Hypervolume**: the area (volume, for more than two objectives) that the front dominates inside
  the box bounded by the **reference point**: accuracy 0 % and, for each cost, ``1.1 x`` the largest
  finite value of that cost among the finished runs analysed (of the front's method, for a
  per-method front; all compared sweeps together, so their hypervolumes are comparable; 1.0 where
  that largest value is 0 or there is none). Units: percent x cost units. ``hypervolume_norm``
  divides by the box volume (``100 x reference cost ...``), a fraction in [0, 1].
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: the split a sweep selects its fronts on -> the accuracy column (percent) that is maximised
SELECTION_ACCURACY: Mapping[str, str] = {"val": "val_acc_op", "test": "acc_op"}
#: the accuracy of legacy sweeps (percent, test split)
LEGACY_ACCURACY = "snn_acc"
#: the accuracy end of every hypervolume box (percent)
ACCURACY_REFERENCE = 0.0
#: name of the front over accuracy and every cross-method cost together
JOINT = "joint"
#: the reference point's cost is (1 + REFERENCE_MARGIN) x the largest cost seen
REFERENCE_MARGIN = 0.1
#: plot colour and marker per method; any other method gets ``OTHER_STYLE``
METHOD_STYLES: Mapping[str, tuple[str, str]] = {"rnl": ("tab:blue", "o"), "qcfs": ("tab:orange", "s")}
OTHER_STYLE = ("tab:green", "^")
#: what Ω measures for each method (it is computed on different activations)
OMEGA_MEANING: Mapping[str, str] = {"rnl": "Ω on Rate-Norm activations", "qcfs": "Ω on a/λ"}
UNCONVERGED_LABEL = "unconverged (raise T_max)"


class AnalysisError(ValueError):
    """A problem with what was asked of the analysis (bad front or split, nothing to analyse)."""


class ParetoWarning(UserWarning):
    """Runs were left out of a front; the message names them."""


@dataclass(frozen=True)
class FrontSpec:
    """One named front: accuracy (maximised) against ``cost`` (minimised).

    ``name`` names the CSV columns ``front_<name>`` / ``knee_<name>``, the run tag
    ``pareto_<name>`` and the plot ``front_<name>.png``; ``per_method`` fronts are computed within
    each method separately (the cost is not comparable across methods); ``axis`` is the cost's axis
    title with its unit.
    """

    name: str
    cost: str
    per_method: bool
    axis: str

    @property
    def tag(self) -> str:
        """The child-run tag the sweep sets: ``pareto_<name>``."""
        return f"pareto_{self.name}"


FRONTS: Mapping[str, FrontSpec] = {
    "latency": FrontSpec("latency", "t_op", False, "latency t_op (rnl: IF time steps; qcfs: PASCAL T_eff)"),
    "energy": FrontSpec("energy", "energy_op_mj", False, "energy per image at the operating point (mJ)"),
    "omega": FrontSpec("omega", "omega", True, "Ω (mean)"),
}
FRONT_NAMES: tuple[str, ...] = tuple(FRONTS)
#: fronts of sweeps logged before operating points: snn_acc (test split) against t_eff and omega,
#: all methods together, under the names the sweep's tags had then (``pareto_t_eff``, ``pareto_omega``)
LEGACY_FRONTS: Mapping[str, FrontSpec] = {
    "latency": FrontSpec("t_eff", "t_eff", False, "T_eff (time steps; rnl and qcfs define it differently)"),
    "omega": FrontSpec("omega", "omega", False, "Ω (mean; rnl and qcfs measure it differently)"),
}


def accuracy_column(select_on: str) -> str:
    """The accuracy column a front maximises: ``val_acc_op`` for "val", ``acc_op`` for "test"."""
    if select_on not in SELECTION_ACCURACY:
        raise AnalysisError(f"select_on must be one of {list(SELECTION_ACCURACY)}, got {select_on!r}")
    return SELECTION_ACCURACY[select_on]


def resolve_fronts(names: Sequence[str], legacy: bool = False) -> tuple[FrontSpec, ...]:
    """The ``FrontSpec`` of each name in ``names`` (of ``FRONTS``, or ``LEGACY_FRONTS`` when ``legacy``)."""
    known = LEGACY_FRONTS if legacy else FRONTS
    names = (names,) if isinstance(names, str) else tuple(names)
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        what = "a sweep logged before operating points has the fronts" if legacy else "fronts must be one or more of"
        raise AnalysisError(f"{what} {list(known)}, got {list(names)}")
    if len(set(names)) != len(names):
        raise AnalysisError(f"fronts repeat: {list(names)}")
    return tuple(known[n] for n in names)


def is_legacy(trials: pd.DataFrame) -> bool:
    """Whether ``trials`` were logged before operating points: no run has a finite ``t_op``,
    ``val_acc_op`` or ``acc_op``, and some run has a finite ``snn_acc``."""
    def any_finite(column: str) -> bool:
        values = pd.to_numeric(trials[column], errors="coerce") if column in trials else pd.Series([], dtype=float)
        return bool(np.isfinite(values.to_numpy(dtype=float)).any())

    return not any(any_finite(c) for c in ("t_op", *SELECTION_ACCURACY.values())) and any_finite(LEGACY_ACCURACY)


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


def _require_columns(trials: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in trials.columns]
    if missing:
        raise AnalysisError(f"trial table lacks columns {missing} (has {list(trials.columns)})")


def finished_mask(trials: pd.DataFrame) -> np.ndarray:
    """(n,) bool: the runs that finished (every run when there is no ``status`` column)."""
    if "status" not in trials.columns:
        return np.ones(len(trials), dtype=bool)
    return (trials["status"] == "FINISHED").to_numpy()


def objective_values(trials: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """(n, d) float values of ``columns``; NaN for runs that did not finish and for missing columns."""
    values = np.array(trials.reindex(columns=list(columns)).apply(pd.to_numeric, errors="coerce"), dtype=float)
    values = values.reshape(len(trials), len(columns))
    values[~finished_mask(trials)] = np.nan
    return values


def method_names(trials: pd.DataFrame) -> np.ndarray:
    """(n,) object array: each run's ``method`` param, "unknown" where it is missing."""
    methods = trials["method"] if "method" in trials.columns else pd.Series([None] * len(trials), index=trials.index)
    return np.array([m if isinstance(m, str) and m else "unknown" for m in methods], dtype=object)


def methods_present(tables: Sequence[pd.DataFrame]) -> list[str]:
    """The methods of the finished runs of ``tables``: rnl, qcfs first, then the rest sorted."""
    return ordered_methods({m for t in tables for m in method_names(t)[finished_mask(t)]})


def ordered_methods(methods: Any) -> list[str]:
    """The distinct ``methods`` in display order: rnl, qcfs first, then the rest sorted."""
    found = set(methods)
    return [m for m in METHOD_STYLES if m in found] + sorted(found - set(METHOD_STYLES))


def front_groups(trials: pd.DataFrame, spec: FrontSpec,
                 methods: Sequence[str] | None = None) -> list[tuple[str, str | None, np.ndarray]]:
    """``(key, method, in_group)`` per front of ``spec``: the runs (bool, shape (n,)) that compete.

    A cross-method spec is one group, keyed by its name, of every run; a per-method spec is one
    group per method (default: those of the finished runs), keyed ``"<name>:<method>"``.
    """
    if not spec.per_method:
        return [(spec.name, None, np.ones(len(trials), dtype=bool))]
    names = method_names(trials)
    methods = methods if methods is not None else methods_present([trials])
    return [(f"{spec.name}:{m}", m, names == m) for m in methods]


def _group_values(trials: pd.DataFrame, columns: Sequence[str], in_group: np.ndarray) -> np.ndarray:
    """``objective_values`` with the rows outside the group set to NaN (so they neither compete nor show)."""
    values = objective_values(trials, columns)
    values[~in_group] = np.nan
    return values


def spec_members(trials: pd.DataFrame, spec: FrontSpec, accuracy: str) -> np.ndarray:
    """(n,) bool: the rows of ``trials`` on front ``spec`` (for a per-method spec, on their method's front)."""
    members = np.zeros(len(trials), dtype=bool)
    for _, _, in_group in front_groups(trials, spec):
        members |= pareto_mask(_group_values(trials, [accuracy, spec.cost], in_group), ["max", "min"])
    return members


def front_tags(trials: pd.DataFrame, select_on: str = "val") -> dict[str, dict[str, str]]:
    """``{run_id: {"pareto_latency": "true" | "false", "pareto_energy": ..., "pareto_omega": ...}}``
    for every row: the tags the sweep sets on each child run.

    "true" where the run is on that front of ``FRONTS`` (accuracy = ``accuracy_column(select_on)``);
    runs that did not finish or whose accuracy or cost is missing, NaN or inf get "false".
    """
    accuracy = accuracy_column(select_on)
    _require_columns(trials, ["run_id"])
    table = trials.reset_index(drop=True)
    tags: dict[str, dict[str, str]] = {run_id: {} for run_id in table["run_id"]}
    for spec in FRONTS.values():
        for run_id, member in zip(table["run_id"], spec_members(table, spec, accuracy)):
            tags[run_id][spec.tag] = "true" if member else "false"
    return tags


@dataclass
class Front:
    """One front: ``members[i]`` says whether row i of the analysed table is on it.

    ``key`` is unique in an analysis ("latency", "omega:rnl", "joint"); ``name`` is the front's
    name ("omega" for both omega sub-fronts); ``method`` is set for a per-method sub-front.
    ``objectives`` = (accuracy column, cost column, ...); ``knee`` is a row position (2-D fronts
    only); ``reference`` has one value per objective.
    """

    key: str
    name: str
    method: str | None
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

    ``runs`` is the table (index 0..n-1) plus ``front_<name>`` and ``knee_<name>`` bool columns per
    analysed spec (the union over methods for a per-method spec) and ``front_joint``; ``accuracy``
    is the maximised column; ``select_on`` the split it comes from ("val" | "test"); ``legacy`` is
    True for a sweep logged before operating points; ``fronts`` maps each ``Front.key`` to its
    front; ``reference`` maps each cost key (the cost, or "<cost>:<method>" for a per-method front)
    to its reference value; ``skipped`` maps each metric to the finished runs left out for a
    missing/NaN/inf value.
    """

    runs: pd.DataFrame
    accuracy: str
    select_on: str
    legacy: bool
    specs: tuple[FrontSpec, ...]
    fronts: dict[str, Front]
    reference: dict[str, float]
    counts: dict[str, int]
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def spec(self, name: str) -> FrontSpec:
        """The analysed ``FrontSpec`` called ``name``."""
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(f"front {name!r} was not analysed (analysed: {[s.name for s in self.specs]})")

    def spec_fronts(self, name: str) -> list[Front]:
        """The fronts of spec ``name``: one, or one per method for a per-method spec."""
        return [front for front in self.fronts.values() if front.name == name]

    def front_runs(self, key: str) -> pd.DataFrame:
        """The rows on front ``key`` (a ``Front.key``, or a spec name for the union over methods),
        best accuracy first (grouped by method for a per-method spec)."""
        if key in self.fronts:
            members, cost, per_method = self.fronts[key].members, self.fronts[key].objectives[1], False
        else:
            spec = self.spec(key)
            members, cost, per_method = self.runs[f"front_{spec.name}"].to_numpy(bool), spec.cost, spec.per_method
        rows = self.runs[members].sort_values([self.accuracy, cost], ascending=[False, True], kind="stable")
        if per_method:
            order = {m: i for i, m in enumerate(ordered_methods(method_names(rows)))}
            rows = rows.iloc[np.argsort([order[m] for m in method_names(rows)], kind="stable")]
        return rows

    def members_of_any_2d_front(self) -> pd.DataFrame:
        """Rows on at least one accuracy-vs-cost front, best accuracy first."""
        on_any = np.zeros(len(self.runs), dtype=bool)
        for front in self.fronts.values():
            if front.key != JOINT:
                on_any |= front.members
        return self.runs[on_any].sort_values(self.accuracy, ascending=False, kind="stable")

    def unconverged(self) -> pd.DataFrame:
        """Finished runs that logged ``converged`` = 0 (their accuracy had not settled at T_max)."""
        return self.runs[_unconverged(self.runs)]


def run_ref(row: Mapping[str, Any]) -> str:
    """How a run is named in messages: ``run name (first 8 characters of the id)``."""
    run_id = str(row.get("run_id", ""))
    name = row.get("run_name")
    name = name if isinstance(name, str) and name else run_id
    return f"{name} ({run_id[:8]})" if name != run_id else run_id


def _cost_key(cost: str, method: str | None) -> str:
    return cost if method is None else f"{cost}:{method}"


def reference_point(tables: Sequence[pd.DataFrame], fronts: Sequence[str] = FRONT_NAMES, *,
                    legacy: bool = False) -> dict[str, float]:
    """The hypervolume reference of the module docstring over the finished runs of all ``tables``.

    ``fronts`` are names of ``FRONTS`` (of ``LEGACY_FRONTS`` when ``legacy``). Keys: each
    cross-method front's cost ("t_op"), and "<cost>:<method>" for each method of a per-method front
    ("omega:rnl"); values in the cost's units.
    """
    return _reference(tables, resolve_fronts(fronts, legacy))


def _reference(tables: Sequence[pd.DataFrame], specs: Sequence[FrontSpec]) -> dict[str, float]:
    reference: dict[str, float] = {}
    methods = methods_present(tables)
    for spec in specs:
        for method in (methods if spec.per_method else [None]):
            values = np.concatenate([np.array([])] + [_cost_values(t, spec.cost, method) for t in tables])
            values = values[np.isfinite(values)]
            largest = float(values.max()) if len(values) else 0.0
            reference[_cost_key(spec.cost, method)] = (1.0 + REFERENCE_MARGIN) * largest if largest > 0 else 1.0
    return reference


def _cost_values(trials: pd.DataFrame, cost: str, method: str | None) -> np.ndarray:
    """The finished runs' values of ``cost`` (of ``method`` only, unless None); NaN where not finite."""
    if cost not in trials.columns:
        return np.array([])
    values = objective_values(trials, [cost])[:, 0]
    return values if method is None else values[method_names(trials) == method]


def analyse(trials: pd.DataFrame, fronts: Sequence[str] = FRONT_NAMES, select_on: str = "val",
            reference: Mapping[str, float] | None = None) -> ParetoAnalysis:
    """The ``fronts`` (names of ``FRONTS``) of ``trials``, accuracy = ``accuracy_column(select_on)``;
    with both latency and energy, also the joint front over accuracy, ``t_op`` and ``energy_op_mj``.

    ``reference`` (see ``reference_point``) defaults to this table's own. Warns (``ParetoWarning``,
    naming the runs) about finished runs left out for a missing, NaN or inf value. Raises
    ``AnalysisError`` for an unknown front or split, or when no run finished with a finite accuracy.
    """
    accuracy = accuracy_column(select_on)
    return _analyse(trials, resolve_fronts(fronts), accuracy, select_on, False, reference)


def analyse_legacy(trials: pd.DataFrame, fronts: Sequence[str] = tuple(LEGACY_FRONTS),
                   reference: Mapping[str, float] | None = None) -> ParetoAnalysis:
    """The fronts of a sweep logged before operating points (``LEGACY_FRONTS``: snn_acc of the test
    split against t_eff and omega, all methods together, and jointly); otherwise as ``analyse``."""
    return _analyse(trials, resolve_fronts(fronts, legacy=True), LEGACY_ACCURACY, "test", True, reference)


def _analyse(trials: pd.DataFrame, specs: tuple[FrontSpec, ...], accuracy: str, select_on: str, legacy: bool,
             reference: Mapping[str, float] | None) -> ParetoAnalysis:
    _require_columns(trials, ["run_id", "status"])
    runs = trials.reset_index(drop=True).copy()
    for column in (accuracy, *(s.cost for s in specs)):
        if column not in runs:
            runs[column] = math.nan
    finished = finished_mask(runs)
    counts = {"runs": len(runs), "finished": int(finished.sum()),
              "failed": int((runs["status"] == "FAILED").sum())}
    counts["unfinished"] = counts["runs"] - counts["finished"] - counts["failed"]
    skipped = _skipped_runs(runs, finished, (accuracy, *dict.fromkeys(s.cost for s in specs)))
    if not np.isfinite(objective_values(runs, [accuracy])).any():
        raise AnalysisError(
            f"nothing to analyse: {counts['runs']} trial runs, {counts['finished']} finished with a finite "
            f"{accuracy}, {counts['failed']} failed, {counts['unfinished']} not finished")
    reference = {**_reference([runs], specs), **(reference or {})}
    fronts: dict[str, Front] = {}
    for spec in specs:
        for key, method, in_group in front_groups(runs, spec):
            cost_key = _cost_key(spec.cost, method)
            fronts[key] = _front(runs, key, spec.name, method, (accuracy, spec.cost), in_group,
                                 (reference[cost_key],))
    joint_costs = [s.cost for s in specs if not s.per_method]
    if len(joint_costs) >= 2:
        fronts[JOINT] = _front(runs, JOINT, JOINT, None, (accuracy, *joint_costs), np.ones(len(runs), dtype=bool),
                               tuple(reference[c] for c in joint_costs))
    _add_flag_columns(runs, specs, fronts)
    return ParetoAnalysis(runs=runs, accuracy=accuracy, select_on=select_on, legacy=legacy, specs=specs,
                          fronts=fronts, reference=reference, counts=counts, skipped=skipped)


def _add_flag_columns(runs: pd.DataFrame, specs: Sequence[FrontSpec], fronts: Mapping[str, Front]) -> None:
    """Add ``front_<name>`` / ``knee_<name>`` per spec (unions over a per-method spec's fronts) and
    ``front_joint`` to ``runs``, in place."""
    for spec in specs:
        members = np.zeros(len(runs), dtype=bool)
        knees = np.zeros(len(runs), dtype=bool)
        for front in (f for f in fronts.values() if f.name == spec.name):
            members |= front.members
            if front.knee is not None:
                knees[front.knee] = True
        runs[f"front_{spec.name}"] = members
        runs[f"knee_{spec.name}"] = knees
    if JOINT in fronts:
        runs[f"front_{JOINT}"] = fronts[JOINT].members


def _skipped_runs(runs: pd.DataFrame, finished: np.ndarray, metrics: Sequence[str]) -> dict[str, list[str]]:
    """Finished runs with a missing/NaN/inf value, per metric; one warning per metric names them."""
    skipped: dict[str, list[str]] = {}
    for metric in metrics:
        bad = finished & ~np.isfinite(pd.to_numeric(runs[metric], errors="coerce").to_numpy(dtype=float))
        if bad.any():
            names = [run_ref(row) for _, row in runs[bad].iterrows()]
            skipped[metric] = names
            warnings.warn(f"left out of the fronts using {metric}: {len(names)} finished run(s) with a missing, "
                          f"NaN or inf {metric}: {', '.join(names)}", ParetoWarning, stacklevel=4)
    return skipped


def _front(runs: pd.DataFrame, key: str, name: str, method: str | None, objectives: tuple[str, ...],
           in_group: np.ndarray, cost_reference: tuple[float, ...]) -> Front:
    """The front of ``objectives`` (accuracy first, then costs) among the rows ``in_group``."""
    values = _group_values(runs, objectives, in_group)
    senses = ["max"] + ["min"] * (len(objectives) - 1)
    members = pareto_mask(values, senses)
    ref = (ACCURACY_REFERENCE, *(float(v) for v in cost_reference))
    volume = hypervolume(values[members], senses, ref)
    box = math.prod(ref[1:]) * (100.0 - ref[0])
    return Front(key=key, name=name, method=method, objectives=objectives, members=members,
                 knee=knee_index(values, senses) if len(objectives) == 2 else None,
                 hypervolume=volume, hypervolume_norm=volume / box if box > 0 else math.nan, reference=ref)


# =============================================================================================
# labels, tables and files
# =============================================================================================

#: columns of the terminal / report front table: (column, heading); "latency" and "converged" are
#: derived per row (``latency_text``, ``converged_text``)
TABLE_COLUMNS = (("run_name", "run"), ("method", "method"), ("lam", "λ"), ("lr", "lr"), ("levels", "levels"),
                 ("val_acc_op", "val_acc_op"), ("val_ci", "val 95% CI"), ("acc_op", "acc_op"),
                 ("test_ci", "test 95% CI"), ("latency", "latency"), ("energy_op_mj", "energy_op_mj"),
                 ("omega", "omega"), ("converged", "converged"))
#: the front table of a legacy sweep (no operating point)
LEGACY_TABLE_COLUMNS = (("run_name", "run"), ("method", "method"), ("lam", "λ"), ("lr", "lr"),
                        ("sharescale", "sharescale"), ("levels", "levels"), ("snn_acc", "snn_acc"),
                        ("omega", "omega"), ("t_eff", "t_eff"))


def as_number(value: Any) -> float:
    """``value`` as a float; NaN when it is missing or not a number."""
    return float(pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0])


def latency_text(row: Mapping[str, Any]) -> str:
    """The operating point's latency with its kind: "12 IF steps" (rnl), "T_eff 3.2" (qcfs); "" if none."""
    t_op = as_number(row.get("t_op"))
    if not np.isfinite(t_op):
        return ""
    method = row.get("method")
    if method == "rnl":
        steps = int(round(t_op))
        return f"{steps} IF step{'' if steps == 1 else 's'}"
    if method == "qcfs":
        return f"T_eff {t_op:.3g}"
    return f"t_op {t_op:.3g}"


def interval_text(row: Mapping[str, Any], name: str) -> str:
    """``[low, high]`` of metric ``name``'s 95 % Wilson interval (``<name>_low``, ``<name>_high``; percent), or for
    a configuration run with repeats ``± std (min–max)`` across its seeds; "-" when the run has neither."""
    spread = as_number(row.get(f"{name}_std"))
    if np.isfinite(spread):
        low, high = as_number(row.get(f"{name}_min")), as_number(row.get(f"{name}_max"))
        return f"± {spread:.2f} ({low:.1f}–{high:.1f})"
    low, high = as_number(row.get(f"{name}_low")), as_number(row.get(f"{name}_high"))
    return f"[{low:.1f}, {high:.1f}]" if np.isfinite(low) and np.isfinite(high) else "-"


def converged_text(row: Mapping[str, Any]) -> str:
    """ "yes", "no: raise T_max" (``converged`` = 0), or "-" when not logged."""
    converged = as_number(row.get("converged"))
    if not np.isfinite(converged):
        return "-"
    return "yes" if converged else "no: raise T_max"


def setting_label(row: Mapping[str, Any]) -> str:
    """A run's setting: ``λ=<lam>`` for rnl, the L profile (or the compact L list) for qcfs."""
    method = row.get("method")
    lam = as_number(row.get("lam"))
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


def run_label(row: Mapping[str, Any], with_latency: bool = True) -> str:
    """A plot label: the setting and, when logged, the operating point's latency:
    ``λ=0.1 · 12 IF steps`` (rnl), ``L=al · T_eff 3.2`` (qcfs)."""
    latency = latency_text(row) if with_latency else ""
    return f"{setting_label(row)} · {latency}" if latency else setting_label(row)


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


def front_table(runs: pd.DataFrame, legacy: bool = False) -> pd.DataFrame:
    """The display table of ``runs`` (``TABLE_COLUMNS``, or ``LEGACY_TABLE_COLUMNS``; missing values empty)."""
    derived = {"latency": lambda row: latency_text(row) or "-", "converged": converged_text,
               "val_ci": lambda row: interval_text(row, "val_acc_op"),
               "test_ci": lambda row: interval_text(row, "acc_op")}
    table = {}
    for column, heading in (LEGACY_TABLE_COLUMNS if legacy else TABLE_COLUMNS):
        if not legacy and column in derived:
            table[heading] = [derived[column](row) for _, row in runs.iterrows()]
        else:
            table[heading] = runs[column] if column in runs else math.nan
    return pd.DataFrame(table, index=runs.index).reset_index(drop=True)


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
    """``pareto.csv``: every run with its params, metrics, status and ``front_*`` / ``knee_*`` flags."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    analysis.runs.to_csv(path, index=False)
    return path


# =============================================================================================
# plots (matplotlib's Agg canvas; no pyplot, so no global backend state)
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
    return {"val_acc_op": "validation accuracy at t_op (%)", "acc_op": "test accuracy at t_op (%)",
            "snn_acc": "SNN test accuracy (%)", "energy_mj": "energy per image (mJ)",
            "synops": "synaptic operations per image", **costs}.get(column, column)


def method_style(method: str) -> tuple[str, str]:
    """(colour, marker) of ``method`` in every plot."""
    return METHOD_STYLES.get(method, OTHER_STYLE)


def panel_title(spec: FrontSpec, method: str) -> str:
    """Title of one method's panel of a per-method front (says what its Ω measures)."""
    if spec.cost == "omega" and method in OMEGA_MEANING:
        return f"{method}: {OMEGA_MEANING[method]}"
    return method


def _unconverged(runs: pd.DataFrame) -> np.ndarray:
    """(n,) bool: finished runs with ``converged`` = 0."""
    if "converged" not in runs.columns:
        return np.zeros(len(runs), dtype=bool)
    return finished_mask(runs) & (pd.to_numeric(runs["converged"], errors="coerce").to_numpy(dtype=float) == 0)


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
    methods, hollow = method_names(runs), _unconverged(runs)
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
