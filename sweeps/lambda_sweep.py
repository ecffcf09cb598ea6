"""Run a conversion sweep: ``python sweeps/lambda_sweep.py --help``.

Thin over :func:`snnconv.sweep_command.main`; presets are the YAML files in ``configs/`` next to this folder.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "library"))

from snnconv.sweep_command import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(presets_dir=ROOT / "configs"))
