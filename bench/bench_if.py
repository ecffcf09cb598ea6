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
* ``snn_no_fold``: without BN folding (every layer exactly as in the ANN);
* ``sj_multistep``: the peer, SpikingJelly 2.0, on the same converted layers and weights (BN folded
  as in ``snn``): multi-step ``IFNode`` neurons (soft reset, v(0) = 0), each run of stateless
  layers in one ``SeqToANNContainer``, input ``[T, B, 3, 32, 32]`` (time merged into the batch);
* ``sj_singlestep``: the same peer network in single-step mode, looping t = 1..T.

The peer variants read out as ``simulate`` does (outputs summed over time, accuracy after every t),
without counting spikes (``simulate`` counts them). Without SpikingJelly (an optional extra:
``pip install -e .[bench]``) their rows say "not installed" and the rest runs. In the same run the
spike counts of every layer (summed over T and the batch), the summed outputs and acc(t) of both peer
modes are compared with ``simulate``'s (``agreement`` in the JSON).

In the per-allocator tables, ratios are the median over repeats of (variant time / ann_rnl time of
the same repeat); the main table uses best-of-n times (see below).

The timings are taken twice, in child processes:

* ``no_trim_malloc``: all variants interleaved in one process with glibc malloc's trimming off
  (``MALLOC_TRIM_THRESHOLD_`` 1 GiB, ``MALLOC_MMAP_THRESHOLD_`` 32 MiB): no variant page-faults,
  so the ratios compare the compute alone. This is the headline figure.
* ``default_malloc``: glibc's defaults, each variant alone in its own process (as a user runs
  one of them). With the defaults glibc returns freed heap memory to the OS and the next tensor of
  that size page-faults again; how often depends on the order of allocations (and, in one process,
  on what ran before), and it can move a variant's time by 10 % or more. The minor page faults per
  call are reported. Variants run one after another here, not interleaved (``--quick``: all in
  one process, interleaved, to keep the smoke run short).

Peak memory is measured in a child process with glibc's mmap threshold pinned at 64 KiB
(``MALLOC_MMAP_THRESHOLD_``), so tensor memory goes back to the OS when freed and the resident set
follows the live tensors: before each measured call the peak-RSS mark is reset
(``/proc/self/clear_refs``), and the peak (``VmHWM``) after it is compared with the resident set
before it. ``working`` = peak minus resident before (the call's own memory: activations,
membranes, scratch), ``total`` = the process's peak (includes torch itself and the weights).
Measured for one forward of each ANN and one T-step simulation of ``snn``, ``snn_cached`` and
the peer's two modes;
``membranes`` is the size of all IF membranes together, which any exact simulation must hold.
On CUDA the same is done with ``torch.cuda`` peak-allocation counters.

The main table: seconds (best of the repeats), ratio to T RNL-ANN forwards (best to best), ratio to
the peer's best mode, peak working memory and its ratio to one ANN forward's. The JSON's ``summary``
list holds the targets (issue 9) and whether they are met.

Writes ``bench/results/bench_if.json`` (``--quick``: ``bench_if_quick.json``; ``--out`` overrides).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "library"))

from bench.common import evidence, print_header, print_table, write_result  # noqa: E402
from snnconv.convert import to_if  # noqa: E402
from snnconv.layers import RateNorm, activation_factory  # noqa: E402
from snnconv.models import VGG, build_model  # noqa: E402
from snnconv.neurons import IFNeuron, if_neurons  # noqa: E402
from snnconv.simulate import simulate  # noqa: E402

#: issue 9's targets: simulation time <= 1.05 x T ANN forwards, peak memory <= 2 x one ANN forward
TIME_TARGET = 1.05
MEMORY_TARGET = 2.0
#: and simulation time <= 1.0 x the peer's best mode
PEER_TIME_TARGET = 1.0


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


# ---------------------------------------------------------------------------------------------
# the peer: SpikingJelly 2.0 on the same converted network and weights

