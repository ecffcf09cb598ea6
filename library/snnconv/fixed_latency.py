"""Accuracy at fixed latencies, in the papers' format, with the papers' own figures beside it.

Conversion papers print a table: for a model and data set, the ANN's accuracy and the SNN's at
T = 1, 2, 4, 8, 16, 32, 64 time steps. A sweep has many runs, each with an acc(t) curve, so the
report builds that table by choosing, for each method and each T, the run with the best
**validation** accuracy at T and printing its **test** accuracy at T with its 95 % Wilson interval
(the choice is made on validation; the test figure is the one to report):

* ``rnl`` at T IF steps: the rate-coded curves ``val_snn_acc_t`` (chooses) / ``snn_acc_t`` (reported);
* ``qcfs`` at T IF steps: its QCFS -> IF rate-coded comparison curves ``val_if_snn_acc_t`` /
  ``if_snn_acc_t``: the format of the QCFS paper's tables (its operating point is PASCAL's, below);
* ``qcfs`` at each PASCAL T_eff present: the run with the best ``val_acc_op`` among those with that
  T_eff (rounded to 0.01), its ``acc_op``;
* ``ANN``: per method, the run with the best ``val_ann_acc``, its ``ann_acc``.

A T beyond a run's T_max is not measured for it; a row no run measured shows no run.

**Published figures.** A preset may carry the papers' figures for its model and data set
(``published:`` in the sweep file, validated by :func:`parse_published`); the sweep logs them on its
parent run (``published.json``) and the table prints each beside the row of the same method and T,
with ours minus theirs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .config import ConfigError
from .method_registry import get_method, registered
from .pareto_tables import as_number

#: the time steps of the papers' tables (IF steps)
FIXED_STEPS = (1, 2, 4, 8, 16, 32, 64)


def step_curves() -> dict[str, tuple[str, str]]:
    """method -> (validation curve, test curve): the stepped metrics read at each fixed T, from each registered
    method's ``step_curves`` (rnl and datanorm their IF network's, qcfs its rate-coded IF comparison)."""
    return {method.name: method.step_curves for method in registered() if method.step_curves is not None}
#: the parent run's artifact with the sweep's published figures
PUBLISHED_FILE = "published.json"
#: the columns of the table, in order
COLUMNS = ("method", "latency", "run", "val acc", "test acc", "test 95% CI", "published", "ours − published")


@dataclass(frozen=True)
class Published:
    """One source's figures for a sweep's model and data set.

    ``label``: how the table names the source; ``method``: the sweep's method whose rows they are printed
    beside; ``source``: the citation (paper, table, and where the numbers were read); ``accuracy``: IF time
    steps T -> accuracy (percent); ``ann``: the paper's ANN accuracy (percent), if it gives one."""

    label: str
    method: str
    source: str
    accuracy: Mapping[int, float] = field(default_factory=dict)
    ann: float | None = None


