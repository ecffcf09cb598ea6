"""Benchmark: the sweep's own overhead, and what the shared stage-1 cache saves.

    python -m bench.bench_sweep [--quick]

1. **Overhead.** The demo preset with its rnl and qcfs methods (16 trials, as the committed figures were
   measured before datanorm joined the demo; ``--quick``: 4 trials with 4 stage-1 epochs), and the
   same preset with 64 trials (left out with ``--quick``), each started as ``lambda_sweep.py`` starts
   it: ``run_sweep`` starts a local Ray instance (2 CPUs) and creates the MLflow store meanwhile.
   ``ideal`` = the trials' own compute (``run_trial`` time, summed) divided by the concurrency
   limit: the wall time a perfect scheduler would need. ``overhead`` = sweep wall time / ideal - 1.
   The breakdown names where the rest goes: MLflow logging inside the trials (``tracking``, also
   divided by the concurrency) and the driver's start (MLflow store, parent run) and end (Pareto
   fronts, plots, tags).
2. **Cache.** The same RNL sweep of 16 trials (``--quick``: 4) twice: stage 1 shared through the
   cache (trained once), and every trial retraining its own stage 1 (``share_stage1: false``). The
   target is relative to what a cache can save at these proportions: the speed-up must reach
   ``CACHE_BOUND_SHARE`` of the bound (S1 + S2) / (S2 + S1/N), S1 = one stage-1 training (the mean of
   the retraining sweep's), S2 = a trial that loads stage 1 from the cache.

Ray's own start (``ray.init``, timed by ``run_sweep``) is left out of every wall time: it is Ray's
cost, not the sweep's (what of the MLflow store's creation runs beyond it still counts). Writes
``bench/results/bench_sweep.json`` (``--quick``: ``bench_sweep_quick.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "library"))
sys.path.insert(0, str(ROOT))

from bench.common import evidence, print_header, print_table, write_result  # noqa: E402
from snnconv.sweep import SweepOptions, SweepSpec, load_spec, run_sweep  # noqa: E402

#: the sweep's wall time over the ideal (trial compute / concurrency), minus 1, at 16 and at 64 trials
OVERHEAD_TARGET = 0.25
#: the cache's speed-up as a share of its own bound (S1 + S2) / (S2 + S1/N)
CACHE_BOUND_SHARE = 0.8


def timed_sweep(spec: SweepSpec, folder: Path) -> dict[str, float]:
    """Run ``spec`` quietly into ``folder`` on a Ray instance of its own (started by ``run_sweep``,
    stopped after); wall time without Ray's start, and the trials' own times, in seconds."""
    import ray

    spec = copy.deepcopy(spec)
    spec.trial.setdefault("cache_dir", str(folder / "cache"))
    options = SweepOptions(tracking_uri=f"sqlite:///{folder}/mlflow.db", storage_path=str(folder / "ray"), verbose=0,
                           num_cpus=2)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            outcome = run_sweep(spec, options)
        wall = time.perf_counter() - start - outcome.timings["ray"]
    finally:
        ray.shutdown()
    table = outcome.table
    finished = table[table["status"] == "FINISHED"]
    # stage-1 trainings: those the sweep ran before the trials (shared networks) and those inside trials
    trainings = [fact["seconds"] for fact in outcome.stage1 if not fact["cache_hit"]]
    trainings += finished.loc[finished["stage1_cache_hit"] == 0, "stage1_seconds"].tolist()
    return {
        "wall_s": wall, "trials": float(len(table)), "finished": float(len(finished)),
        # the sweep's own compute: its trials and the stage-1 networks trained before them
        "trial_compute_s": float(finished["trial_seconds"].sum()) + sum(fact["seconds"] for fact in outcome.stage1),
        "tracking_s": float(finished["tracking_seconds"].sum()) if "tracking_seconds" in finished else float("nan"),
        "stage1_trainings": float(len(trainings)),
        # what one stage-1 training took, and a trial that loaded stage 1 from the cache
        "stage1_s": float(sum(trainings) / len(trainings)) if trainings else float("nan"),
        "cached_trial_s": float(finished.loc[finished["stage1_cache_hit"] == 1, "trial_seconds"].mean()),
        "concurrency": float(spec.max_concurrent),
        # the phases' wall seconds (the stage-1 phase as stage1_phase_s: stage1_s is one training's mean)
        **{f"{phase}_phase_s" if phase == "stage1" else f"{phase}_s": seconds
           for phase, seconds in outcome.timings.items()},
        "start_s": outcome.timings["start"] - outcome.timings["ray"],  # the start beyond Ray's own
    }


def overhead_row(spec: SweepSpec, folder: Path) -> dict[str, float]:
    figures = timed_sweep(spec, folder)
    ideal = figures["trial_compute_s"] / figures["concurrency"]
    figures["ideal_s"] = ideal
    figures["overhead"] = figures["wall_s"] / ideal - 1.0
    figures["tracking_share"] = figures["tracking_s"] / figures["concurrency"] / ideal
    # the rest of Tune's time beyond the ideal: actor start-up, scheduling, reporting
    figures["tracking_wall_s"] = figures["tracking_s"] / figures["concurrency"]
    figures["tune_extra_s"] = (figures["tune_s"] + figures.get("stage1_phase_s", 0.0) - ideal
                               - figures["tracking_wall_s"])
    return figures


def cache_rows(spec: SweepSpec, folder: Path) -> dict[str, dict[str, float]]:
    shared = timed_sweep(spec, folder / "shared")
    unshared_spec = copy.deepcopy(spec)
    unshared_spec.share_stage1 = False
    unshared = timed_sweep(unshared_spec, folder / "retrain")
    # the most a cache can save with these proportions: (S1 + S2) / (S2 + S1 / N), N trials, S1 = one
    # stage-1 training: the mean of the retraining sweep's N (the shared sweep's one training is its
    # first trial's, slowed by the other worker starting beside it), S2 = a trial that loads stage 1
    # (the shared sweep's mean)
    s1, s2, n = unshared["stage1_s"], shared["cached_trial_s"], shared["trials"]
    return {"shared": shared, "retrain": unshared, "speedup": unshared["wall_s"] / shared["wall_s"],
            "speedup_bound": (s1 + s2) / (s2 + s1 / n)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes (a smoke run)")
    parser.add_argument("--cache-trials", type=int, help="trials of the cache comparison (default 16, quick 4)")
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args(argv)

    demo = load_spec("demo", presets_dir=ROOT / "configs")
    demo.methods = ["rnl", "qcfs"]  # the two methods the committed figures were measured with
    if args.quick:
        demo.num_samples = 2
        demo.trial["stage1"]["epochs"] = 4
    demo64 = copy.deepcopy(demo)
    demo64.num_samples = 32  # two methods: 64 trials
    cache_spec = copy.deepcopy(demo)
    cache_spec.methods = ["rnl"]
    cache_spec.num_samples = args.cache_trials or (4 if args.quick else 16)
    cache_spec.trial["stage1"]["epochs"] = 4 if args.quick else 12

    header = evidence()
    print_header("sweep: overhead and stage-1 cache", header)
    with tempfile.TemporaryDirectory() as folder:
        overhead = overhead_row(demo, Path(folder) / "demo")
        overhead64 = None if args.quick else overhead_row(demo64, Path(folder) / "demo64")
        cache = cache_rows(cache_spec, Path(folder) / "cache")
    ray_start = overhead["ray_s"]

    print(f"\nRay start (ray.init, demo sweep, not counted below): {ray_start:.1f} s")
    print(f"demo sweep phases: start beyond Ray's {overhead['start_s']:.1f} s (MLflow store, parent run), stage 1 "
          f"{overhead.get('stage1_phase_s', 0.0):.1f} s (the shared networks, before the trials), Tune "
          f"{overhead['tune_s']:.1f} s (both beyond the ideal and MLflow: {overhead['tune_extra_s']:.1f} s: "
          f"worker start-up, scheduling), finish {overhead['finish_s']:.1f} s (Pareto fronts, plots, tags)\n")
    print_table(
        ["sweep", "trials", "wall s", "trial compute s", "ideal s", "overhead", "of which MLflow", "target"],
        [["demo" + (" (quick)" if args.quick else ""), int(row["trials"]), f"{row['wall_s']:.1f}",
          f"{row['trial_compute_s']:.1f}", f"{row['ideal_s']:.1f}", f"{row['overhead']:.1%}",
          f"{row['tracking_share']:.1%}", f"<= {OVERHEAD_TARGET:.0%}"]
         for row in (overhead, overhead64) if row is not None],
    )
    print()
    print_table(
        ["stage 1", "trials", "stage-1 trainings", "wall s", "speed-up", "target"],
        [["shared (cache)", int(cache["shared"]["trials"]), int(cache["shared"]["stage1_trainings"]),
          f"{cache['shared']['wall_s']:.1f}", f"{cache['speedup']:.2f}x (bound {cache['speedup_bound']:.2f}x)",
          f">= {CACHE_BOUND_SHARE} x bound = {CACHE_BOUND_SHARE * cache['speedup_bound']:.2f}x"],
         ["retrained per trial", int(cache["retrain"]["trials"]), int(cache["retrain"]["stage1_trainings"]),
          f"{cache['retrain']['wall_s']:.1f}", "1.00x", ""]],
    )
    cache_target = CACHE_BOUND_SHARE * cache["speedup_bound"]
    result = {"benchmark": "bench_sweep", "quick": args.quick, "evidence": header, "ray_start_s": ray_start,
              "overhead": overhead, "overhead_64": overhead64, "cache": cache,
              "targets": {"overhead": OVERHEAD_TARGET, "cache_speedup": cache_target,
                          "cache_bound_share": CACHE_BOUND_SHARE},
              "met": {"overhead": overhead["overhead"] <= OVERHEAD_TARGET,
                      "overhead_64": None if overhead64 is None else overhead64["overhead"] <= OVERHEAD_TARGET,
                      "cache_speedup": cache["speedup"] >= cache_target}}
    write_result(result, "bench_sweep", args.quick, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
