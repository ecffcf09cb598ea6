"""``python -m snnconv.train``: train (or load from the stage-1 cache) one stage-1 model.

The command line lives here, apart from the training loops in ``__init__.py``, because it runs stage 1
through :func:`snnconv.pipeline.stage1`, and the pipeline itself imports the training loops.
"""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, TrialConfig, apply_overrides, trial_config_from_yaml
from ..pipeline import stage1
from . import print_epoch


def main(argv: list[str] | None = None) -> int:
    """Train (or load from the cache) one stage-1 model and print its accuracies."""
    parser = argparse.ArgumentParser(prog="python -m snnconv.train", description=main.__doc__)
    parser.add_argument("--config", help="trial config YAML (overridden by the flags below)")
    parser.add_argument("--model", help="small, lenet5, vgg11..vgg19, resnet18, resnet34")
    parser.add_argument("--dataset", help="digits, synthetic, mnist, fashion-mnist, cifar10, cifar100, imagenet")
    parser.add_argument("--data-dir", help="folder holding MNIST, Fashion-MNIST, CIFAR or ImageNet "
                                             "(python -m snnconv.data prepare fills it)")
    parser.add_argument("--method", help="whose stage-1 network: rnl (Rate Norm), qcfs (QCFS) or datanorm (ReLU)")
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
            "method": args.method,
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


if __name__ == "__main__":
    raise SystemExit(main())
