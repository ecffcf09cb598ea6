"""Benchmark: rate-coded IF simulation against T x one ANN forward (same model, batch and run).

    python -m bench.bench_if [--quick] [--threads 2] [--batch 32] [--steps 32] [--repeats 3]

The model is a CIFAR-shaped VGG16 with Rate Norm activations (random weights; one train-mode pass
with momentum 1 sets BN statistics and running maxima from the batch, and p = sigmoid(2.5) as at
the start of stage 2, so that every layer fires). Timed side by side, interleaved, ``--repeats``
times each (inference mode):

* ``ann_rnl``: T forwards of that ANN (the model being converted): the baseline;
* ``ann_relu``: T forwards of the same network with ReLU activations;
* ``snn``: ``simulate(to_if(model), ..., t_max=T)`` with the defaults (BN folded into the conv,
  spike counting on, every layer computed at every step);
* ``snn_cached``: also the first conv computed once per batch (``static_input=True``);
* ``snn_no_fold``: without BN folding (every layer exactly as in the ANN).

Ratios are the median over repeats of (variant time / ann_rnl time of the same repeat).

The timings are taken twice, in child processes:

* ``no_trim_malloc``: all variants interleaved in one process with glibc malloc's trimming off
  (``MALLOC_TRIM_THRESHOLD_`` 1 GiB, ``MALLOC_MMAP_THRESHOLD_`` 32 MiB): no variant page-faults,
  so the ratios compare the compute alone. This is the headline figure.
* ``default_malloc``: glibc's defaults, each variant alone in its own process (as a user runs
  one of them). With the defaults glibc returns freed heap memory to the OS and the next tensor of
  that size page-faults again; how often depends on the order of allocations (and, in one process,
  on what ran before), and it can move a variant's time by 10 % or more. The minor page faults per
  call are reported. Variants run one after another here, not interleaved.

Peak memory is measured in a child process with glibc's mmap threshold pinned at 64 KiB
(``MALLOC_MMAP_THRESHOLD_``), so tensor memory goes back to the OS when freed and the resident set
follows the live tensors: before each measured call the peak-RSS mark is reset
(``/proc/self/clear_refs``), and the peak (``VmHWM``) after it is compared with the resident set
before it. ``working`` = peak minus resident before (the call's own memory: activations,
membranes, scratch), ``total`` = the process's peak (includes torch itself and the weights).
Measured for one forward of each ANN and one T-step simulation of ``snn`` and ``snn_cached``;
``membranes`` is the size of all IF membranes together, which any exact simulation must hold.
On CUDA the same is done with ``torch.cuda`` peak-allocation counters.

Writes ``bench/results/bench_if.json`` (``--quick``: ``bench_if_quick.json``; ``--out`` overrides).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "library"))

from snnconv.convert import to_if  # noqa: E402
from snnconv.layers import RateNorm, activation_factory  # noqa: E402
from snnconv.models import build_model  # noqa: E402
from snnconv.simulate import simulate  # noqa: E402

#: issue 9's targets: simulation time <= 1.05 x T ANN forwards, peak memory <= 2 x one ANN forward
TIME_TARGET = 1.05
MEMORY_TARGET = 2.0


def header() -> dict[str, str]:
    """Machine, torch threads, versions and date, printed above the table and stored in the JSON."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import snnconv

    return {
        "machine": f"{platform.node()} ({cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()})",
        "torch threads": str(torch.get_num_threads()),
        "versions": f"python {platform.python_version()}, torch {torch.__version__}, snnconv {snnconv.__version__}",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def build_rnl(batch: int, device: torch.device, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(calibrated RNL VGG16 in eval mode, images [B, 3, 32, 32], its predictions [B]) on ``device``."""
    torch.manual_seed(seed)
    rnl = build_model("vgg16", activation_factory("rnl", scale_init=2.5), num_classes=10, in_channels=3,
                      image_size=32).to(device)
    images = torch.randn(batch, 3, 32, 32, device=device)
    calibrate(rnl, images)
    with torch.inference_mode():
        labels = rnl(images).argmax(1)
    return rnl, images, labels


def relu_twin(rnl: nn.Module) -> nn.Module:
    """The same VGG16 weights with ReLU activations (eval mode)."""
    relu = build_model("vgg16", activation_factory("relu"), num_classes=10, in_channels=3, image_size=32)
    relu.load_state_dict(rnl.state_dict(), strict=False)
    return relu.to(next(rnl.parameters()).device).eval()


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor) -> None:
    """One train-mode pass with momentum 1: BN statistics and Rate Norm running maxima from ``images``."""
    momenta = {}
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, RateNorm)):
            momenta[module] = module.momentum
            module.momentum = 1.0
    model.train()
    model(images)
    for module, momentum in momenta.items():
        module.momentum = momentum
    model.eval()


def variants(rnl: nn.Module, relu: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             steps: int) -> dict[str, Callable[[], object]]:
    """The timed calls, by name (all in inference mode)."""
    def ann(model: nn.Module) -> Callable[[], object]:
        def run() -> None:
            with torch.inference_mode():
                for _ in range(steps):
                    model(images)
        return run

    batch = [(images, labels)]
    def snn(**options: bool) -> Callable[[], object]:
        model = to_if(rnl, **options)
        return lambda: simulate(model, batch, steps)

    return {
        "ann_rnl": ann(rnl),
        "ann_relu": ann(relu),
        "snn": snn(),
        "snn_cached": snn(static_input=True),
        "snn_no_fold": snn(fold_bn=False),
    }


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_variants(calls: dict[str, Callable[[], object]], repeats: int,
                  device: torch.device) -> dict[str, dict[str, list[float]]]:
    """Seconds and minor page faults per call of each variant, interleaved (one warm-up round first)."""
    for call in calls.values():
        call()
    measured = {name: {"seconds": [], "page_faults": []} for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            synchronise(device)
            faults, start = _minor_faults(), time.perf_counter()
            call()
            synchronise(device)
            measured[name]["seconds"].append(time.perf_counter() - start)
            measured[name]["page_faults"].append(_minor_faults() - faults)
    return measured


# ---------------------------------------------------------------------------------------------
# peak memory (child process)


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure_peak(call: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Peak memory of one call in MiB: working (above what was resident before) and total."""
    if device.type == "cuda":
        synchronise(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        synchronise(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"working_mib": (peak - before) / 2**20, "total_mib": peak / 2**20}
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak-RSS mark to the current resident set
    before = _status_kib("VmRSS")
    call()
    peak = _status_kib("VmHWM")
    return {"working_mib": (peak - before) / 1024, "total_mib": peak / 1024}


def memory_probe(batch: int, steps: int, device: torch.device) -> dict[str, dict[str, float]]:
    """In this process: peak memory of one forward of each ANN and of one simulation of each SNN,
    plus the size of all membranes together (the state any exact IF simulation must keep)."""
    rnl, images, labels = build_rnl(batch, device)
    relu = relu_twin(rnl)
    snn, snn_cached = to_if(rnl), to_if(rnl, static_input=True)

    def forward(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                model(images)
        return run

    def simulation(model: nn.Module) -> Callable[[], None]:
        return lambda: simulate(model, [(images, labels)], steps)

    calls = {"ann_forward": forward(rnl), "ann_relu_forward": forward(relu), "snn_simulation": simulation(snn),
             "snn_cached_simulation": simulation(snn_cached)}
    for call in calls.values():  # warm-up: one-time allocations are not the call's memory
        call()
    report = {name: _measure_peak(call, device) for name, call in calls.items()}
    neurons = simulate(snn, [(images[:1], labels[:1])], 1).neurons
    report["membranes"] = {"mib": sum(neurons.values()) * batch * images.element_size() / 2**20}
    return report


def _child(args: argparse.Namespace, probe: str, env: dict[str, str], extra: tuple[str, ...] = ()) -> dict | None:
    """Run this benchmark with ``probe`` (a hidden flag) in a child process; its last line is JSON."""
    command = [sys.executable, "-m", "bench.bench_if", probe, "--batch", str(args.batch), "--steps", str(args.steps),
               "--repeats", str(args.repeats), "--threads", str(args.threads), "--device", args.device, *extra]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, **env), capture_output=True, text=True)
    if result.returncode != 0:
        print(f"{probe} failed: {result.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


#: glibc malloc settings of the timing runs: trimming off (no page-fault churn), and the defaults
ALLOCATORS = {
    "no_trim_malloc": {"MALLOC_TRIM_THRESHOLD_": str(2**30), "MALLOC_MMAP_THRESHOLD_": str(2**25)},
    "default_malloc": {},
}
VARIANTS = ("ann_rnl", "ann_relu", "snn", "snn_cached", "snn_no_fold")


def measure_memory(args: argparse.Namespace) -> dict[str, dict[str, float]] | None:
    """Run :func:`memory_probe` in a child process with the mmap threshold pinned at 64 KiB."""
    return _child(args, "--memory-probe", {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"})


def timing_probe(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, list[float]]]:
    """In this process: seconds and minor page faults per call of every variant (or of ``args.variant``)."""
    rnl, images, labels = build_rnl(args.batch, device)
    calls = variants(rnl, relu_twin(rnl), images, labels, args.steps)
    if args.variant:
        calls = {args.variant: calls[args.variant]}
    return time_variants(calls, args.repeats, device)


def measure_timings(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]] | None]:
    """Both timing runs (see the module docstring), summarised."""
    no_trim = _child(args, "--timing-probe", ALLOCATORS["no_trim_malloc"])
    default: dict | None = {}
    for name in VARIANTS:
        measured = _child(args, "--timing-probe", ALLOCATORS["default_malloc"], ("--variant", name))
        if measured is None:
            default = None
            break
        default.update(measured)
    return {"no_trim_malloc": no_trim and summarise(no_trim, args.steps),
            "default_malloc": default and summarise(default, args.steps)}


# ---------------------------------------------------------------------------------------------
# report


def summarise(measured: dict[str, dict[str, list[float]]], steps: int) -> dict[str, dict[str, float]]:
    """Median seconds, per-step milliseconds, median ratio to ann_rnl of the same repeat, faults."""
    base = measured["ann_rnl"]["seconds"]
    table = {}
    for name, values in measured.items():
        seconds = values["seconds"]
        ratios = [value / reference for value, reference in zip(seconds, base)]
        table[name] = {
            "seconds": seconds, "median_s": statistics.median(seconds), "min_s": min(seconds),
            "ms_per_step": 1000 * statistics.median(seconds) / steps,
            "ratio_to_ann_rnl": statistics.median(ratios), "ratio_of_minima": min(seconds) / min(base),
            "page_faults_per_call": statistics.median(values["page_faults"]),
        }
    return table


def print_report(facts: dict[str, str], config: dict, timings: dict[str, dict | None], memory: dict | None) -> None:
    for key, value in facts.items():
        print(f"{key:>14}: {value}")
    print(f"{'config':>14}: VGG16 (CIFAR shape), batch {config['batch']}, T = {config['steps']}, "
          f"{config['repeats']} interleaved repeats, device {config['device']}")
    for allocator, table in timings.items():
        print(f"\n{allocator}:")
        if table is None:
            print("  (failed)")
            continue
        print(f"{'variant':<14} {'median s':>9} {'min s':>8} {'ms/step':>8} {'ratio':>7} {'ratio of minima':>16} "
              f"{'page faults':>12}")
        for name, row in table.items():
            print(f"{name:<14} {row['median_s']:9.3f} {row['min_s']:8.3f} {row['ms_per_step']:8.2f} "
                  f"{row['ratio_to_ann_rnl']:7.3f} {row['ratio_of_minima']:16.3f} {row['page_faults_per_call']:12.0f}")
    print(f"(ratio = SNN or ANN time / {config['steps']} forwards of the RNL ANN; target for snn <= {TIME_TARGET})")
    if memory:
        print()
        print(f"{'peak memory MiB':<26} {'working':>9} {'total':>9} {'working / ann':>14} {'total / ann':>12}")
        ann = memory["ann_forward"]
        for name in ("ann_forward", "ann_relu_forward", "snn_simulation", "snn_cached_simulation"):
            row = memory[name]
            print(f"{name:<26} {row['working_mib']:9.1f} {row['total_mib']:9.1f} "
                  f"{row['working_mib'] / ann['working_mib']:14.2f} {row['total_mib'] / ann['total_mib']:12.2f}")
        print(f"(all membranes together: {memory['membranes']['mib']:.1f} MiB; target for snn total / ann <= "
              f"{MEMORY_TARGET})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_if", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (batch 2, T 4, 1 repeat)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int, help="T (default 32)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="JSON path (default bench/results/bench_if[_quick].json)")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timing-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch = args.batch or (2 if args.quick else 32)
    args.steps = args.steps or (4 if args.quick else 32)
    args.repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.batch, args.steps, device)))
        return 0
    if args.timing_probe:
        print(json.dumps(timing_probe(args, device)))
        return 0

    facts = header()
    config = {"model": "vgg16", "image": [3, 32, 32], "batch": args.batch, "steps": args.steps,
              "repeats": args.repeats, "threads": args.threads, "device": str(device), "quick": args.quick}
    timings = measure_timings(args)
    memory = measure_memory(args)
    print_report(facts, config, timings, memory)
    no_trim, default = timings["no_trim_malloc"], timings["default_malloc"]
    result = {
        "header": facts, "config": config, "allocators": ALLOCATORS, "timings": no_trim,
        "timings_default_malloc": default,
        "time_ratio": no_trim and no_trim["snn"]["ratio_to_ann_rnl"],
        "time_ratio_default_malloc": default and default["snn"]["ratio_to_ann_rnl"], "time_target": TIME_TARGET,
        "memory": memory, "memory_target": MEMORY_TARGET,
        "memory_ratio_working": memory and memory["snn_simulation"]["working_mib"] / memory["ann_forward"]["working_mib"],
        "memory_ratio_total": memory and memory["snn_simulation"]["total_mib"] / memory["ann_forward"]["total_mib"],
    }
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"bench_if{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