#: set to "1" to run as if SpikingJelly were not installed (the smoke test checks that path)
HIDE_PEER_ENV = "SNNCONV_BENCH_HIDE_SPIKINGJELLY"
#: the timed peer variants: multi-step (time merged into the batch) and the single-step loop
PEER_VARIANTS = ("sj_multistep", "sj_singlestep")
#: what the peer rows say when SpikingJelly cannot be imported
NOT_INSTALLED = "not installed"


def import_peer() -> SimpleNamespace | None:
    """SpikingJelly's ``neuron``, ``layer`` and ``functional`` modules, or None when it cannot be
    imported (not installed, or hidden with ``SNNCONV_BENCH_HIDE_SPIKINGJELLY=1``)."""
    if os.environ.get(HIDE_PEER_ENV) == "1":
        sys.modules["spikingjelly"] = None  # the import below then fails as if it were absent
    try:
        from spikingjelly.activation_based import functional, layer, neuron
    except ImportError:
        return None
    return SimpleNamespace(functional=functional, layer=layer, neuron=neuron)


def layer_chain(snn: nn.Module) -> list[nn.Module]:
    """The converted VGG's layers in forward order (features, global pool, classifier), the
    modules themselves (weights shared, BN already folded where :func:`to_if` folded it)."""
    if not isinstance(snn, VGG):
        raise ValueError(f"the peer network is built for a converted VGG, got {type(snn).__name__}")
    return [*snn.features, snn.pool, *snn.classifier]


def peer_network(snn: nn.Module, step_mode: str, sj: SimpleNamespace) -> nn.Sequential:
    """SpikingJelly's version of the converted ``snn``: the same layers (shared modules), each of our
    IF neurons an ``IFNode(v_threshold=theta, v_reset=None)`` (soft reset, v(0) = 0, amplitude 1).

    ``step_mode="m"``: input ``[T, B, 3, H, W]``, runs of stateless layers wrapped in one
    ``SeqToANNContainer`` each (time merged into the batch), multi-step IF nodes; ``"s"``: input
    ``[B, 3, H, W]`` once per step, single-step IF nodes.
    """
    if step_mode not in ("m", "s"):
        raise ValueError(f"step_mode must be 'm' or 's', got {step_mode!r}")
    modules: list[nn.Module] = []
    stateless: list[nn.Module] = []
    for module in layer_chain(snn):
        if not isinstance(module, IFNeuron):
            (stateless if step_mode == "m" else modules).append(module)
            continue
        if module.v_init != 0.0 or module.amplitude != 1.0:
            raise ValueError("the peer network assumes RNL neurons: v(0) = 0 and spike amplitude 1")
        if stateless:
            modules.append(sj.layer.SeqToANNContainer(*stateless))
            stateless = []
        modules.append(sj.neuron.IFNode(v_threshold=module.threshold, v_reset=None, step_mode=step_mode))
    if stateless:
        modules.append(sj.layer.SeqToANNContainer(*stateless))
    return nn.Sequential(*modules).eval()


