"""Benchmark (GPU only): 4 trials sharing one GPU (``gpus_per_trial 0.25``) against the same 4 trials
run one after another on it (``gpus_per_trial 1``), through the real sweep.

    python -m bench.bench_gpu_share [--quick]

The trials are RNL trials of a small CNN on CIFAR-shaped synthetic data (stage 1 shared through the
cache and trained before the timed runs, so both sweeps time the same stage-2 + simulation work).
Without a CUDA device it writes a result marked ``skipped`` and says so.
Writes ``bench/results/bench_gpu_share.json`` (``--quick``: ``..._quick.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "library"))
sys.path.insert(0, str(ROOT))

from bench.common import evidence, print_header, print_table  # noqa: E402


def spec_dict(folder: Path, quick: bool, gpus: float, concurrent: int) -> dict:
    return {
        "name": "gpu-share", "methods": ["rnl"], "num_samples": 4, "max_concurrent": concurrent,
        "cpus_per_trial": 1, "gpus_per_trial": gpus,
        "trial": {"model": "small", "device": "cuda", "cache_dir": str(folder / "cache"),
                  "data": {"name": "synthetic", "channels": 3, "image_size": 32, "num_classes": 10,
                           "num_train": 2048 if quick else 20000, "num_val": 512, "num_test": 2048 if quick else 10000},
                  "stage1": {"epochs": 2 if quick else 10, "lr": 0.05},
                  "rnl": {"epochs": 1 if quick else 3, "t_max": 32 if quick else 128, "inspect_interval": 20}},
        "space": {"rnl": {"rnl.lam": {"type": "choice", "values": [0.0, 0.1, 1.0, 10.0]}}},
    }


def timed(spec: dict, folder: Path, label: str) -> float:
    from snnconv.config import _from_dict
    from snnconv.sweep import SweepOptions, SweepSpec, run_sweep

    sweep = _from_dict(SweepSpec, spec)
    options = SweepOptions(tracking_uri=f"sqlite:///{folder}/{label}.db", storage_path=str(folder / label), verbose=0)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_sweep(sweep, options)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    facts = evidence()
    print_header("4 trials sharing one GPU vs one after another", facts)
    name = f"bench_gpu_share{'_quick' if args.quick else ''}.json"
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        print("no CUDA device: skipped")
        out.write_text(json.dumps({"evidence": facts, "skipped": "no CUDA device"}, indent=2))
        return 0
    import ray

    ray.init(num_gpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            timed(spec_dict(folder, args.quick, 1.0, 1), folder, "warm")  # trains and caches stage 1
            sequential = timed(spec_dict(folder, args.quick, 1.0, 1), folder, "sequential")
            shared = timed(spec_dict(folder, args.quick, 0.25, 4), folder, "shared")
    finally:
        ray.shutdown()
    print_table(["4 trials", "wall s", "throughput ratio"],
                [["one after another (gpus_per_trial 1)", f"{sequential:.1f}", "1.00"],
                 ["sharing one GPU (gpus_per_trial 0.25)", f"{shared:.1f}", f"{sequential / shared:.2f}"]])
    out.write_text(json.dumps({"evidence": facts, "sequential_s": sequential, "shared_s": shared,
                               "throughput_ratio": sequential / shared}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
