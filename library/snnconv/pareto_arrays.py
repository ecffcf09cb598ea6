"""Pareto fronts of plain arrays: which rows are non-dominated, the hypervolume they dominate, the knee.

Each function takes ``values`` (n rows x d objectives) and ``senses`` ("max" or "min" per column);
none knows what the rows are. ``snnconv.pareto`` applies them to a sweep's trial table, and its
module docstring defines dominance, the hypervolume's reference point and the knee.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_minimisation(values: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    """``values`` (n, d) as float with every "max" column negated, after checking shape and senses."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"values must be a 2-D array (runs x objectives), got shape {array.shape}")
    if len(senses) != array.shape[1]:
        raise ValueError(f"{len(senses)} senses for {array.shape[1]} objective columns")
    bad = [s for s in senses if s not in ("max", "min")]
    if bad:
        raise ValueError(f"senses must be 'max' or 'min', got {bad}")
    signs = np.array([-1.0 if s == "max" else 1.0 for s in senses])
    return array * signs


def pareto_mask(values: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    """Which rows of ``values`` (n runs x d objectives) are non-dominated; bool array of shape (n,).

    ``senses[k]`` is "max" or "min" for column k. A row with any NaN or inf is never on the front
    and does not dominate others. Identical rows do not dominate each other (all are on the front).
    Works on the distinct rows in lexicographic order, where only an earlier row can dominate a
    later one: a running minimum in 2-D (O(n log n)); above, one pass over the remaining rows per
    front row (O(n x front size x d)).
    """
    points = _as_minimisation(values, senses)
    finite = np.isfinite(points).all(axis=1)
    mask = np.zeros(len(points), dtype=bool)
    if finite.any():
        distinct, inverse = np.unique(points[finite], axis=0, return_inverse=True)
        mask[finite] = _distinct_sorted_front(distinct)[inverse.reshape(-1)]
    return mask


def _distinct_sorted_front(points: np.ndarray) -> np.ndarray:
    """Front of distinct, lexicographically sorted minimisation rows (row j dominates i iff j <= i everywhere)."""
    if points.shape[1] == 2:
        # rows before i have a smaller x, or the same x and a smaller y: i is dominated iff one has y <= y_i
        best_y_before = np.minimum.accumulate(np.concatenate([[np.inf], points[:-1, 1]]))
        return points[:, 1] < best_y_before
    # the first remaining row has no dominator left (one that was dropped would make it dropped too):
    # it is on the front; drop every row it dominates. One vectorised pass per front row.
    on_front = np.zeros(len(points), dtype=bool)
    remaining = np.arange(len(points))
    while len(remaining):
        head, rest = remaining[0], remaining[1:]
        on_front[head] = True
        remaining = rest[~(points[rest] >= points[head]).all(axis=1)]
    return on_front


def hypervolume(values: np.ndarray, senses: Sequence[str], reference: Sequence[float]) -> float:
    """The volume the rows of ``values`` dominate, bounded by ``reference`` (one value per column).

    Rows that are not finite or not strictly better than the reference in every column add nothing.
    Exact: a sorted staircase sum in 2-D, slicing along the last objective above that.
    """
    points = _as_minimisation(values, senses)
    ref = _as_minimisation(np.asarray(reference, dtype=float)[None, :], senses)[0]
    if not np.isfinite(ref).all():
        raise ValueError(f"reference point must be finite, got {list(reference)}")
    inside = np.isfinite(points).all(axis=1) & (points < ref).all(axis=1)
    return _hypervolume_min(points[inside], ref)


def _hypervolume_min(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of minimisation ``points`` (all strictly below ``ref``)."""
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    if points.shape[1] == 2:
        order = np.lexsort((points[:, 1], points[:, 0]))               # by x, then y
        x, y = points[order, 0], points[order, 1]
        best_y = np.minimum.accumulate(y)                              # the staircase height at each x
        widths = np.diff(np.append(x, ref[0]))
        return float(np.sum(widths * (ref[1] - best_y)))
    points = points[pareto_mask(points, ["min"] * points.shape[1])]
    points = points[np.argsort(points[:, -1], kind="stable")]
    tops = np.append(points[1:, -1], ref[-1])
    return float(sum((top - point[-1]) * _hypervolume_min(points[:i + 1, :-1], ref[:-1])
                     for i, (point, top) in enumerate(zip(points, tops)) if top > point[-1]))


def knee_index(values: np.ndarray, senses: Sequence[str]) -> int | None:
    """Row index of the knee of the 2-D front of ``values`` (n, 2); None when no row is finite.

    See ``snnconv.pareto``'s module docstring for the definition.
    """
    points = _as_minimisation(values, senses)
    if points.shape[1] != 2:
        raise ValueError(f"the knee is defined for two objectives, got {points.shape[1]}")
    rows = np.flatnonzero(pareto_mask(values, senses))
    if len(rows) == 0:
        return None
    front = points[rows]
    low, high = front.min(axis=0), front.max(axis=0)
    scaled = (front - low) / np.where(high > low, high - low, 1.0)       # 0 = best, 1 = worst on the front
    chord_side = 1.0 - scaled.sum(axis=1)                                # > 0: ideal side of the end-point line
    if chord_side.max() > 1e-12:
        score = -chord_side
    else:
        score = np.hypot(scaled[:, 0], scaled[:, 1])
    best = np.lexsort((rows, scaled[:, 0], np.round(score, 12)))[0]
    return int(rows[best])
