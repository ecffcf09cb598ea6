"""Stage 1: train the source ANN; ``evaluate`` gives test accuracy in percent.

Command line (trains through the stage-1 cache and prints accuracies; ``__main__.py``)::

    python -m snnconv.train --model small --dataset digits
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..config import Stage1Config
from ..models import set_levels


class RilSettings(Protocol):
    """What RIL's stage 2 reads from its settings (``snnconv.methods.rnl.RnlConfig``, the ``rnl`` section)."""

    lam: float
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    sharescale: bool
    scale_init: float
    epochs: int
    acc_tolerance: float
    inspect_interval: int
    teacher: str
    omega_weighting: str


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite (the message names the epoch and batch)."""


@dataclass
class EpochStats:
    """What one epoch of training produced (``train_loss`` is the mean over batches)."""

    epoch: int
    train_loss: float
    train_acc: float
    val_acc: float
    lr: float
    seconds: float


EpochCallback = Callable[[EpochStats], None]


class DeviceError(RuntimeError):
    """The trial cannot run on the device it was given (one line saying why and what to do)."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available (the device Ray assigned), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def torch_build() -> str:
    """This torch's version and what it was built for, e.g. ``torch 2.4.1 built for CUDA 12.1``."""
    if torch.version.cuda:
        return f"torch {torch.__version__} built for CUDA {torch.version.cuda}"
    if getattr(torch.version, "hip", None):
        return f"torch {torch.__version__} built for ROCm {torch.version.hip}"
    return f"torch {torch.__version__}, a CPU-only build"


def check_device(name: str = "auto", gpus_assigned: int = 0) -> torch.device:
    """The device a trial runs on, refusing to fall back to the CPU behind the scheduler's back.

    ``name`` is the config's ``device`` (auto, cpu, cuda, cuda:N); ``gpus_assigned`` is how many
    GPUs the scheduler gave the trial (with Ray, ``len(ray.get_gpu_ids())``). Raises
    :class:`DeviceError` when torch sees no CUDA but a GPU was assigned (``auto`` or ``cuda``) or
    ``cuda`` was asked for. ``cpu`` is always allowed, GPU or not.
    """
    if isinstance(gpus_assigned, bool) or int(gpus_assigned) != gpus_assigned or gpus_assigned < 0:
        raise ValueError(f"gpus_assigned must be an integer >= 0, got {gpus_assigned!r}")
    if name == "cpu" or torch.cuda.is_available():
        return resolve_device(name)
    build = torch_build()
    if gpus_assigned > 0 and (name == "auto" or name.startswith("cuda")):
        gpus = f"{int(gpus_assigned)} GPU{'s' if gpus_assigned != 1 else ''}"
        raise DeviceError(f"Ray gave this trial {gpus} but torch sees no CUDA ({build}): install a torch build "
                          "for the node's driver, or set device: cpu")
    if name.startswith("cuda"):
        raise DeviceError(f"device: {name} but torch sees no CUDA ({build}): install a torch build for the "
                          "node's driver, or set device: cpu or auto")
    return resolve_device(name)


def device_gpu_name(device: torch.device) -> str:
    """The GPU's name (``torch.cuda.get_device_name``) for a CUDA device, ``none`` for any other."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "none"


def amp_enabled(config: Stage1Config, device: torch.device) -> bool:
    """Whether training runs under bfloat16 autocast: ``amp`` on CUDA, and on the CPU with ``amp_on_cpu``."""
    return config.amp and (device.type == "cuda" or (device.type == "cpu" and config.amp_on_cpu))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(params: Iterable[nn.Parameter], name: str, lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """SGD (with momentum) or Adam over ``params``."""
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; allowed: sgd, adam")


def build_scheduler(optimizer: torch.optim.Optimizer, config: Stage1Config, epochs: int):
    """A per-epoch lr schedule: cosine to 0 over ``epochs``, step at milestones, or constant."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, config.milestones, config.gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def batches(loader: Iterable, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Move each ``(images, labels)`` batch to ``device`` (a no-op for device-resident data)."""
    for images, labels in loader:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``loader`` in percent (eval mode; train mode restored)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    for images, labels in batches(loader, device):
        correct += (model(images).argmax(1) == labels).sum().item()
        total += labels.numel()
    model.train(was_training)
    return 100.0 * correct / max(total, 1)


