"""Benchmark: ``snnconv.pareto_arrays`` against Optuna's implementations (same inputs, same run).

    python -m bench.pareto [--quick]

Measures ``pareto_mask`` (vectorised pairwise, O(n^2 d)) against Optuna's sort-based
non-domination filter, and ``hypervolume`` (staircase in 2-D, slicing above) against Optuna's
WFG, on random runs (few on the front) and on anti-correlated runs (all on the front), checks that
the answers agree, and times ``analyse`` + ``write_sweep_fronts`` on a sweep-sized table.
Optuna's functions are private (``optuna.study._multi_objective``, ``optuna._hypervolume``): the
benchmark skips them if they move. Writes ``bench/results/pareto.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "library"))

from snnconv import pareto, pareto_arrays, pareto_plots  # noqa: E402


def best_of(function: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def runs(kind: str, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """(n, d) minimisation points: "random" (uniform) or "front" (all mutually non-dominated)."""
    if kind == "random":
        return rng.random((n, d))
    direction = rng.random((n, d)) + 1e-3
    return 1.0 - direction / np.linalg.norm(direction, axis=1, keepdims=True)  # on a sphere: no one dominates


def optuna_functions() -> tuple[Callable | None, Callable | None]:
    try:
        from optuna._hypervolume import compute_hypervolume
        from optuna.study._multi_objective import _is_pareto_front
    except ImportError:
        return None, None
    return (lambda v: _is_pareto_front(v, assume_unique_lexsorted=False)), compute_hypervolume


def header() -> dict[str, str]:
    import matplotlib
    import torch

    facts = {
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
        "torch threads": str(torch.get_num_threads()),
        "versions": f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, "
                    f"matplotlib {matplotlib.__version__}, torch {torch.__version__}",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    try:
        import optuna
        facts["versions"] += f", optuna {optuna.__version__}"
    except ImportError:
        pass
    return facts


def bench_masks(sizes, repeats, rng) -> list[dict]:
    optuna_mask, _ = optuna_functions()
    rows = []
    for kind in ("random", "front"):
        for d in (2, 3):
            for n in sizes:
                points = runs(kind, n, d, rng)
                ours = best_of(lambda points=points, d=d: pareto_arrays.pareto_mask(points, ["min"] * d), repeats)
                row = {"what": "pareto_mask", "runs": kind, "n": n, "d": d, "ours_ms": ours}
                if optuna_mask is not None:
                    row["optuna_ms"] = best_of(lambda points=points: optuna_mask(points), repeats)
                    row["agree"] = bool((optuna_mask(points) == pareto_arrays.pareto_mask(points, ["min"] * d)).all())
                rows.append(row)
    return rows


def bench_hypervolume(sizes, repeats, rng) -> list[dict]:
    _, optuna_hv = optuna_functions()
    rows = []
    for d in (2, 3):
        for n in sizes:
            points = runs("front", n, d, rng)
            reference = np.full(d, 1.1)
            senses = ["min"] * d
            ours = best_of(lambda points=points, senses=senses, reference=reference:
                           pareto_arrays.hypervolume(points, senses, reference), repeats)
            row = {"what": "hypervolume", "runs": "front", "n": n, "d": d, "ours_ms": ours}
            if optuna_hv is not None:
                row["optuna_ms"] = best_of(lambda points=points, reference=reference: optuna_hv(points, reference),
                                           repeats)
                row["agree"] = bool(np.isclose(pareto_arrays.hypervolume(points, ["min"] * d, reference),
                                               optuna_hv(points, reference), rtol=1e-9))
            rows.append(row)
    return rows


def bench_sweep_files(n: int, rng) -> dict:
    """analyse + write_sweep_fronts (CSV + 3 PNGs) on an n-run table, as a sweep's end does."""
    method = rng.choice(["rnl", "qcfs"], n)
    t_op = np.where(method == "rnl", rng.integers(1, 65, n), rng.uniform(1, 8, n))  # IF steps / PASCAL T_eff
    table = pd.DataFrame({
        "run_id": [f"run{i:05d}" for i in range(n)], "run_name": [f"trial-{i}" for i in range(n)],
        "status": "FINISHED", "method": method, "lam": rng.random(n), "val_acc_op": rng.uniform(50, 95, n),
        "acc_op": rng.uniform(50, 95, n), "t_op": t_op, "energy_op_mj": rng.uniform(0.01, 1.0, n),
        "omega": rng.uniform(1, 5, n), "converged": (rng.random(n) > 0.1).astype(float),
    })
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analyse_ms = best_of(lambda: pareto.analyse(table), 3)
        files_ms = best_of(lambda: pareto_plots.write_sweep_fronts(table, folder), 1)
    return {"what": "sweep end", "n": n, "analyse_ms": analyse_ms, "write_sweep_fronts_ms": files_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--out", help="JSON path (default bench/results/pareto[_quick].json)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    mask_sizes, hv_sizes, repeats = ((100, 1000), (50, 200), 3) if args.quick else ((100, 1000, 5000), (100, 1000), 5)

    facts = header()
    for key, value in facts.items():
        print(f"{key:>14}: {value}")
    rows = bench_masks(mask_sizes, repeats, rng) + bench_hypervolume(hv_sizes, repeats, rng)
    table = pd.DataFrame(rows)
    if "optuna_ms" in table:
        table["ours / optuna"] = table["ours_ms"] / table["optuna_ms"]
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    sweep = bench_sweep_files(200 if args.quick else 1000, rng)
    print(f"\nsweep end, {sweep['n']} runs: analyse {sweep['analyse_ms']:.1f} ms, "
          f"write_sweep_fronts (CSV + 3 PNGs) {sweep['write_sweep_fronts_ms']:.0f} ms")

    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"pareto{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"header": facts, "quick": args.quick, "rows": table.to_dict("records"),
                               "sweep_end": sweep}, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
