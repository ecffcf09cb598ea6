"""A sweep's progress as it runs (imports ray lazily): :func:`sweep_callback` is the Ray Tune callback that
prints one line per finished, stopped or failed trial and records in MLflow the trials Tune stopped or gave up
on (a KILLED run tagged pruned; a FAILED run with an ``error`` tag). The summary printed when the sweep ends
is :mod:`snnconv.sweep_summary`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import tracking
from .config import ConfigError
from .method_registry import find_method
from .sweep_spec import SweepSpec, trial_params
from .sweep_trial import PROGRESS, WAITING, trial_config, trial_name
from .tracking_retry import TrackingUnavailable


def _trial_config_params(trial, spec: SweepSpec, bases: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The MLflow params of a Tune trial, computed in the driver (for a run the trial never opened)."""
    try:
        return trial_params(trial_config(trial.config, spec, bases))
    except (ConfigError, KeyError) as error:
        return {"method": trial.config.get("method", "?"), "config_error": str(error)}


def _error_text(trial) -> tuple[str, str]:
    """(kind, text) of a Tune trial's error: kind "worker" when its process died, else "exception"."""
    error_file = getattr(trial, "error_file", None)  # Tune's local record, written before the callbacks run
    if error_file and Path(error_file).is_file():
        text = Path(error_file).read_text().split("Failure # ")[-1].split("\n", 1)[-1].strip()
    else:
        text = str(trial.get_error() or "the trial failed (Tune recorded no error)")
    died = any(mark in text for mark in ("ActorDiedError", "died unexpectedly", "WorkerCrashedError", "exit code",
                                         "SIGKILL", "OutOfMemoryError"))
    if died:
        text = f"the trial's worker process died (after {trial.num_failures} attempt(s)): {text}"
    # like a dead worker, a trial that could not open its run (the tracking server away) may run again
    return ("worker" if died or "TrackingUnavailable" in text else "exception"), text


def sweep_callback(total: int, spec: SweepSpec, bases: Mapping[str, dict[str, Any]],
                    tracker: tracking.SweepTracker):
    """A Tune callback: one line per finished, stopped or failed trial, and a FAILED MLflow run with
    an ``error`` tag for every trial Tune gives up on (however it failed, even before it logged)."""
    from ray import tune

    from .pareto_tables import interval_text

    class SweepProgress(tune.Callback):
        def __init__(self) -> None:
            self.done = 0

        def setup(self, **info):
            # a resumed sweep counts the trials MLflow already holds an outcome for
            runs = tracking.search_children(tracker.client, tracker.experiment_id, tracker.parent_run_id,
                                            "attributes.status != 'RUNNING'")  # (MLflow has no status IN)
            self.done = len({r.data.tags.get("trial_id") for r in runs if r.info.status in ("FINISHED", "FAILED")})

        def _record(self, what: str, write: Callable[[], Any]) -> None:
            """A write of the driver's; an unreachable server is a warning (the end of the sweep closes the run)."""
            try:
                write()
            except TrackingUnavailable as error:
                print(f"warning: could not {what}: {error}", file=sys.stderr, flush=True)

        def _prefix(self, trial) -> str:
            return f"[{self.done}/{total}] {trial.trial_id} {trial.config.get('method', '?'):4s}"

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            if r.get("from_mlflow"):
                print(f"[{self.done}/{total}] {trial.trial_id} already finished in MLflow "
                      f"(run {r.get('mlflow_run_id')}): not run again", flush=True)
                return
            self.done += 1
            if r.get("stage") != "done":  # stopped by the scheduler: what it had, not a result
                progress, val_acc = float(r.get(PROGRESS, 0.0)), float(r.get("val_acc", math.nan))
                self._record("record the pruned trial", lambda: tracking.record_pruned(
                    tracker, trial.trial_id, spec.scheduler, r.get("stage", "start-up"), progress, val_acc))
                print(f"{self._prefix(trial)} stopped by {spec.scheduler} at {progress:.0%} of "
                      f"{r.get('stage', 'start-up')}: val_acc {val_acc:6.2f}%  (run KILLED, tag pruned)", flush=True)
                return
            method = find_method(trial.config.get("method"))
            unit = "T_eff" if method is not None and method.snn == "pascal" else "IF steps"
            settled = "" if r.get("converged", 1.0) else "  (not converged: raise T_max)"
            if r.get("warnings"):
                settled += f"  warnings: {r['warnings']} (the run's warning.* tags say more)"
            if r.get(WAITING):
                settled += "  (its result waits to be logged: the tracking server did not answer)"
            print(f"{self._prefix(trial)} done   "
                  f"val {r.get('val_acc_op', math.nan):6.2f}% {interval_text(r, 'val_acc_op')}  "
                  f"test {r.get('acc_op', math.nan):6.2f}% {interval_text(r, 'acc_op')}  "
                  f"at t_op {r.get('t_op', math.nan):6.2f} {unit:8s}  omega {r.get('omega', math.nan):7.3f}  "
                  f"{r.get('trial_seconds', math.nan):5.1f}s{settled}", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.done += 1
            kind, text = _error_text(trial)
            self._record("record the trial's failure", lambda: tracking.record_trial_failure(
                tracker, trial.trial_id, trial_name(trial), _trial_config_params(trial, spec, bases), text, kind))
            first = text.splitlines()[0][:160] if text else ""
            print(f"{self._prefix(trial)} FAILED: {first} (recorded in MLflow; the sweep goes on)", flush=True)

    return SweepProgress()