def peer_simulate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, step_mode: str,
                  sj: SimpleNamespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the peer network for ``steps`` steps on one batch, as :func:`simulate` does: the image at
    every step, outputs summed over time, accuracy after every t. Returns (summed outputs
    ``[B, classes]``, correct predictions after each step ``[steps]``)."""
    with torch.inference_mode():
        sj.functional.reset_net(net)
        if step_mode == "m":
            running = net(images.unsqueeze(0).expand(steps, *images.shape)).cumsum(0)  # [T, B, classes]
            correct = (running.argmax(-1) == labels).sum(1)
            summed = running[-1]
        else:
            summed, correct = None, torch.zeros(steps, dtype=torch.int64, device=images.device)
            for t in range(steps):
                outputs = net(images)
                summed = outputs.clone() if summed is None else summed.add_(outputs)
                correct[t] = (summed.argmax(1) == labels).sum()
        sj.functional.reset_net(net)
    return summed, correct


def count_spikes(neurons: list[nn.Module]) -> tuple[list[float], list]:
    """Forward hooks that add up the spikes every module of ``neurons`` emits (over time and batch);
    returns (the running totals, one per module, and the hook handles)."""
    totals = [0.0] * len(neurons)

    def hook(index: int):
        return lambda module, inputs, output: totals.__setitem__(index, totals[index] + output.double().sum().item())

    return totals, [module.register_forward_hook(hook(index)) for index, module in enumerate(neurons)]


#: per-layer spike counts and output sums of the peer must agree with ours within this relative
#: difference. The IF update is the same float arithmetic in both (v + I, v >= theta, v - s theta);
#: the convolutions can differ in the last bits (the multi-step peer runs them on a batch of T x B,
#: which may pick other kernels), and a membrane within an ulp of theta then spikes one step earlier
#: or later, a difference that can propagate. 1e-3 allows that for a handful of neurons and still
#: catches any real difference in the dynamics (a wrong reset or threshold changes counts by > 1 %).
AGREEMENT_TOLERANCE = 1e-3


def agreement_check(batch: int, steps: int, device: torch.device) -> dict:
    """Simulate the converted VGG16 with :func:`simulate` and with both peer modes on the same batch;
    compare spike counts per layer (summed over T and the batch), output sums and acc(t)."""
    sj = import_peer()
    if sj is None:
        return {"status": NOT_INSTALLED}
    rnl, images, labels = build_rnl(batch, device)
    snn = to_if(rnl)
    names = [name for name, _ in if_neurons(snn)]
    output_layer = layer_chain(snn)[-1]
    ours_summed: list[torch.Tensor] = []
    handle = output_layer.register_forward_hook(lambda module, inputs, output: ours_summed.append(output.clone()))
    try:
        ours = simulate(snn, [(images, labels)], steps)
    finally:
        handle.remove()
    reference = {"spikes": [ours.spike_counts[name] * batch for name in names],
                 "outputs": torch.stack(ours_summed).sum(0), "acc_curve": ours.acc_curve}
    report: dict = {"status": "measured", "tolerance": AGREEMENT_TOLERANCE, "layers": names,
                    "spikes": {"snnconv": reference["spikes"]}, "modes": {}}
    for variant, mode in zip(PEER_VARIANTS, ("m", "s")):
        net = peer_network(snn, mode, sj)
        totals, hooks = count_spikes([module for module in net if isinstance(module, sj.neuron.IFNode)])
        try:
            summed, correct = peer_simulate(net, images, labels, steps, mode, sj)
        finally:
            for hook in hooks:
                hook.remove()
        acc_curve = (correct.double() * 100.0 / batch).tolist()
        report["spikes"][variant] = totals
        report["modes"][variant] = {
            "max_rel_diff_spikes": max(relative_difference(a, b) for a, b in zip(totals, reference["spikes"])),
            "max_rel_diff_output_sums": float((summed - reference["outputs"]).abs().max()
                                              / reference["outputs"].abs().max().clamp_min(1e-12)),
            "acc_curve_equal": acc_curve == reference["acc_curve"],
        }
    modes = report["modes"].values()
    report["max_rel_diff_spikes"] = max(mode["max_rel_diff_spikes"] for mode in modes)
    report["max_rel_diff_output_sums"] = max(mode["max_rel_diff_output_sums"] for mode in modes)
    report["agree"] = (max(report["max_rel_diff_spikes"], report["max_rel_diff_output_sums"]) <= AGREEMENT_TOLERANCE
                       and all(mode["acc_curve_equal"] for mode in modes))
    return report


def relative_difference(value: float, reference: float) -> float:
    """|value - reference| / |reference| (0 when both are 0)."""
    if value == reference:
        return 0.0
    return abs(value - reference) / max(abs(reference), 1e-12)


# ---------------------------------------------------------------------------------------------
# timing


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

    calls = {
        "ann_rnl": ann(rnl),
        "ann_relu": ann(relu),
        "snn": snn(),
        "snn_cached": snn(static_input=True),
        "snn_no_fold": snn(fold_bn=False),
    }
    sj = import_peer()
    if sj is not None:
        converted = to_if(rnl)  # a copy of its own: the same layers and weights as ``snn``'s
        for name, mode in zip(PEER_VARIANTS, ("m", "s")):
            net = peer_network(converted, mode, sj)
            calls[name] = lambda net=net, mode=mode: peer_simulate(net, images, labels, steps, mode, sj)
    return calls


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
    sj = import_peer()
    if sj is not None:
        for name, mode in zip(PEER_VARIANTS, ("m", "s")):
            net = peer_network(to_if(rnl), mode, sj)
            calls[f"{name}_simulation"] = (lambda net=net, mode=mode:
                                           peer_simulate(net, images, labels, steps, mode, sj))
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
VARIANTS = ("ann_rnl", "ann_relu", "snn", "snn_cached", "snn_no_fold", *PEER_VARIANTS)


def profile_probe(args: argparse.Namespace, device: torch.device, top: int = 10) -> dict[str, list[dict]]:
    """In this process: torch.profiler's per-operator self time (ms) for one call of ``snn`` and of
    each peer mode, the ``top`` most expensive operators of each (after one warm-up call)."""
    from torch.profiler import ProfilerActivity, profile

    rnl, images, labels = build_rnl(args.batch, device)
    calls = variants(rnl, relu_twin(rnl), images, labels, args.steps)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    report = {}
    for name in ("ann_rnl", "snn", *PEER_VARIANTS):
        if name not in calls:
            continue
        calls[name]()
        with profile(activities=activities) as profiler:
            calls[name]()
            synchronise(device)
        events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
        report[name] = [{"op": event.key, "self_ms": event.self_cpu_time_total / 1000, "calls": event.count}
                        for event in events[:top]]
    return report


def measure_profile(args: argparse.Namespace) -> dict[str, list[dict]] | None:
    """Run :func:`profile_probe` in a child process (no-trim malloc, as the headline timings)."""
    return _child(args, "--profile-probe", ALLOCATORS["no_trim_malloc"])


def measure_memory(args: argparse.Namespace) -> dict[str, dict[str, float]] | None:
    """Run :func:`memory_probe` in a child process with the mmap threshold pinned at 64 KiB."""
    return _child(args, "--memory-probe", {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"})


def timing_probe(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, list[float]]]:
    """In this process: seconds and minor page faults per call of every variant (or of ``args.variant``)."""
    rnl, images, labels = build_rnl(args.batch, device)
    calls = variants(rnl, relu_twin(rnl), images, labels, args.steps)
    if args.variant:
        if args.variant not in calls:
            raise ValueError(f"variant {args.variant!r} needs SpikingJelly, which is {NOT_INSTALLED}")
        calls = {args.variant: calls[args.variant]}
    return time_variants(calls, args.repeats, device)


def measure_timings(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]] | None]:
    """Both timing runs (see the module docstring), summarised."""
    no_trim = _child(args, "--timing-probe", ALLOCATORS["no_trim_malloc"])
    if args.quick:  # toy sizes: one process for all variants keeps the smoke run short
        default = _child(args, "--timing-probe", ALLOCATORS["default_malloc"])
        return {"no_trim_malloc": no_trim and summarise(no_trim, args.steps),
                "default_malloc": default and summarise(default, args.steps)}
    default: dict | None = {}
    for name in VARIANTS if import_peer() is not None else VARIANTS[:-len(PEER_VARIANTS)]:
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


#: rows of the main table: (timed variant, its memory measurement, label)
TABLE_ROWS = (
    ("ann_rnl", "ann_forward", "T x ANN forward, Rate Norm (the bound)"),
    ("ann_relu", "ann_relu_forward", "T x ANN forward, ReLU"),
    ("sj_multistep", "sj_multistep_simulation", "SpikingJelly multi-step IFNode"),
    ("sj_singlestep", "sj_singlestep_simulation", "SpikingJelly single-step loop"),
    ("snn", "snn_simulation", "snnconv simulate (acc(t) for every t)"),
    ("snn_cached", "snn_cached_simulation", "snnconv simulate, first conv cached"),
    ("snn_no_fold", None, "snnconv simulate, BN not folded"),
)


def peer_best(timing: dict[str, dict[str, float]] | None) -> tuple[str, float] | None:
    """(variant, best seconds) of the peer's faster mode, or None when it was not timed."""
    timed = [(name, timing[name]["min_s"]) for name in PEER_VARIANTS if timing and name in timing]
    return min(timed, key=lambda item: item[1]) if timed else None


