"""The ``analysis/pareto.py`` command line: read a sweep from MLflow, analyse its fronts, print them
and write the report folder.

``main`` reads the runs through ``snnconv.tracking`` (MLflow), analyses them (``snnconv.pareto``),
prints each front as a table, writes the report (``snnconv.pareto_report.write_report``) and, with
``--register``, registers the latency front's knee in MLflow's Model Registry.

Which accuracy a front maximises comes from ``--select-on`` (default: the sweep's own
``snnconv.select_on`` tag): ``val_acc_op`` (validation split) or ``acc_op`` (test split; the
command then warns that the fronts are biased). A sweep logged before operating points existed (no
``select_on`` tag, no ``t_op`` / ``val_acc_op`` metrics) gets the legacy fronts of
``pareto.analyse_legacy`` and a warning that they were chosen on the test split.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import paired, tracking
from .fixed_latency import fixed_latency_table, parse_published, references_text, step_curves
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
    if_methods,
    is_legacy,
    method_names,
    reference_point,
    resolve_fronts,
    run_ref,
)
from .pareto_report import (
    LEGACY_WARNING,
    TEST_CURVE,
    TEST_SPLIT_WARNING,
    VAL_CURVE,
    Comparison,
    FixedLatency,
    ReportFolderError,
    check_report_folder,
    front_text,
    hypervolume_table,
    selection_text,
    unconverged_text,
    write_report,
)
from .pareto_tables import as_number, format_table, front_table, latency_text

#: the exit status of a user error (as argparse uses for a bad option)
USER_ERROR = 2


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
                   f"snnconv.logged_model.evaluate_snn(model, metadata).")
    return tracking.register_run_model(sweep.tracking_uri, str(knee["run_id"]), name, description=description,
                                       tags=tags)


def fixed_latency_of(sweep: tracking.SweepRuns) -> FixedLatency:
    """The papers' table of ``sweep``: the stepped curves of its finished runs and its logged published figures."""
    client = tracking.client_for(sweep.tracking_uri)
    published = parse_published(tracking.published_figures(client, sweep.sweep_id), list(step_curves()))
    trials = sweep.trials
    curves: dict[str, dict[str, pd.Series]] = {}  # curve name -> run id -> curve; methods may share a name
    for method, keys in step_curves().items():
        run_ids = trials.loc[(trials["status"] == "FINISHED") & (method_names(trials) == method), "run_id"].tolist()
        for key in keys:
            if run_ids:
                curves.setdefault(key, {}).update(tracking.metric_histories(sweep.tracking_uri, run_ids, key))
    return FixedLatency(fixed_latency_table(trials, curves, published), published)


def _curves(sweep: tracking.SweepRuns, analysis: ParetoAnalysis) -> dict[str, dict[str, pd.Series]]:
    """The stepped metrics the acc(t) plot draws, for the runs on a front whose operating point lies on an IF
    curve (rnl, datanorm; every run of a legacy sweep)."""
    on_fronts = analysis.members_of_any_2d_front()
    if analysis.legacy:
        return {TEST_CURVE: tracking.metric_histories(sweep.tracking_uri, on_fronts["run_id"], TEST_CURVE)}
    on_curves = on_fronts.loc[np.isin(method_names(on_fronts), if_methods()), "run_id"].tolist()
    return {key: tracking.metric_histories(sweep.tracking_uri, on_curves, key) for key in (VAL_CURVE, TEST_CURVE)}


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
