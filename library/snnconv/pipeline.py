"""One trial end to end: ``run_trial(config) -> TrialResult``. No Ray or MLflow here.

Data flow::

    TrialConfig -> the method's runner (snnconv.methods.<method>.run, found in the registry):
       data -> model(the method's stage-1 activation)
       stage 1: ANN weights through the cache (trained once per key)       (snnconv.trial.stage1)
       the method's own stage 2 (rnl: RIL scale training | qcfs: layerwise-L fine-tune |
       datanorm: activation percentiles) -> convert -> simulate (validation and test splits)
       -> operating point -> metrics -> TrialResult                         (snnconv.trial.TrialResult)

Every choice a sweep makes uses the validation split: a trial's operating point (``t_op``,
``val_acc_op``, see :mod:`snnconv.operating_point`), its Ω and its energy at ``t_op`` are measured on
validation images; the test split gives the accuracies reported beside them (``acc_op``, ``ann_acc``,
``snn_acc``) and the test-set operation counts (``synops``, ``energy_mj``).

Progress and intermediate metrics go to an optional ``on_progress(stage, metrics)`` callback, which
the sweep turns into ``tune.report`` calls.
"""

from __future__ import annotations

from .config import TrialConfig, validate
from .method_registry import get_method
from .train import check_device
from .trial import (
    ProgressCallback,
    Stage1Result,
    TrialResult,
    build_trial_model,
    ignore_progress,
    stage1,
    stage1_activation,
    stage1_key,
    stage1_parameters,
    stage1_warnings,
)

__all__ = ["ProgressCallback", "Stage1Result", "TrialResult", "build_trial_model", "run_trial", "stage1",
           "stage1_activation", "stage1_key", "stage1_parameters", "stage1_warnings"]


def run_trial(config: TrialConfig, on_progress: ProgressCallback | None = None, *,
              gpus_assigned: int = 0) -> TrialResult:
    """Run one trial of ``config.method`` end to end and return its :class:`TrialResult`.

    ``on_progress(stage, metrics)`` (optional) receives progress: "stage1" per trained epoch,
    "stage2" at every RIL validation (rnl: val_acc, omega, step, ...), "finetune" per layerwise-L
    fine-tune epoch (qcfs: epoch, val_acc, ...), "simulate" once at the end (rnl, datanorm). "stage2" and
    "finetune" also carry ``progress``: the fraction of that stage done (0-1; steps for rnl, epochs
    for qcfs), the unit a scheduler compares both methods in.

    ``gpus_assigned``: how many GPUs the scheduler gave the trial (Ray: ``len(ray.get_gpu_ids())``).
    The device is checked before any work (:func:`snnconv.train.check_device`): a trial given a GPU
    that torch cannot see raises :class:`snnconv.train.DeviceError` instead of running on the CPU.
    """
    validate(config)
    method = get_method(config.method)
    device = check_device(config.device, gpus_assigned)
    return method.run(config, on_progress or ignore_progress, device)
