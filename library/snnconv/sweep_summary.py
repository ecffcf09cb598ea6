"""What a finished sweep prints: its trials, best selection accuracy first, the three Pareto fronts,
the runs tied with them, and the commands to look further (:func:`print_summary`)."""

from __future__ import annotations

from pathlib import Path

from . import tracking
from .sweep import FRONT_TAGS, SweepOutcome
from .sweep_spec import selection_metric


def print_summary(outcome: SweepOutcome) -> None:
    """The trials (best selection accuracy first), the three fronts, and the commands to look further."""
    import pandas as pd

    from .pareto_tables import converged_text, interval_text, latency_text, setting_label

    table = outcome.table.copy()
    accuracy = selection_metric(outcome.select_on)
    if len(table):
        table["latency"] = [latency_text(row) or "-" for _, row in table.iterrows()]
        table["setting"] = [setting_label(row) for _, row in table.iterrows()]  # λ=0.1, L=al, p=99.9 ...
        table["converged"] = [converged_text(row) for _, row in table.iterrows()]
        for name, column in (("val_acc_op", "val 95% CI"), ("acc_op", "test 95% CI")):
            table[column] = [interval_text(row, name) for _, row in table.iterrows()]
    columns = [c for c in ("run_name", "method", "setting", "status", "val_acc_op", "val 95% CI",
                           "acc_op", "test 95% CI", "latency", "energy_op_mj", "omega", "converged", *FRONT_TAGS)
               if c in table.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print()
        if len(table):
            table["_unfinished"] = table["status"] != "FINISHED"  # finished trials first, best first
            ordered = table.sort_values(["_unfinished", accuracy], ascending=[True, False])[columns]
            print(ordered.to_string(index=False, na_rep="-"))
        print(f"\n(val_acc_op: validation accuracy at the operating point t_op, which chose; acc_op: test "
              f"accuracy at the same t_op, the result to report{'; CHOSEN ON TEST' if accuracy == 'acc_op' else ''}; "
              f"95% CI: the Wilson score interval of each, from its split's image count)")
        for flag, meaning in FRONT_TAGS.items():
            on_front = table[table[flag]] if flag in table and len(table) else table.iloc[0:0]
            names = ", ".join(f"{row['run_name']} ({row[accuracy]:.1f}% at {row['latency']})"
                              for _, row in on_front.sort_values(accuracy, ascending=False).iterrows())
            print(f"{flag} ({meaning}): {names or 'none'}")
        for sentence in outcome.ties:
            print(f"tied: {sentence}")
    finished = int((table["status"] == "FINISHED").sum()) if len(table) else 0
    unsettled = int(table["converged"].str.startswith("no").sum()) if len(table) else 0
    planned = max(outcome.total, len(table))
    print(f"\n{finished} of {planned} trials finished; Pareto fronts: {outcome.report_dir}")
    if outcome.status != "FINISHED":
        print(f"the sweep was interrupted: {planned - len(table)} trial(s) never started; --resume runs what is left")
    if outcome.waiting:
        print(f"{outcome.waiting} finished trial result(s) wait to be logged (kept in {outcome.storage_dir}): "
              f"--resume {outcome.storage_dir.name} logs them")
    if unsettled:
        print(f"{unsettled} trial(s) did not converge within T_max (their acc(t) still moves in its second half): "
              f"raise t_max for them")
    uri = outcome.tracking_uri
    ui = "mlflow ui" if uri.startswith("sqlite:") and uri.endswith(str(Path.cwd() / "mlflow.db")) else \
        f"mlflow ui --backend-store-uri {uri}"
    print("Look further:")
    print(f"  {ui}    then open {tracking.runs_url(uri, outcome.experiment_id)}")
    print(f"  python analysis/pareto.py --sweep {outcome.parent_run_id}"
          + ("" if uri.endswith(str(Path.cwd() / "mlflow.db")) else f" --tracking-uri {uri}"))