def parse_published(entries: Any, methods: Sequence[str]) -> list[Published]:
    """The ``published:`` list of a sweep file, checked: each entry a mapping with ``label``, ``method`` (one of
    ``methods``), ``source`` (non-empty text), ``accuracy`` (T >= 1 -> percent in [0, 100]) and/or ``ann``
    (percent). Raises :class:`ConfigError` with the entry's position."""
    if entries in (None, []):
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"published: expected a list of sources, got {entries!r}")
    parsed = []
    for index, entry in enumerate(entries):
        where = f"published[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a mapping with label, method, source, accuracy, got {entry!r}")
        unknown = sorted(set(entry) - {"label", "method", "source", "accuracy", "ann"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: label, method, source, accuracy, ann")
        for key in ("label", "source"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ConfigError(f"{where}.{key}: must be non-empty text, got {entry.get(key)!r}")
        if entry.get("method") not in methods:
            raise ConfigError(f"{where}.method: must be one of the sweep's methods ({', '.join(methods)}), "
                              f"got {entry.get('method')!r}")
        accuracy = entry.get("accuracy") or {}
        if not isinstance(accuracy, Mapping) or not (accuracy or entry.get("ann") is not None):
            raise ConfigError(f"{where}: needs accuracy (a mapping of time steps to percent) or ann")
        steps = {}
        for step, value in accuracy.items():
            if isinstance(step, bool) or not isinstance(step, int) or step < 1:
                raise ConfigError(f"{where}.accuracy: time steps must be integers >= 1, got {step!r}")
            steps[step] = _percent(f"{where}.accuracy[{step}]", value)
        ann = entry.get("ann")
        parsed.append(Published(entry["label"].strip(), entry["method"], entry["source"].strip(), steps,
                                None if ann is None else _percent(f"{where}.ann", ann)))
    return parsed


def _percent(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ConfigError(f"{where}: must be an accuracy in percent (0-100), got {value!r}")
    return float(value)


def _finished(runs: pd.DataFrame, method: str) -> pd.DataFrame:
    ok = (runs["status"] == "FINISHED") if "status" in runs else pd.Series(True, index=runs.index)
    return runs[ok & (runs.get("method") == method)]


def _interval(accuracy: float, images: Any) -> str:
    from .metrics import wilson_interval  # torch: imported only when a table is built

    count = as_number(images)
    if not math.isfinite(accuracy) or not count or not math.isfinite(count):
        return "-"
    low, high = wilson_interval(accuracy, int(count))
    return f"{low:.1f}–{high:.1f}"


def _chosen(candidates: list[tuple[float, float, Mapping[str, Any]]]) -> tuple[float, float, Mapping[str, Any]] | None:
    """The (val, test, row) with the best validation accuracy; ties to the first (the earlier run)."""
    best = None
    for item in candidates:
        if math.isfinite(item[0]) and (best is None or item[0] > best[0]):
            best = item
    return best


def _row(method: str, latency: str, chosen: tuple[float, float, Mapping[str, Any]] | None, images_key: str,
         published: list[tuple[str, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method, "latency": latency, "run": "-", "val acc": math.nan,
                           "test acc": math.nan, "test 95% CI": "-"}
    if chosen is not None:
        val, test, run = chosen
        row.update({"run": run.get("run_name", run.get("run_id", "-")), "val acc": val, "test acc": test,
                    "test 95% CI": _interval(test, run.get(images_key))})
    row["published"] = "; ".join(f"{value:.2f} [{label}]" for label, value in published) or "-"
    row["ours − published"] = "; ".join(
        f"{row['test acc'] - value:+.2f} [{label}]" for label, value in published if math.isfinite(row["test acc"])
    ) or "-"
    return row


def fixed_latency_table(runs: pd.DataFrame, curves: Mapping[str, Mapping[str, pd.Series]],
                        published: Sequence[Published] = (), steps: Sequence[int] = FIXED_STEPS) -> pd.DataFrame:
    """The papers' table of a trial table ``runs`` (one row per run: ``run_id``, ``run_name``, ``status``,
    ``method``, the metrics), with ``curves[metric][run_id]`` = Series(accuracy, index = step t) of the
    stepped metrics of :func:`step_curves`; columns :data:`COLUMNS`, one row per method and latency."""
    rows = []
    curve_names = step_curves()
    for method in [m for m in curve_names if m in set(runs.get("method", pd.Series(dtype=object)))]:
        finished = _finished(runs, method)
        sources = [item for item in published if item.method == method]
        ann = [(as_number(r.get("val_ann_acc")), as_number(r.get("ann_acc")), r) for _, r in finished.iterrows()]
        rows.append(_row(method, "ANN", _chosen(ann), "test_images",
                         [(item.label, item.ann) for item in sources if item.ann is not None]))
        val_key, test_key = curve_names[method]
        for step in steps:
            candidates = []
            for _, run in finished.iterrows():
                val, test = curves.get(val_key, {}).get(run["run_id"]), curves.get(test_key, {}).get(run["run_id"])
                if val is not None and test is not None and step in val.index and step in test.index:
                    candidates.append((float(val[step]), float(test[step]), run))
            rows.append(_row(method, f"T = {step} IF steps", _chosen(candidates), "test_images",
                             [(item.label, item.accuracy[step]) for item in sources if step in item.accuracy]))
        if get_method(method).snn == "pascal":
            rows += _pascal_rows(method, finished)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _pascal_rows(method: str, finished: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per PASCAL T_eff present (rounded to 0.01): the best validation run at it."""
    groups: dict[float, list[tuple[float, float, Mapping[str, Any]]]] = {}
    for _, run in finished.iterrows():
        t_eff = as_number(run.get("t_op"))
        if math.isfinite(t_eff):
            groups.setdefault(round(t_eff, 2), []).append((as_number(run.get("val_acc_op")),
                                                           as_number(run.get("acc_op")), run))
    return [_row(method, f"PASCAL T_eff {t_eff:.2f}", _chosen(groups[t_eff]), "test_images", [])
            for t_eff in sorted(groups)]


def references_text(published: Sequence[Published]) -> str:
    """The sources of the published figures, one per line: ``[label] source``."""
    return "\n".join(f"[{item.label}] {item.source}" for item in published)