def main_table(timing: dict[str, dict[str, float]] | None, memory: dict | None) -> list[dict]:
    """One row per variant: best-of-n seconds, ratio to T ANN forwards and to the peer's best mode,
    peak working memory (MiB) and its ratio to one ANN forward's; peer rows say 'not installed'."""
    best = peer_best(timing)
    rows = []
    for variant, memory_key, label in TABLE_ROWS:
        row: dict = {"variant": variant, "label": label}
        if timing is None or variant not in timing:
            missing = NOT_INSTALLED if variant in PEER_VARIANTS else "failed"
            row.update(seconds=missing, ratio_to_t_ann=missing, ratio_to_peer_best=missing)
        else:
            seconds = timing[variant]["min_s"]
            row.update(seconds=seconds, ratio_to_t_ann=seconds / timing["ann_rnl"]["min_s"],
                       ratio_to_peer_best=seconds / best[1] if best else NOT_INSTALLED)
        if memory_key and memory and memory_key in memory:
            working = memory[memory_key]["working_mib"]
            row.update(peak_working_mib=working, memory_to_ann_forward=working / memory["ann_forward"]["working_mib"])
        else:
            missing = NOT_INSTALLED if variant in PEER_VARIANTS else "not measured"
            row.update(peak_working_mib=missing, memory_to_ann_forward=missing)
        rows.append(row)
    return rows


