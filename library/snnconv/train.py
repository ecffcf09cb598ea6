"""Stage 1: train the source ANN; ``evaluate`` gives test accuracy in percent.

Command line (trains through the stage-1 cache and prints accuracies)::

    python -m snnconv.train --model small --dataset digits
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from .config import Stage1Config
from .models import set_levels


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


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available (the device Ray assigned), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    override the config (used by fine-tuning). Raises :class:`NonFiniteLossError` naming the epoch
    and batch as soon as the loss is NaN or infinite.
    """
    epochs = config.epochs if epochs is None else epochs
    lr = config.lr if lr is None else lr
    model.to(device).train()
    optimizer = build_optimizer(model.parameters() if params is None else params, config.optimizer, lr,
                                config.momentum, config.weight_decay)
    scheduler = build_scheduler(optimizer, config, epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    use_amp = config.amp and device.type == "cuda"
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


def main(argv: list[str] | None = None) -> int:
    """Train (or load from the cache) one stage-1 model and print its accuracies."""
    from .config import ConfigError, TrialConfig, apply_overrides, trial_config_from_yaml
    from .pipeline import stage1

    parser = argparse.ArgumentParser(prog="python -m snnconv.train", description=main.__doc__)
    parser.add_argument("--config", help="trial config YAML (overridden by the flags below)")
    parser.add_argument("--model", help="small, vgg11..vgg19, resnet18, resnet34")
    parser.add_argument("--dataset", help="digits, synthetic, cifar10, cifar100, imagenet")
    parser.add_argument("--data-dir", help="folder holding CIFAR or ImageNet")
    parser.add_argument("--download", action="store_true", help="let torchvision download CIFAR")
    parser.add_argument("--method", help="activation of stage 1: rnl (Rate Norm) or qcfs")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--cache-dir", help="stage-1 cache folder")
    args = parser.parse_args(argv)
    try:
        config = trial_config_from_yaml(args.config) if args.config else TrialConfig()
        flags = {
            "model": args.model, "data.name": args.dataset, "data.data_dir": args.data_dir,
            "data.download": True if args.download else None, "method": args.method,
            "stage1.epochs": args.epochs, "stage1.lr": args.lr, "data.batch_size": args.batch_size,
            "seed": args.seed, "device": args.device, "cache_dir": args.cache_dir,
        }
        config = apply_overrides(config, {k: v for k, v in flags.items() if v is not None})
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = stage1(config, on_epoch=print_epoch())
    print(f"stage 1 {'loaded from cache' if result.cache_hit else 'trained'}: {result.path}")
    print(f"val accuracy {result.val_acc:.2f}%  test accuracy {result.test_acc:.2f}%")
    return 0


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


if __name__ == "__main__":
    raise SystemExit(main())
