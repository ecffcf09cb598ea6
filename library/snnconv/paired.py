"""Which differences on a front are real: paired comparisons of trials on the same images.

Every trial of a sweep is scored on the same validation and test images, so two trials can be
compared image by image instead of by their accuracies alone. Each trial keeps, for each split,
which images it classifies correctly at its operating point (:class:`ImageResults`, logged as the
artifact ``image_results.json``). Two trials a and b are then compared by **McNemar's exact test**:
of the images exactly one of them gets right, ``a_only`` are right for a alone and ``b_only`` for b
alone; under "a and b are equally good" each such image is a fair coin, so the two-sided p value is

    p = min(1, 2 * sum_{i=0}^{min(a_only, b_only)} C(n, i) / 2^n),   n = a_only + b_only

(p = 1 when n = 0). a **beats** b when ``a_only > b_only`` and p < 0.05.

A run is **tied with a front** when no member of that front with an equal or lower cost beats it
(front members are tied by definition). The sweep tags each child run ``pareto_latency_tied`` and
``pareto_energy_tied`` ("true" / "false"), and the report draws tied runs apart from dominated ones:
a tied run is a setting the data cannot tell apart from the front.

A comparison needs both runs' results on the same images (the same data digest and image count);
a run logged before these results existed, or whose comparison cannot be made, gets no tie tag.
Nothing here knows MLflow; ``snnconv.tracking`` reads the artifacts.

>>> round(mcnemar_exact_p(0, 1), 3), round(mcnemar_exact_p(0, 6), 5)
(1.0, 0.03125)
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: the artifact each trial logs (at the run's artifact root)
IMAGE_RESULTS_FILE = "image_results.json"
#: the run tag that says the run has logged :data:`IMAGE_RESULTS_FILE`
IMAGE_RESULTS_TAG = "snnconv.image_results"
#: significance level of "beats" (two-sided)
ALPHA = 0.05
#: the fronts that get a tie tag: cross-method fronts, cost column by front name
TIED_FRONTS: Mapping[str, str] = {"latency": "t_op", "energy": "energy_op_mj"}
IMAGE_RESULTS_FORMAT = 1


def tie_tag(front: str) -> str:
    """The run tag of front ``front``: ``pareto_<front>_tied``."""
    return f"pareto_{front}_tied"


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p value from the discordant counts (images only a / only b gets right)."""
    if a_only < 0 or b_only < 0:
        raise ValueError(f"counts must be non-negative, got {a_only}, {b_only}")
    n = a_only + b_only
    if n == 0:
        return 1.0
    # log-space sum of the binomial(n, 1/2) tail: exact for any n a validation split has
    tail = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(min(a_only, b_only) + 1)]
    peak = max(tail)
    log_p = math.log(2.0) + peak + math.log(sum(math.exp(v - peak) for v in tail)) - n * math.log(2.0)
    return min(1.0, math.exp(log_p))


def discordant(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(images only ``a`` gets right, images only ``b`` gets right) of two (n,) bool arrays."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"per-image results differ in shape: {a.shape} and {b.shape}")
    return int((a & ~b).sum()), int((b & ~a).sum())


def beats(a: np.ndarray, b: np.ndarray, alpha: float = ALPHA) -> bool:
    """Whether ``a`` is better than ``b`` on the same images by the exact McNemar test at ``alpha``."""
    a_only, b_only = discordant(a, b)
    return a_only > b_only and mcnemar_exact_p(a_only, b_only) < alpha


def encode_correct(correct: np.ndarray) -> str:
    """A (n,) bool array as base64 of its packed bits (n / 6 characters)."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def decode_correct(text: str, images: int) -> np.ndarray:
    """The (``images``,) bool array :func:`encode_correct` gave ``text`` for."""
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), count=images)
    return bits.astype(bool)


@dataclass(frozen=True)
class ImageResults:
    """Which images of each split (``"val"``, ``"test"``) a trial gets right at its operating point.

    ``correct[split]``: (images,) bool, in the split's own order; ``data_digest``: the data set's digest
    (``snnconv.data.describe_data``), so that only trials that saw the same images are compared.
    """

    data_digest: str
    correct: Mapping[str, np.ndarray]

    def accuracy(self, split: str) -> float:
        """Percent of ``split``'s images right (equals the trial's ``<split>_acc_op``)."""
        return 100.0 * float(np.mean(self.correct[split]))

    def to_json(self) -> dict[str, Any]:
        """The artifact's content."""
        return {"format": IMAGE_RESULTS_FORMAT, "data_digest": self.data_digest,
                "splits": {split: {"images": int(len(values)), "correct": encode_correct(values)}
                           for split, values in self.correct.items()}}

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ImageResults:
        if document.get("format") != IMAGE_RESULTS_FORMAT:
            raise ValueError(f"unknown image results format {document.get('format')!r}")
        return cls(document["data_digest"], {split: decode_correct(part["correct"], int(part["images"]))
                                             for split, part in document["splits"].items()})

    def comparable(self, other: ImageResults, split: str) -> bool:
        """Whether the two were scored on the same images of ``split``."""
        return (self.data_digest == other.data_digest and split in self.correct and split in other.correct
                and len(self.correct[split]) == len(other.correct[split]))