def summary(rows: list[dict], agreement: dict) -> list[dict]:
    """The targets of issue 9 for the README generator: value (number or string), target, met (None
    when not measured). The spike-count entry's value is the largest relative difference of a layer's
    count; it is met when that, the output sums' difference and acc(t) all agree (see
    :func:`agreement_check`)."""
    by_variant = {row["variant"]: row for row in rows}
    snn = by_variant["snn"]

    def entry(measure: str, value: object, target: float, prefix: str = "<= ") -> dict:
        met = value <= target if isinstance(value, float) else None
        return {"benchmark": "IF simulation (RNL), VGG16 T=32", "measure": measure, "value": value,
                "target": f"{prefix}{target}", "met": met}

    spikes = agreement.get("max_rel_diff_spikes", agreement.get("status", "not measured"))
    return [
        entry("time / (T x ANN forward)", snn["ratio_to_t_ann"], TIME_TARGET),
        entry("time / SpikingJelly best", snn["ratio_to_peer_best"], PEER_TIME_TARGET),
        entry("peak memory / one ANN forward", snn["memory_to_ann_forward"], MEMORY_TARGET),
        {**entry("spike counts agree with SpikingJelly", spikes, AGREEMENT_TOLERANCE),
         "met": agreement["agree"] if agreement.get("status") == "measured" else None},
    ]


