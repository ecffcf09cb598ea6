"""``python -m snnconv.nir`` (or ``analysis/export.py``): a trial run's SNN as a NIR file, run again in
snnTorch, both logged on the run.

    python analysis/export.py RUN_ID                  # ./nir/<RUN_ID>/model.nir, agreement.md; both on the run
    python analysis/export.py RUN_ID --out DIR --max-images 100 --steps 32
    python analysis/export.py RUN_ID --no-rerun      # the NIR file only

What it does, in order: checks the options, the ``nir`` extra and the tracking URI (a user error is
one ``error:`` line and exit status 2, before anything is written); loads the run's logged model and
its metadata; writes ``model.nir`` (:func:`snnconv.nir.to_nir`) and reads it back; runs the
file in snnTorch on the trial's test split beside snnconv's own simulation, once per
:data:`snnconv.nir.PEER_VARIANTS` setting, and writes ``agreement.md``; logs both files
under the run's ``nir/`` artifacts and the metrics ``nir_pred_agreement`` and
``nir_max_spike_rel_diff`` (the ``aligned`` run) and ``nir_pred_agreement.<variant>`` /
``nir_max_spike_rel_diff.<variant>`` (the others).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import tracking
from ..logged_model import load_test_split
from ..pareto_report import ReportFolderError, check_report_folder
from . import (
    Agreement,
    NIRUnavailable,
    agreement_table,
    compare_with_snntorch,
    default_steps,
    read_nir,
    require,
    to_nir,
    write_nir,
)

#: exit status of a user error (bad option, run, store or missing extra)
USER_ERROR = 2
#: the run's artifact folder for the export
ARTIFACT_PATH = "nir"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="analysis/export.py",
        description="Export a trial run's SNN as a NIR graph, re-run it in snnTorch and log both on the run.")
    parser.add_argument("run_id", metavar="RUN_ID", help="the trial's MLflow run id (a child run of a sweep)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for model.nir and agreement.md (default: ./nir/RUN_ID)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--steps", type=int, default=None,
                        help="time steps of the re-run (default: rnl the trial's t_max, qcfs its IF t_max)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="re-run on the first N test images only (default: the whole test split)")
    parser.add_argument("--no-rerun", action="store_true", help="write and log model.nir only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the export; 0 on success, :data:`USER_ERROR` with one ``error:`` line on a user error."""
    args = build_parser().parse_args(argv)
    try:
        _check(args)
        return _run(args)
    except (tracking.TrackingError, ReportFolderError, NIRUnavailable, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR


def _check(args: argparse.Namespace) -> None:
    """Everything that can be checked before the run's model is loaded or a file written."""
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max-images must be at least 1, got {args.max_images}")
    for package in ("nir", "nirtorch", "snntorch"):
        require(package)
    args.tracking_uri = tracking.check_tracking_uri(args.tracking_uri, create=False)
    args.out = args.out if args.out is not None else Path("nir") / args.run_id
    check_report_folder(args.out)


def _run(args: argparse.Namespace) -> int:
    model, metadata = tracking.load_run_model(args.tracking_uri, args.run_id)
    if "method" not in metadata:
        raise ValueError(f"run {args.run_id[:8]}'s model has no conversion metadata; was it logged by snnconv?")
    graph = to_nir(model, metadata)
    path = write_nir(graph, args.out / "model.nir")
    read_back = read_nir(path)
    if_layers = sum(type(node).__name__ == "IF" for node in graph.nodes.values())
    network = "rate-coded IF network" if metadata["method"] == "rnl" else "rate-coded IF version of the QCFS network"
    print(f"wrote {path}: {len(graph.nodes)} nodes, {if_layers} IF layers ({metadata['method']}, {network})")
    files, metrics = [path], {}
    if not args.no_rerun:
        steps = default_steps(metadata) if args.steps is None else args.steps
        print(f"re-running it in snnTorch beside snnconv: {steps} steps on the test split"
              f"{'' if args.max_images is None else f' (first {args.max_images} images)'}", flush=True)

        def progress(variant: str, result: Agreement) -> None:
            print(f"  {variant:<22} predictions equal {result.pred_agreement:.4f}, "
                  f"max spike-count rel. diff {result.max_spike_rel_diff:.2e}", flush=True)

        results = compare_with_snntorch(model, metadata, read_back, load_test_split(metadata), steps,
                                        max_images=args.max_images, progress=progress)
        table = args.out / "agreement.md"
        table.write_text(f"# snnTorch re-run of {path.name} (run {args.run_id})\n\n"
                         f"{results['aligned'].images} test images x {steps} steps.\n\n"
                         + agreement_table(results))
        files.append(table)
        metrics = dict(results["aligned"].metrics())
        for variant, result in results.items():
            if variant != "aligned":
                metrics.update(result.metrics(f".{variant}"))
    tracking.log_run_outputs(args.tracking_uri, args.run_id, files, ARTIFACT_PATH, metrics)
    print(f"logged {', '.join(f.name for f in files)} under the run's {ARTIFACT_PATH}/ artifacts"
          + (f"; nir_pred_agreement = {metrics['nir_pred_agreement']:.4f}" if metrics else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
