"""The demo sweep's results do not move when the sweep gets faster. Same seeds, same metrics:
the demo preset (24 trials) is run as a user runs it and every trial's numbers are compared, exactly,
with ``tests/data/demo_sweep_metrics.json``, written by the code before the speed work.

Regenerate the file (only when a change is meant to alter results, and say so in its commit):

    python tests/test_determinism.py --write
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "demo_sweep_metrics.json"
#: what identifies a trial (its drawn parameters) and what it measured
KEY_PARAMS = ("method", "lam", "lr", "sharescale", "scale_init", "levels", "levels_profile", "finetune_lr",
              "percentile")
COMPARED = ("val_ann_acc", "ann_acc", "val_snn_acc", "snn_acc", "t_op", "val_acc_op", "acc_op", "omega",
            "energy_op_mj", "synops", "converged")


def run_demo(folder: Path) -> str:
    """The demo sweep, as `python sweeps/lambda_sweep.py` runs it, into ``folder``; its tracking URI."""
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, "SNNCONV_CACHE": str(folder / "cache"), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, str(ROOT / "sweeps" / "lambda_sweep.py"), "--tracking-uri", uri,
                           "--storage-path", str(folder / "ray")], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return uri


def trial_metrics(uri: str) -> dict[str, dict[str, float]]:
    """Every finished trial of the store's latest sweep: its parameters (as a JSON key) -> its metrics."""
    sys.path.insert(0, str(ROOT / "library"))
    from snnconv import tracking

    client = tracking.client_for(uri)
    sweep = tracking.load_sweep(uri)
    table = {}
    for run in tracking.search_children(client, sweep.experiment_id, sweep.sweep_id):
        if run.info.status != "FINISHED":
            continue
        params = {name: run.data.params[name] for name in KEY_PARAMS if name in run.data.params}
        table[json.dumps(params, sort_keys=True)] = {name: run.data.metrics[name] for name in COMPARED
                                                     if name in run.data.metrics}
    return table


@pytest.mark.ray
@pytest.mark.timeout(1500)
def test_the_demo_sweep_gives_the_recorded_metrics(tmp_path):
    expected = json.loads(GOLDEN.read_text())
    got = trial_metrics(run_demo(tmp_path / "demo"))
    assert len(got) == len(expected) == 24
    assert set(got) == set(expected)  # the same trials were drawn
    differ = {key: (got[key], expected[key]) for key in expected if got[key] != expected[key]}
    assert not differ  # exactly: the same seeds give the same numbers


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(__doc__)
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        metrics = trial_metrics(run_demo(Path(scratch) / "demo"))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(metrics)} trials)")