def train_model(
    model: nn.Module,
    train_loader: Iterable,
    config: Stage1Config,
    device: torch.device,
    *,
    val_loader: Iterable | None = None,
    params: Iterable[nn.Parameter] | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[EpochStats]:
    """Train ``model`` with cross-entropy on ``train_loader``; returns per-epoch stats.

    ``params`` restricts what is optimised (default: all parameters); ``epochs`` and ``lr``
    override the config (used by fine-tuning). The forward pass runs under bfloat16 autocast where
    :func:`amp_enabled` says so (QCFS and Rate Norm quantise and clip in float32 all the same).
    Raises :class:`NonFiniteLossError` naming the epoch and batch as soon as the loss is NaN or
    infinite.
    """
    epochs = config.epochs if epochs is None else epochs
    lr = config.lr if lr is None else lr
    model.to(device).train()
    optimizer = build_optimizer(model.parameters() if params is None else params, config.optimizer, lr,
                                config.momentum, config.weight_decay)
    scheduler = build_scheduler(optimizer, config, epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    use_amp = amp_enabled(config, device)
    history: list[EpochStats] = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        for batch, (images, labels) in enumerate(batches(train_loader, device), start=1):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(images)
                loss = criterion(logits.float(), labels)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"training loss is {loss.item()} at epoch {epoch}, batch {batch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * labels.numel()
            correct += (logits.argmax(1) == labels).sum()
            seen += labels.numel()
        current_lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val_acc = evaluate(model, val_loader, device) if val_loader is not None else math.nan
        stats = EpochStats(epoch, loss_sum.item() / max(seen, 1), 100.0 * correct.item() / max(seen, 1),
                           val_acc, current_lr, time.perf_counter() - start)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    model.eval()
    return history


def print_epoch(prefix: str = "") -> EpochCallback:
    """An ``on_epoch`` callback printing one progress line per epoch."""

    def callback(stats: EpochStats) -> None:
        print(f"{prefix}epoch {stats.epoch:3d}  loss {stats.train_loss:.4f}  train {stats.train_acc:6.2f}%  "
              f"val {stats.val_acc:6.2f}%  lr {stats.lr:.4g}  {stats.seconds:.1f}s", flush=True)

    return callback


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with every parameter frozen (e.g. a teacher)."""
    teacher = copy.deepcopy(model).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


# ---------------------------------------------------------------------------------------------
# QCFS / PASCAL: layerwise-L fine-tune (phase 2 of PASCAL's adaptive schedule)


def finetune_levels(
    model: nn.Module,
    levels: list[int],
    train_loader: Iterable,
    config: Stage1Config,
    device: torch.device,
    *,
    epochs: int,
    lr: float,
    val_loader: Iterable | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[EpochStats]:
    """Give QCFS ``model`` a per-layer L list and train it on for ``epochs`` at learning rate ``lr``.

    Phase 2 of PASCAL's schedule (section 3.9): resume from the uniform-L stage-1 weights with the
    layerwise ``levels`` (one L per QCFS layer, forward order; a wrong length is refused with the
    layer names). Everything trains, thresholds included, with stage 1's optimizer, momentum,
    weight decay and schedule type (:func:`train_model`). ``epochs = 0`` only sets the levels.
    Modifies ``model`` in place and leaves it in eval mode.
    """
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 0:
        raise ValueError(f"finetune epochs must be an integer >= 0, got {epochs!r}")
    if not (lr > 0) or not math.isfinite(lr):
        raise ValueError(f"finetune lr must be positive, got {lr!r}")
    set_levels(model, levels)
    if epochs == 0:
        model.to(device).eval()
        return []
    return train_model(model, train_loader, config, device, val_loader=val_loader, epochs=int(epochs), lr=lr,
                       on_epoch=on_epoch)


# ---------------------------------------------------------------------------------------------
# stage 2 of RNL + RIL: Rate Inference Loss, training the Rate Norm scales only (section 2.5)

ValidationCallback = Callable[[dict[str, float]], None]


@dataclass
class RilResult:
    """What stage 2 did. ``candidates`` holds one row per validation within tolerance (the start
    included): lam, step, epoch, val_acc (percent), omega (validation set, ``omega_weighting``),
    p (mean over layers) and cos_term (mean 1 - cos since the last validation); ``chosen`` is the
    row with the lowest omega, whose scales the model holds on return."""

    start_val_acc: float
    start_omega: float
    candidates: list[dict[str, float]]
    chosen: dict[str, float]
    steps: int
    stopped_early: bool
    omega_weighting: str
    teacher: str
    #: the frozen teacher (``teacher="frozen"``), None for ``"self"``
    teacher_model: nn.Module | None = None


def _mean_p(model: nn.Module) -> float:
    from ..layers import rate_norm_layers

    values = [module.p().item() for _, module in rate_norm_layers(model)]
    return sum(values) / len(values)


class _CandidateTracker:
    """Validates the stage-2 model, keeps the candidates within tolerance and the lowest-omega one."""

    def __init__(self, model: nn.Module, scales: list[nn.Parameter], val_loader: Iterable, config: RilSettings,
                 device: torch.device, on_validate: ValidationCallback | None) -> None:
        self.model, self.scales, self.val_loader = model, scales, val_loader
        self.config, self.device, self.on_validate = config, device, on_validate
        self.start = self._measure(step=0, epoch=0, loss=math.nan, cos_term=math.nan)
        self.floor = self.start["val_acc"] - config.acc_tolerance
        self.candidates = [self.start]
        self.best = self.start
        self.best_scales = [scale.detach().clone() for scale in scales]

    def _measure(self, step: int, epoch: int, loss: float, cos_term: float) -> dict[str, float]:
        from ..metrics import model_omega

        result = model_omega(self.model, self.val_loader, self.device, self.config.omega_weighting)
        row = {"lam": self.config.lam, "step": step, "epoch": epoch, "val_acc": result.accuracy,
               "omega": result.mean, "p": _mean_p(self.model), "loss": loss, "cos_term": cos_term}
        if self.on_validate is not None:
            self.on_validate(dict(row))
        return row

    def check(self, step: int, epoch: int, loss: float, cos_term: float) -> bool:
        """Validate now; False when accuracy fell below the tolerance (stage 2 must stop)."""
        row = self._measure(step, epoch, loss, cos_term)
        if row["val_acc"] < self.floor:
            return False
        self.candidates.append(row)
        if row["omega"] < self.best["omega"]:
            self.best = row
            self.best_scales = [scale.detach().clone() for scale in self.scales]
        return True

    @torch.no_grad()
    def restore_best(self) -> None:
        for scale, value in zip(self.scales, self.best_scales):
            scale.copy_(value)


def _prepare_stage2(model: nn.Module, config: RilSettings) -> list[nn.Parameter]:
    """Reset the scales to scale_init (shared or not), lock the running max, freeze everything but
    the scales, eval mode. Returns the distinct scale parameters."""
    from ..layers import lock_running_max, scale_parameters, set_scale, share_scale

    (share_scale if config.sharescale else set_scale)(model, config.scale_init)
    lock_running_max(model)
    scales = scale_parameters(model)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for scale in scales:
        scale.requires_grad_(True)
    model.eval()
    return scales


def ril_loss(target: torch.Tensor, logits: torch.Tensor, hidden_omega: list[torch.Tensor], lam: float,
             weighting: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Rate Inference Loss: ``(1 - mean cosine(target, logits)) + lam * omega`` for logits
    ``[B, classes]`` and per-layer k tensors. Returns ``(loss, cosine term)`` (0-d tensors)."""
    from ..metrics import aggregate_omega, output_omega_tensor

    omega = aggregate_omega(hidden_omega, output_omega_tensor(logits), weighting)
    cos_term = 1.0 - nn.functional.cosine_similarity(target, logits, dim=1, eps=1e-6).mean()
    return cos_term + lam * omega, cos_term


def train_ril(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable,
    config: RilSettings,
    device: torch.device,
    *,
    on_validate: ValidationCallback | None = None,
) -> RilResult:
    """Stage 2 of RNL + RIL on ``model`` (a stage-1 Rate Norm model, modified in place).

    ``config`` is the ``rnl`` section (:class:`snnconv.methods.rnl.RnlConfig`). Steps:

    1. teacher: ``"frozen"`` = a frozen copy of the model as it comes in (the stage-1 network, the
       paper's r*); ``"self"`` = the model's own detached output (the authors' code: the cosine
       term then vanishes, section 2.6);
    2. the scales are reset to ``scale_init`` (one shared parameter with ``sharescale``), the running
       max is locked, every other parameter is frozen, and the model runs in eval mode (BN uses its
       running statistics, dropout is off: the network tuned is the one that gets converted);
    3. loss per batch = (1 - mean cosine(teacher logits, student logits)) + lam * omega, omega from
       hooks on the student's forward, aggregated with ``config.omega_weighting``;
    4. validation (accuracy and omega on ``val_loader``) at the start, every ``inspect_interval``
       batches and after the last batch. Below ``start accuracy - acc_tolerance`` (percentage
       points) stage 2 stops; otherwise the state is a candidate. The model ends with the scales
       of the candidate with the lowest omega (the start state is a candidate too).

    ``on_validate(row)`` gets each validation's row (see :class:`RilResult`). Raises
    :class:`NonFiniteLossError` if the loss is NaN or infinite.
    """
    from ..metrics import OmegaRecorder

    model.to(device)
    teacher = frozen_copy(model) if config.teacher == "frozen" else model
    scales = _prepare_stage2(model, config)
    optimizer = build_optimizer(scales, config.optimizer, config.lr, config.momentum, config.weight_decay)
    tracker = _CandidateTracker(model, scales, val_loader, config, device, on_validate)
    step, since, stopped = 0, 0, False
    loss_sum = torch.zeros((), device=device)
    cos_sum = torch.zeros((), device=device)
    with OmegaRecorder(model, detach=False) as recorder:
        for epoch in range(1, config.epochs + 1):
            for images, _ in batches(train_loader, device):
                with torch.no_grad():
                    target = teacher(images)
                logits = model(images)
                loss, cos_term = ril_loss(target, logits, recorder.hidden(), config.lam, config.omega_weighting)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(f"stage-2 loss is {loss.item()} at epoch {epoch}, step {step + 1}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step, since = step + 1, since + 1
                loss_sum += loss.detach()
                cos_sum += cos_term.detach()
                if step % config.inspect_interval == 0:
                    stopped = not tracker.check(step, epoch, loss_sum.item() / since, cos_sum.item() / since)
                    loss_sum.zero_()
                    cos_sum.zero_()
                    since = 0
                    if stopped:
                        break
            if stopped:
                break
    if not stopped and since:
        stopped = not tracker.check(step, config.epochs, loss_sum.item() / since, cos_sum.item() / since)
    tracker.restore_best()
    for scale in scales:
        scale.requires_grad_(False)
    return RilResult(tracker.start["val_acc"], tracker.start["omega"], tracker.candidates, tracker.best,
                     step, stopped, config.omega_weighting, config.teacher,
                     teacher if teacher is not model else None)