def _cell(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_report(facts: dict[str, str], config: dict, timings: dict[str, dict | None], memory: dict | None,
                 rows: list[dict], agreement: dict, targets: list[dict]) -> None:
    print_header("IF simulation (RNL) against T x ANN forward and SpikingJelly", facts)
    print(f"   config: VGG16 (CIFAR shape), batch {config['batch']}, T = {config['steps']}, "
          f"{config['repeats']} interleaved repeats, device {config['device']}")
    print(f"   1-minute load average: {config['load_average_before']:.2f} before, "
          f"{config['load_average_after_timings']:.2f} after the timings (2 cores; others' work skews timings)\n")
    print_table(["variant", "seconds (best of n)", "ratio to T x ANN", "ratio to peer best", "peak MiB (working)",
                 "peak / ANN forward"],
                [[row["label"], _cell(row["seconds"]), _cell(row["ratio_to_t_ann"]), _cell(row["ratio_to_peer_best"]),
                  _cell(row["peak_working_mib"], 1), _cell(row["memory_to_ann_forward"], 2)] for row in rows])
    print("(timings: no_trim_malloc run; ANN rows' memory is one forward, SNN rows' one T-step simulation)")
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
    print(f"(ratio = median over repeats of time / {config['steps']} forwards of the RNL ANN)")
    if memory:
        print()
        print(f"{'peak memory MiB':<26} {'working':>9} {'total':>9} {'working / ann':>14} {'total / ann':>12}")
        ann = memory["ann_forward"]
        for name, row in memory.items():
            if name == "membranes":
                continue
            print(f"{name:<26} {row['working_mib']:9.1f} {row['total_mib']:9.1f} "
                  f"{row['working_mib'] / ann['working_mib']:14.2f} {row['total_mib'] / ann['total_mib']:12.2f}")
        print(f"(all membranes together: {memory['membranes']['mib']:.1f} MiB)")
    print()
    if agreement["status"] == "measured":
        print(f"spike counts per layer (over T and the batch), snnconv vs SpikingJelly "
              f"(tolerance: relative difference <= {agreement['tolerance']}):")
        print_table(["layer", "snnconv", *PEER_VARIANTS],
                    [[name, *(f"{agreement['spikes'][key][index]:.0f}" for key in ("snnconv", *PEER_VARIANTS))]
                     for index, name in enumerate(agreement["layers"])])
        for variant, mode in agreement["modes"].items():
            print(f"{variant}: max rel diff spikes {mode['max_rel_diff_spikes']:.3g}, output sums "
                  f"{mode['max_rel_diff_output_sums']:.3g}, acc(t) equal: {mode['acc_curve_equal']}")
    else:
        print(f"spike-count check against SpikingJelly: {agreement['status']}")
    print()
    print_table(["measure", "value", "target", "met"],
                [[t["measure"], _cell(t["value"], 4), t["target"], t["met"]] for t in targets])


def print_profiles(profiles: dict[str, list[dict]] | None) -> None:
    """The most expensive operators of one call of each profiled variant (torch.profiler)."""
    if not profiles:
        print("\nprofile: failed" if profiles is None else "")
        return
    for name, events in profiles.items():
        print(f"\nprofile of one call of {name} (self time, top {len(events)} operators):")
        print_table(["operator", "self ms", "calls"],
                    [[event["op"], f"{event['self_ms']:.1f}", event["calls"]] for event in events])


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
    parser.add_argument("--profile-probe", action="store_true", help=argparse.SUPPRESS)
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
    if args.profile_probe:
        print(json.dumps(profile_probe(args, device)))
        return 0

    facts = evidence()
    config = {"model": "vgg16", "image": [3, 32, 32], "batch": args.batch, "steps": args.steps,
              "repeats": args.repeats, "threads": args.threads, "device": str(device), "quick": args.quick,
              "load_average_before": os.getloadavg()[0]}
    timings = measure_timings(args)
    config["load_average_after_timings"] = os.getloadavg()[0]  # > ~1.5 on 2 cores: others were running
    memory = measure_memory(args)
    agreement = agreement_check(args.batch, args.steps, device)
    profiles = measure_profile(args)
    no_trim, default = timings["no_trim_malloc"], timings["default_malloc"]
    rows = main_table(no_trim or default, memory)
    targets = summary(rows, agreement)
    print_report(facts, config, timings, memory, rows, agreement, targets)
    print_profiles(profiles)
    result = {
        "header": facts, "config": config, "allocators": ALLOCATORS, "timings": no_trim,
        "timings_default_malloc": default,
        "time_ratio": no_trim and no_trim["snn"]["ratio_to_ann_rnl"],
        "time_ratio_default_malloc": default and default["snn"]["ratio_to_ann_rnl"], "time_target": TIME_TARGET,
        "memory": memory, "memory_target": MEMORY_TARGET,
        "memory_ratio_working": memory and (memory["snn_simulation"]["working_mib"]
                                            / memory["ann_forward"]["working_mib"]),
        "memory_ratio_total": memory and memory["snn_simulation"]["total_mib"] / memory["ann_forward"]["total_mib"],
        "peer": {"name": "spikingjelly", "installed": import_peer() is not None,
                 "time_target": PEER_TIME_TARGET},
        "table": rows, "agreement": agreement, "profile": profiles, "summary": targets,
    }
    write_result(result, "bench_if", args.quick, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
