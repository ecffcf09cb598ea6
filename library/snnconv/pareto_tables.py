"""Labels, tables and the CSV of a sweep's Pareto fronts: what the terminal, the report and the plots
say about a run.

A row is one trial run of a trial table (a mapping of its params and metrics, as
``snnconv.tracking.load_sweep`` reads them); the fronts themselves come from ``snnconv.pareto``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .method_registry import find_method

if TYPE_CHECKING:  # pragma: no cover
    from .pareto import ParetoAnalysis

#: columns of the terminal / report front table: (column, heading); "latency" and "converged" are
#: derived per row (``latency_text``, ``converged_text``)
TABLE_COLUMNS = (("run_name", "run"), ("method", "method"), ("setting", "setting"), ("lr", "lr"),
                 ("levels", "levels"), ("val_acc_op", "val_acc_op"), ("val_ci", "val 95% CI"), ("acc_op", "acc_op"),
                 ("test_ci", "test 95% CI"), ("latency", "latency"), ("energy_op_mj", "energy_op_mj"),
                 ("omega", "omega"), ("converged", "converged"))
#: the front table of a legacy sweep (no operating point)
LEGACY_TABLE_COLUMNS = (("run_name", "run"), ("method", "method"), ("lam", "λ"), ("lr", "lr"),
                        ("sharescale", "sharescale"), ("levels", "levels"), ("snn_acc", "snn_acc"),
                        ("omega", "omega"), ("t_eff", "t_eff"))


def as_number(value: Any) -> float:
    """``value`` as a float; NaN when it is missing or not a number."""
    return float(pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0])


def latency_text(row: Mapping[str, Any]) -> str:
    """The operating point's latency with its kind: "12 IF steps" (an IF method: rnl, datanorm), "T_eff 3.2"
    (qcfs, PASCAL); "" if none."""
    t_op = as_number(row.get("t_op"))
    if not np.isfinite(t_op):
        return ""
    method = find_method(row.get("method"))
    if method is not None and method.snn == "if":
        steps = int(round(t_op))
        return f"{steps} IF step{'' if steps == 1 else 's'}"
    if method is not None and method.snn == "pascal":
        return f"T_eff {t_op:.3g}"
    return f"t_op {t_op:.3g}"


def interval_text(row: Mapping[str, Any], name: str) -> str:
    """``[low, high]`` of metric ``name``'s 95 % Wilson interval (``<name>_low``, ``<name>_high``; percent), or for
    a configuration run with repeats ``± std (min–max)`` across its seeds; "-" when the run has neither."""
    spread = as_number(row.get(f"{name}_std"))
    if np.isfinite(spread):
        low, high = as_number(row.get(f"{name}_min")), as_number(row.get(f"{name}_max"))
        return f"± {spread:.2f} ({low:.1f}–{high:.1f})"
    low, high = as_number(row.get(f"{name}_low")), as_number(row.get(f"{name}_high"))
    return f"[{low:.1f}, {high:.1f}]" if np.isfinite(low) and np.isfinite(high) else "-"


def converged_text(row: Mapping[str, Any]) -> str:
    """ "yes", "no: raise T_max" (``converged`` = 0), or "-" when not logged."""
    converged = as_number(row.get("converged"))
    if not np.isfinite(converged):
        return "-"
    return "yes" if converged else "no: raise T_max"


def setting_label(row: Mapping[str, Any]) -> str:
    """A run's setting, as its method labels it (``λ=0.1`` rnl, ``L=al`` qcfs, ``p=99.9`` datanorm); else its name."""
    method = find_method(row.get("method"))
    label = method.setting_label(row) if method is not None and method.setting_label is not None else ""
    return label or str(row.get("run_name") or str(row.get("run_id", ""))[:8])


def run_label(row: Mapping[str, Any], with_latency: bool = True) -> str:
    """A plot label: the setting and, when logged, the operating point's latency:
    ``λ=0.1 · 12 IF steps`` (rnl), ``L=al · T_eff 3.2`` (qcfs), ``p=99.9 · 20 IF steps`` (datanorm)."""
    latency = latency_text(row) if with_latency else ""
    return f"{setting_label(row)} · {latency}" if latency else setting_label(row)


def parse_levels(text: Any) -> list[int] | None:
    """The per-layer L list of a ``levels`` param (JSON text such as "[8, 4, 4, 1]"); None if absent or bad."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        levels = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(levels, list) and levels and all(isinstance(v, int) and v > 0 for v in levels):
        return levels
    return None


def front_table(runs: pd.DataFrame, legacy: bool = False) -> pd.DataFrame:
    """The display table of ``runs`` (``TABLE_COLUMNS``, or ``LEGACY_TABLE_COLUMNS``; missing values empty)."""
    derived = {"latency": lambda row: latency_text(row) or "-", "converged": converged_text, "setting": setting_label,
               "val_ci": lambda row: interval_text(row, "val_acc_op"),
               "test_ci": lambda row: interval_text(row, "acc_op")}
    table: dict[str, Any] = {}  # heading -> a column: a list of texts, a Series or NaN throughout
    for column, heading in (LEGACY_TABLE_COLUMNS if legacy else TABLE_COLUMNS):
        if not legacy and column in derived:
            table[heading] = [derived[column](row) for _, row in runs.iterrows()]
        else:
            table[heading] = runs[column] if column in runs else math.nan
    return pd.DataFrame(table, index=runs.index).reset_index(drop=True)


def format_table(table: pd.DataFrame) -> str:
    """``table`` as aligned text: numbers to 4 significant digits, NaN as '-'."""
    if table.empty:
        return "(no runs)"
    shown = table.apply(lambda column: column.map(format_cell))
    return shown.to_string(index=False)


def format_cell(value: Any) -> str:
    """One table cell as text: '-' for missing, floats to 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_front_csv(analysis: ParetoAnalysis, path: Path | str) -> Path:
    """``pareto.csv``: every run with its params, metrics, status and ``front_*`` / ``knee_*`` flags."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    analysis.runs.to_csv(path, index=False)
    return path
