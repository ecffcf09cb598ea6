"""Stage 1 first: each stage-1 network a sweep's trials share is trained once, before them, as Ray tasks
in parallel (imports ray lazily), so that no trial waits on another holding its GPU share.

:func:`stage1_plan` picks the networks (one per method whose search space leaves its stage-1 key alone, one
per seed with ``repeats``); :func:`train_stage1_first` trains them and prints their progress from what they
log to the sweep's parent run in MLflow. They land in the stage-1 cache where the trials look for them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from . import tracking
from .config import apply_overrides, from_dict
from .method_registry import ConversionMethod, ensure_registered, get_method
from .sweep_spec import SweepSpec, drawable_values
from .sweep_trial import cache_dir_on_this_node
from .tracking_retry import TrackingUnavailable


def sweep_methods(spec: SweepSpec) -> tuple[ConversionMethod, ...]:
    """The registered methods ``spec`` sweeps, to hand to the Ray workers (:func:`ensure_registered`)."""
    return tuple(get_method(name) for name in spec.methods)


def stage1_plan(spec: SweepSpec, bases: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """method -> its base trial config, for each method whose stage-1 network no sampled value changes
    (every value the search can draw gives the base's stage-1 key): the sweep trains these once, before the
    trials. A method whose space changes its key (a sampled ``stage1.lr``, say) is left out: its trials train
    their own. Empty when the sweep does not share stage 1 (``share_stage1: false``)."""
    from .cache_key import stage1_key

    if not spec.share_stage1:
        return {}
    plan, planned_keys = {}, set()
    for method, base in bases.items():
        config = from_dict(base)
        key = stage1_key(config)
        if key in planned_keys:  # another method trains the same network (e.g. two ReLU methods): once is enough
            continue
        if all(stage1_key(apply_overrides(config, {dotted: value})) == key
               for dotted, entry in (spec.space.get(method) or {}).items()
               for value in drawable_values(entry, config.model, spec.search)):
            plan[method] = base
            planned_keys.add(key)
            for offset in range(1, spec.repeats):  # --repeats: each seed has its own stage-1 network
                plan[f"{method}-seed{base['seed'] + offset}"] = {**base, "seed": base["seed"] + offset}
    return plan


def _train_stage1(base: dict[str, Any], method: str, tracker: tracking.SweepTracker, threads: int,
                  methods: tuple[ConversionMethod, ...] = ()) -> dict[str, Any]:
    """A Ray task: train (or load from the cache) the stage-1 network of ``base``; each epoch's validation
    accuracy, loss and elapsed seconds go to the sweep's parent run as ``stage1_<method>_*`` (step = epoch).
    ``methods``: the driver's conversion methods, registered here should one be known only there."""
    import ray
    import torch

    from .pipeline import stage1
    from .train import check_device

    torch.set_num_threads(threads)
    ensure_registered(methods)
    config = from_dict(base)
    config.cache_dir = cache_dir_on_this_node(config.cache_dir)  # where the trials will look for it
    device = check_device(config.device, len(ray.get_gpu_ids()))
    clock = time.perf_counter()
    progress = tracking.ProgressLog(tracker, tracker.parent_run_id)  # one attempt per epoch: never holds training

    def on_epoch(stats) -> None:
        progress.add("stage1", {
            f"stage1_{method}_val_acc": stats.val_acc, f"stage1_{method}_train_loss": stats.train_loss,
            f"stage1_{method}_seconds": time.perf_counter() - clock}, stats.epoch)
        progress.flush()

    result = stage1(config, on_epoch=on_epoch, device=device)
    return {"method": method, "key": result.key, "cache_hit": result.cache_hit, "val_acc": result.val_acc,
            "seconds": time.perf_counter() - clock, "host": os.uname().nodename, "device": str(device)}


def train_stage1_first(spec: SweepSpec, plan: Mapping[str, dict[str, Any]], tracker: tracking.SweepTracker,
                       poll_s: float = 10.0) -> list[dict[str, Any]]:
    """Train the planned stage-1 networks (:func:`stage1_plan`) as Ray tasks, in parallel, each with the
    trial's CPUs and, when trials use GPUs, a whole GPU; print their progress (epoch, validation accuracy,
    time left) every ``poll_s`` seconds from what they log to MLflow. Returns each task's facts (method,
    key, cache_hit, val_acc, seconds, host, device); a task that failed is reported and left to the
    trials, which then train (and fail) on their own."""
    import ray

    if not plan:
        return []
    task = ray.remote(_train_stage1)
    resources = {"num_cpus": spec.cpus_per_trial, "num_gpus": 1 if spec.gpus_per_trial > 0 else 0,
                 "max_retries": spec.max_failures}
    threads = max(1, int(spec.cpus_per_trial))
    methods = sweep_methods(spec)
    refs = {task.options(**resources).remote(base, method, tracker, threads, methods): method
            for method, base in plan.items()}
    epochs = {method: from_dict(base).stage1.epochs for method, base in plan.items()}
    print(f"stage 1 first: {len(refs)} network(s) ({', '.join(plan)}) before any trial, in parallel", flush=True)
    facts, shown, pending = [], dict.fromkeys(plan, 0), list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s)
        for method, line in _stage1_progress(tracker, epochs, shown):
            print(f"stage 1 {method}: {line}", flush=True)
        for ref in done:
            method = refs[ref]
            try:
                fact = ray.get(ref)
            except Exception as error:  # noqa: BLE001 - any failure is the trials' to meet and record
                print(f"warning: stage 1 of {method} failed ({type(error).__name__}: {str(error).splitlines()[0]}); "
                      "its trials train it themselves", file=sys.stderr, flush=True)
                continue
            facts.append(fact)
            how = "loaded from the cache" if fact["cache_hit"] else f"trained in {fact['seconds']:.0f} s"
            print(f"stage 1 {method}: {how} on {fact['host']} ({fact['device']}), validation accuracy "
                  f"{fact['val_acc']:.2f}% (key {fact['key']})", flush=True)
    return facts


def _stage1_progress(tracker: tracking.SweepTracker, epochs: Mapping[str, int],
                     shown: dict[str, int]) -> list[tuple[str, str]]:
    """(method, line) for each planned stage 1 with epochs logged since the last call: the latest epoch,
    its validation accuracy and the time left at the pace so far."""
    lines = []
    once = dataclasses.replace(tracker, retry_s=0.0)  # progress only: no waiting on a busy server
    for method, total in epochs.items():
        try:
            history = tracking.metric_history(once, tracker.parent_run_id, f"stage1_{method}_val_acc")
            seconds = tracking.metric_history(once, tracker.parent_run_id, f"stage1_{method}_seconds")
        except TrackingUnavailable:
            continue
        if not history or history[-1][0] <= shown[method]:
            continue
        epoch, val_acc = history[-1]
        shown[method] = epoch
        elapsed = seconds[-1][1] if seconds else math.nan
        left = elapsed / epoch * (total - epoch) if epoch else math.nan
        lines.append((method, f"epoch {epoch}/{total}, validation accuracy {val_acc:.2f}%, about {left:.0f} s left"))
    return lines
