"""What every benchmark prints first (the evidence) and how it prints tables."""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def evidence() -> dict[str, str]:
    """Machine, CPU threads or GPU, library versions and date: printed above every table and stored
    in every result file."""
    import torch

    device = (f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
              else f"CPU, {torch.get_num_threads()} torch threads")
    packages = ("torch", "ray", "mlflow", "optuna", "spikingjelly")
    return {
        "machine": f"{_cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "device": device,
        "versions": f"python {platform.python_version()}, " + ", ".join(f"{p} {_version(p)}" for p in packages),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def print_header(title: str, facts: dict[str, str]) -> None:
    print(f"== {title}")
    for key, value in facts.items():
        print(f"   {key}: {value}")


def print_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (pastes into the README as it is)."""
    cells = [[str(c) for c in columns]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for index, row in enumerate(cells):
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


def write_result(result: dict, name: str, quick: bool, out: str | None = None) -> Path:
    """Write a benchmark's figures to ``out`` or ``bench/results/<name>[_quick].json``; returns the path."""
    path = Path(out) if out else Path(__file__).resolve().parent / "results" / f"{name}{'_quick' if quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {path}")
    return path
