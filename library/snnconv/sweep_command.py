"""The sweep's command line, ``python sweeps/lambda_sweep.py``: a preset or sweep file, changed by the
options given, run by :func:`snnconv.sweep.run_sweep`, then summarised (:mod:`snnconv.sweep_summary`).
Exit codes: 0 done, 2 a bad option or sweep file (one ``error:`` line), 1 the tracking server did not
answer (results wait for ``--resume``), 130 interrupted."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import tracking
from .config import ConfigError
from .method_registry import method_names
from .sweep import ResultsWaiting, SweepOptions, latest_sweep_dir, run_sweep
from .sweep_spec import (
    OBJECTIVES,
    SCHEDULERS,
    SEARCHES,
    SELECT_ON,
    SweepSpec,
    default_spaces,
    load_spec,
    resolve_paths,
    validate_spec,
)
from .sweep_summary import print_summary
from .tracking_retry import DEFAULT_RETRY_S, TrackingUnavailable


def main(argv: list[str] | None = None, presets_dir: str | Path | None = None) -> int:
    """``python sweeps/lambda_sweep.py``: run a conversion sweep (the demo preset by default)."""
    args = build_parser().parse_args(argv)
    try:
        spec = spec_from_arguments(args, presets_dir)
        options = options_from_arguments(args, spec)
        outcome = run_sweep(spec, options)  # checks the tracking URI, then the resources, before any trial
    except (ConfigError, tracking.TrackingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ResultsWaiting, TrackingUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print_summary(outcome)
    return 0 if outcome.status == "FINISHED" else 130  # interrupted: the shell's code for Ctrl-C


def build_parser() -> argparse.ArgumentParser:
    """The options; each one given replaces the sweep file's value."""
    parser = argparse.ArgumentParser(
        prog="lambda_sweep.py",
        description="Sweep ANN->SNN conversion settings (RNL lambda, lr, shared scale, layerwise L) with Ray Tune, "
                    "tracking every trial in MLflow. With no arguments: the demo preset on this machine.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", help="preset name in configs/ (demo, cifar10-vgg16, cifar10-resnet18, "
                                         "cifar100-vgg16, imagenet-resnet34); default demo")
    source.add_argument("--config", help="a sweep YAML file (same keys as the presets)")
    parser.add_argument("--method", metavar="NAME[,NAME...]|all",
                        help=f"which conversion method(s) to sweep: {', '.join(method_names())}, several with "
                             "commas, or all; a method the sweep file gives no space searches its standard one")
    parser.add_argument("--num-samples", type=int, help="trials per method")
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions share a GPU (e.g. 0.25)")
    parser.add_argument("--cpus-per-trial", type=float, help="CPU cores per trial (also torch threads)")
    parser.add_argument("--max-concurrent", type=int, help="most trials running at once")
    parser.add_argument("--search", choices=SEARCHES, help="random, grid, or optuna (multi-objective NSGA-II: "
                                                           "max the operating-point accuracy, min the --objective)")
    parser.add_argument("--objective", choices=tuple(OBJECTIVES),
                        help="cost Optuna minimises next to the accuracy: latency (t_op), energy (energy_op_mj) "
                             "or omega (one method only)")
    parser.add_argument("--select-on", choices=SELECT_ON,
                        help="split that chooses (Optuna, Pareto tags, summary): val (default) or test (biased)")
    parser.add_argument("--scheduler", choices=SCHEDULERS, help="asha stops trials early on stage-2 val accuracy")
    parser.add_argument("--address", help="join an existing Ray cluster (e.g. auto)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///mlflow.db here, or "
                                               "$MLFLOW_TRACKING_URI)")
    parser.add_argument("--experiment", help="MLflow experiment name (default snnconv)")
    parser.add_argument("--storage-path", help="Ray Tune results folder (default ./ray_results)")
    parser.add_argument("--resume", nargs="?", const="", help="resume the latest interrupted sweep (optionally the "
                                                             "one whose folder name starts with RESUME)")
    parser.add_argument("--seed", type=int, help="seed of the trials and the search")
    parser.add_argument("--repeats", type=int, help="run every drawn configuration with this many seeds (seed, "
                                                     "seed + 1, ...); fronts and Optuna use their mean (default 1)")
    parser.add_argument("--data-dir", help="folder holding CIFAR or ImageNet")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--max-failures", type=int, help="retries of a trial whose worker process died (default 1)")
    parser.add_argument("--pending-timeout", type=float, default=600.0,
                        help="with --address: seconds to wait for the cluster to offer one trial's CPUs/GPUs "
                             "(default 600)")
    parser.add_argument("--tracking-retry-s", type=float, default=DEFAULT_RETRY_S,
                        help="seconds a tracking call may keep failing (server busy or away) before a trial keeps "
                             f"its result to be logged by --resume (default {DEFAULT_RETRY_S:.0f})")
    return parser


def spec_from_arguments(args: argparse.Namespace, presets_dir: str | Path | None) -> SweepSpec:
    """The preset or sweep file, with the options given applied, its folders made absolute, then validated
    (``ConfigError``)."""
    spec = load_spec(args.preset, args.config, presets_dir, validate=False)
    if args.method:
        spec.methods = list(method_names()) if args.method == "all" else [m.strip() for m in args.method.split(",")]
        for name in set(spec.methods) & set(method_names()) - set(spec.space):
            spec.space[name] = default_spaces()[name]
    for name in ("num_samples", "gpus_per_trial", "cpus_per_trial", "max_concurrent", "search", "objective",
                 "select_on", "scheduler", "experiment", "seed", "max_failures", "repeats"):
        if getattr(args, name) is not None:
            setattr(spec, name, getattr(args, name))
    if args.data_dir:
        spec.trial.setdefault("data", {})["data_dir"] = args.data_dir
    resolve_paths(spec)
    validate_spec(spec)
    return spec


def options_from_arguments(args: argparse.Namespace, spec: SweepSpec) -> SweepOptions:
    """The settings that are not part of the sweep file; ``ConfigError`` for a bad one, or a ``--resume``
    that finds no sweep to resume."""
    if not args.tracking_retry_s >= 0:
        raise ConfigError(f"--tracking-retry-s must be 0 or more seconds, got {args.tracking_retry_s}")
    options = SweepOptions(address=args.address, tracking_uri=args.tracking_uri, storage_path=args.storage_path,
                           resume=args.resume, num_cpus=args.num_cpus, pending_timeout=args.pending_timeout,
                           tracking_retry_s=args.tracking_retry_s)
    if options.resume is not None:
        latest_sweep_dir(Path(options.storage_path or "ray_results").expanduser().resolve(),
                         options.resume or spec.name)
    return options
