"""Pareto fronts of a sweep: accuracy at each trial's operating point against its latency, energy and Ω.

Everything here takes a trial table (a ``pandas.DataFrame``, one row per trial run, as
``snnconv.tracking.load_sweep`` reads it: ``run_id``, ``run_name``, ``status``, params such as
``method``, ``lam``, ``levels``, and metrics) and returns arrays and tables; none of it knows
MLflow. It applies ``snnconv.pareto_arrays`` (non-dominated rows, hypervolume and knee of plain
arrays). On top of it: ``snnconv.pareto_tables`` (labels, tables, the CSV), ``snnconv.pareto_plots``
(the PNGs), ``snnconv.pareto_report`` (the report folder) and ``snnconv.pareto_command`` (the
``analysis/pareto.py`` command). A sweep calls ``front_tags`` and ``pareto_plots.write_sweep_fronts``
at its end.

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

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .method_registry import registered
from .pareto_arrays import hypervolume, knee_index, pareto_mask

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


def unconverged_mask(trials: pd.DataFrame) -> np.ndarray:
    """(n,) bool: finished runs with ``converged`` = 0 (their accuracy had not settled at T_max)."""
    if "converged" not in trials.columns:
        return np.zeros(len(trials), dtype=bool)
    return finished_mask(trials) & (pd.to_numeric(trials["converged"], errors="coerce").to_numpy(dtype=float) == 0)


def method_names(trials: pd.DataFrame) -> np.ndarray:
    """(n,) object array: each run's ``method`` param, "unknown" where it is missing."""
    methods = trials["method"] if "method" in trials.columns else pd.Series([None] * len(trials), index=trials.index)
    return np.array([m if isinstance(m, str) and m else "unknown" for m in methods], dtype=object)


def methods_present(tables: Sequence[pd.DataFrame]) -> list[str]:
    """The methods of the finished runs of ``tables``: rnl, qcfs first, then the rest sorted."""
    return ordered_methods({m for t in tables for m in method_names(t)[finished_mask(t)]})


def ordered_methods(methods: Any) -> list[str]:
    """The distinct ``methods`` in display order: the registered ones in registration order (rnl, qcfs,
    datanorm), then any other sorted."""
    found = set(methods)
    order = [method.name for method in registered()]
    return [m for m in order if m in found] + sorted(found - set(order))


def if_methods() -> list[str]:
    """The registered methods whose operating point lies on a rate-coded IF acc(t) curve (``snn == "if"``)."""
    return [method.name for method in registered() if method.snn == "if"]


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
        return self.runs[unconverged_mask(self.runs)]


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
