"""PASCAL inference cost against the QCFS ANN it was converted from.

VGG16 on CIFAR-shaped input (3x32x32) with PASCAL's mixed L list, batch 32, 2 torch threads.
Measured side by side in one run (the paths alternate within every repeat; medians and minima,
the minima being the steadier figure on a shared machine):

* ``ann``: one forward of the QCFS ANN;
* ``exact``: PASCAL exact inference (count domain, ``to_pascal(model)(images)``);
  target <= 1.2 x ann;
* ``spike``: the spike-level path (``run_spikes``: spike trains through every layer, the path
  that yields SynOps and the equivalence check), float32; target <= T_max x ann;
* ``spike64``: the same in float64 (what the trial's equivalence check runs).

    python -m bench.bench_pascal [--quick] [--out PATH]

Writes its figures as JSON to ``bench/results/bench_pascal.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from snnconv.layers import QCFS
from snnconv.models import build_model
from snnconv.pascal import to_pascal

VGG16_LEVELS = [8, 4, 4, 1, 4, 4, 1, 1, 1, 1, 1, 4, 8, 8, 8]
RESULTS = Path(__file__).resolve().parent / "results" / "bench_pascal.json"


def header(threads: int) -> dict[str, str | int]:
    """Machine, threads, versions and date of this run."""
    return {
        "machine": f"{platform.machine()} {platform.processor() or platform.platform()}, {os.cpu_count()} cpus",
        "torch_threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else -1,
    }


@torch.no_grad()
def calibrated_vgg16(batch: int, generator: torch.Generator) -> torch.nn.Module:
    """A QCFS VGG16 whose BN statistics come from one random batch (so neurons fire at realistic rates)."""
    torch.manual_seed(0)
    model = build_model("vgg16", lambda: QCFS(8, 1.0), num_classes=10, in_channels=3, image_size=32,
                        levels=VGG16_LEVELS)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0
    model.train()(torch.randn(max(batch, 8), 3, 32, 32, generator=generator))
    return model.eval()


def time_ms(paths: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Wall times (ms) of each path over ``repeats``; the paths alternate within every repeat."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for round_index in range(warmup + repeats):
        for name, run in paths.items():
            start = time.perf_counter()
            run()
            if round_index >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_pascal", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 4, one repeat (smoke test)")
    parser.add_argument("--batch", type=int, default=None, help="images per batch (default 32, quick 4)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default bench/results/bench_pascal[_quick].json)")
    args = parser.parse_args(argv)
    batch = args.batch or (4 if args.quick else 32)
    repeats = args.repeats or (1 if args.quick else 5)
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    model = calibrated_vgg16(batch, generator)
    images = torch.randn(batch, 3, 32, 32, generator=generator)
    snn = to_pascal(model)
    snn64, images64 = to_pascal(copy.deepcopy(model).double()), images.double()

    with torch.no_grad():
        paths = {
            "ann": lambda: model(images),
            "exact": lambda: snn(images),
            "spike": lambda: snn.run_spikes(images),
            "spike64": lambda: snn64.run_spikes(images64),
        }
        times = time_ms(paths, repeats, warmup=1)
        run = snn64.run_spikes(images64)
        equal = bool(torch.equal(snn(images), model(images)))
    t_max = max(VGG16_LEVELS)
    ms = {name: statistics.median(values) for name, values in times.items()}
    min_ms = {name: min(values) for name, values in times.items()}
    ratios = {name: ms[name] / ms["ann"] for name in ("exact", "spike", "spike64")}
    min_ratios = {name: min_ms[name] / min_ms["ann"] for name in ("exact", "spike", "spike64")}
    result = {
        "benchmark": "bench_pascal",
        "header": header(args.threads),
        "config": {"model": "vgg16", "input": [3, 32, 32], "batch": batch, "levels": VGG16_LEVELS, "t_max": t_max,
                   "repeats": repeats, "quick": args.quick},
        "ms": ms,
        "min_ms": min_ms,
        "ratio_to_ann": ratios,
        "min_ratio_to_ann": min_ratios,
        "spike_ratio_over_t_max": ratios["spike"] / t_max,
        "targets": {"exact_ratio_max": 1.2, "spike_ratio_max": t_max},
        "meets_targets": {"exact": min_ratios["exact"] <= 1.2, "spike": min_ratios["spike"] <= t_max},
        "exact_equals_ann": equal,
        "synops_per_image": run.synops / batch,
        "first_layer_macs_per_image": run.macs / batch,
    }

    head = result["header"]
    print(f"# bench_pascal  {head['date']}  {head['machine']}  (load average {head['load_average_1min']})")
    print(f"# torch {head['torch']} (threads {args.threads}), python {head['python']}; VGG16 3x32x32, batch {batch}, "
          f"L = {VGG16_LEVELS}, T_max = {t_max}, median of {repeats}")
    print(f"{'path':<10}{'median ms':>11}{'x ANN':>8}{'min ms':>10}{'x ANN':>8}{'target':>9}")
    targets = {"ann": "", "exact": "<= 1.2", "spike": f"<= {t_max}", "spike64": ""}
    for name in paths:
        print(f"{name:<10}{ms[name]:>11.1f}{ms[name] / ms['ann']:>8.2f}{min_ms[name]:>10.1f}"
              f"{min_ms[name] / min_ms['ann']:>8.2f}{targets[name]:>9}")
    print(f"exact inference equals the ANN bit for bit: {equal}; SynOps/image {result['synops_per_image']:.4g}")
    if args.out is None:
        args.out = RESULTS.with_name("bench_pascal_quick.json") if args.quick else RESULTS
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
