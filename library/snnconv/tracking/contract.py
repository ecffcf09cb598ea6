"""The tracking contract's names: the store and experiment a sweep logs to by default, the tags, params
and metrics of its runs, and :class:`TrackingError`. Nothing here imports MLflow.

The contract (``docs/tracking.md`` states it in full) in brief: one parent run per sweep
(tag ``snnconv.role`` = ``sweep``, ``snnconv.select_on`` = ``val`` | ``test``), one nested child run
per trial (tags ``mlflow.parentRunId``, ``snnconv.role`` = ``trial``, ``trial_id``); accuracies in
percent, a ``val_`` prefix for the validation split and none for the test split; each trial's
operating point ``t_op``, ``val_acc_op``, ``acc_op``, ``energy_op_mj``, ``converged``; FAILED runs
carry an ``error`` tag; after the sweep each child has ``pareto_latency``, ``pareto_energy`` and
``pareto_omega`` tags. A finished trial logs its final model as an MLflow PyTorch model named ``model``
(a LoggedModel of the run: ``runs:/<run id>/model``) whose metadata rebuilds its SNN
(``snnconv.logged_model``), and its data set as the run's dataset input; the experiment is tagged
``mlflow.experimentKind`` = ``custom_model_development``.
"""

from __future__ import annotations

from ..method_registry import registered

#: MLflow 3's own default store: ``mlflow.db`` in the current folder (``mlflow ui`` there opens it)
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "snnconv"
ROLE_TAG = "snnconv.role"
PARENT_TAG = "mlflow.parentRunId"
#: the parent run's tag saying which split the sweep chose on: "val" (default) or "test"
SELECT_ON_TAG = "snnconv.select_on"
#: the experiment tag MLflow 3's UI reads to open an experiment on its model-training views (runs,
#: models) rather than on its GenAI ones (traces, evaluations), and the value it writes for training
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: the name of each trial's logged model: ``runs:/<run id>/model``
MODEL_NAME = "model"
#: the input tag MLflow uses for a dataset input's role (the "context" beside the dataset's name)
DATASET_CONTEXT_TAG = "mlflow.data.context"

#: the params every trial has, whatever its method; a loaded frame always has these columns (NaN if absent),
#: and those of every registered method's ``param_names`` (:func:`trial_param_names`)
COMMON_PARAMS = ("method", "model", "dataset", "seed", "stage1_epochs", "stage1_lr", "stage1_key", "levels",
                 "device", "gpu_name", "val_images", "test_images")
TRIAL_METRICS = ("val_ann_acc", "ann_acc", "val_snn_acc", "snn_acc", "t_op", "val_acc_op", "acc_op",
                 "energy_op_mj", "converged", "omega", "t_eff", "synops", "energy_mj", "equiv_max_abs_err")
#: the params a loaded frame holds as numbers (the rest stay text)
NUMERIC_PARAMS = ("lam", "lr", "scale_init", "percentile", "latency_tolerance", "val_images", "test_images")
#: each accuracy's 95 % Wilson interval (``TrialResult.intervals``): metrics ``<name>_low``, ``<name>_high``
INTERVAL_METRICS = tuple(f"{name}_{end}" for name in ("val_acc_op", "acc_op", "val_ann_acc", "ann_acc")
                         for end in ("low", "high"))
TRIAL_TAGS = ("trial_id", "error")
#: tag of a trial run that ended FAILED: "exception" (the trial's own code raised; rerunning it gives the
#: same error, so it is not retried) or "worker" (its process died: retried up to --max-failures)
FAILURE_TAG = "failure"


def trial_param_names() -> tuple[str, ...]:
    """The trial params of the contract: :data:`COMMON_PARAMS`, then each registered method's own
    (``ConversionMethod.param_names``: rnl's ``lam``, qcfs's ``levels_profile``, datanorm's ``percentile`` ...)."""
    names = dict.fromkeys(COMMON_PARAMS)
    for method in registered():
        names.update(dict.fromkeys(method.param_names))
    return tuple(names)


class TrackingError(ValueError):
    """A user-facing problem with the store, experiment or run asked for (message says which)."""