def tied_with_front(costs: np.ndarray, members: np.ndarray, results: Sequence[ImageResults | None],
                    split: str, alpha: float = ALPHA) -> np.ndarray:
    """(n,) object array: True / False / None (cannot tell) per run, for one front.

    ``costs`` (n,): the front's cost (NaN for runs on no front: not finished, or a value missing);
    ``members`` (n,) bool: the front; ``results[i]``: run i's per-image results (None: not logged).
    A member is True; a run with a finite cost is True when no member with cost <= its own beats it on
    ``split`` (:func:`beats`), False when one does; None when a needed comparison cannot be made (its
    own or such a member's results missing or on other images) and no other member beats it.
    """
    costs = np.asarray(costs, dtype=float)
    tied = np.full(len(costs), None, dtype=object)
    front = np.flatnonzero(members)
    for i in range(len(costs)):
        if members[i]:
            tied[i] = True
            continue
        if not np.isfinite(costs[i]):
            continue
        cheaper = [int(m) for m in front if costs[m] <= costs[i]]
        unknown = False
        own = results[i]
        for m in cheaper:
            member = results[m]
            if own is None or member is None or not member.comparable(own, split):
                unknown = True
            elif beats(member.correct[split], own.correct[split], alpha):
                tied[i] = False
                break
        else:
            tied[i] = None if unknown else True
    return tied


def tie_columns(runs: pd.DataFrame, members: Mapping[str, np.ndarray],
                results: Mapping[str, ImageResults], split: str) -> dict[str, np.ndarray]:
    """``{"tied_<front>": (n,) object array}`` for each front of :data:`TIED_FRONTS` in ``members``
    (front name -> (n,) bool over ``runs``' rows, which need ``run_id``, ``status`` and the costs);
    ``results`` by run id (runs without any are "cannot tell")."""
    from .pareto import objective_values

    per_run = [results.get(run_id) for run_id in runs["run_id"]]
    columns = {}
    for front, cost in TIED_FRONTS.items():
        if front in members:
            costs = objective_values(runs, [cost])[:, 0]
            columns[f"tied_{front}"] = tied_with_front(costs, members[front], per_run, split)
    return columns


@dataclass(frozen=True)
class Ties:
    """The tie columns of a trial table (:func:`tie_columns`) and the fronts' members they were found against."""

    columns: dict[str, np.ndarray]
    members: dict[str, np.ndarray]


def sweep_ties(runs: pd.DataFrame, results: Mapping[str, ImageResults], select_on: str = "val") -> Ties:
    """The ties of every run of the trial table ``runs`` (rows in order) with the fronts of
    :data:`TIED_FRONTS`, chosen and compared on the ``select_on`` split."""
    from .pareto import FRONTS, accuracy_column, spec_members

    table = runs.reset_index(drop=True)
    members = {name: spec_members(table, FRONTS[name], accuracy_column(select_on)) for name in TIED_FRONTS}
    return Ties(tie_columns(table, members, results, select_on), members)


def add_tie_columns(analysis: Any, results: Mapping[str, ImageResults]) -> dict[str, str]:
    """Add ``tied_<front>`` columns to ``analysis.runs`` (a ``pareto.ParetoAnalysis``) for its analysed fronts of
    :data:`TIED_FRONTS`, compared on the split it was chosen on; returns :func:`tie_summary`'s sentences.
    A legacy analysis (no operating points) gets none."""
    if analysis.legacy:
        return {}
    members = {spec.name: analysis.runs[f"front_{spec.name}"].to_numpy(dtype=bool)
               for spec in analysis.specs if spec.name in TIED_FRONTS}
    columns = tie_columns(analysis.runs, members, results, analysis.select_on)
    for name, values in columns.items():
        analysis.runs[name] = values
    return tie_summary(analysis.runs, columns, members)


def front_tie_sentence(analysis: Any, front: str) -> str:
    """:func:`tie_summary`'s sentence for ``front`` of ``analysis`` ("" when it has no ``tied_<front>`` column)."""
    column = f"tied_{front}"
    if column not in analysis.runs:
        return ""
    members = {front: analysis.runs[f"front_{front}"].to_numpy(dtype=bool)}
    return tie_summary(analysis.runs, {column: analysis.runs[column].to_numpy()}, members)[front]


def tie_tags(runs: pd.DataFrame, columns: Mapping[str, np.ndarray]) -> dict[str, dict[str, str]]:
    """The sweep's tags from :func:`tie_columns`: ``{run_id: {"pareto_<front>_tied": "true" | "false"}}``;
    a run that cannot be told gets no tie tag."""
    tags: dict[str, dict[str, str]] = {}
    for name, values in columns.items():
        front = name.removeprefix("tied_")
        for run_id, value in zip(runs["run_id"], values):
            if value is not None:
                tags.setdefault(run_id, {})[tie_tag(front)] = "true" if value else "false"
    return tags


def tie_summary(runs: pd.DataFrame, columns: Mapping[str, np.ndarray],
                members: Mapping[str, np.ndarray]) -> dict[str, str]:
    """One sentence per front of ``columns`` (:func:`tie_columns`): how many settings the data cannot tell
    apart from it, and how many runs could not be compared."""
    from .pareto import objective_values

    sentences = {}
    for name, values in columns.items():
        front = name.removeprefix("tied_")
        on_front = np.asarray(members[front], dtype=bool)
        placed = np.isfinite(objective_values(runs, [TIED_FRONTS[front]])[:, 0])
        tied_off = int(sum(value is True for value in values[~on_front]))
        unknown = int(sum(value is None for value in values[placed]))
        if unknown and unknown == int((placed & ~on_front).sum()):  # nothing could be compared
            sentences[front] = (f"{front} front: {int(on_front.sum())} run(s) on it; no other run has per-image "
                                f"results to compare (logged before they existed, or configurations of --repeats, "
                                f"whose spread across seeds is drawn instead)")
            continue
        text = (f"{front} front: {int(on_front.sum())} run(s) on it, and {tied_off} more that no front member of "
                f"equal or lower cost beats (exact McNemar test at 5 %): {int(on_front.sum()) + tied_off} "
                f"setting(s) the data cannot tell apart")
        if unknown:
            text += f"; {unknown} run(s) without comparable per-image results were not compared"
        sentences[front] = text
    return sentences
