"""snnconv.paired: the exact McNemar test, per-image results, and which runs are tied with a front."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from snnconv import paired, pareto, pareto_plots
from snnconv.paired import ImageResults


@pytest.mark.parametrize("a_only,b_only", [(0, 0), (0, 1), (1, 0), (3, 3), (0, 6), (2, 12), (40, 61), (700, 640)])
def test_the_exact_mcnemar_p_is_the_two_sided_binomial_test_of_the_discordant_images(a_only, b_only):
    # held out: scipy's exact binomial test on the discordant pairs, p = 1/2
    expected = 1.0 if a_only + b_only == 0 else binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert paired.mcnemar_exact_p(a_only, b_only) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_known_mcnemar_values():
    assert paired.mcnemar_exact_p(0, 5) == pytest.approx(2 / 32)  # 0.0625: five images are not enough
    assert paired.mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)  # 0.03125: six are
    assert paired.mcnemar_exact_p(6, 0) == paired.mcnemar_exact_p(0, 6)
    with pytest.raises(ValueError):
        paired.mcnemar_exact_p(-1, 2)


def test_per_image_results_survive_their_artifact():
    rng = np.random.default_rng(0)
    correct = {"val": rng.random(181) < 0.9, "test": rng.random(360) < 0.8}
    results = ImageResults("abc123", correct)
    document = json.loads(json.dumps(results.to_json()))
    assert len(document["splits"]["val"]["correct"]) <= 4 * ((181 + 7) // 8 + 2) // 3 + 4  # packed bits, base64
    back = ImageResults.from_json(document)
    for split in ("val", "test"):
        assert back.correct[split].dtype == bool and np.array_equal(back.correct[split], correct[split])
    assert back.accuracy("val") == pytest.approx(100 * correct["val"].mean())
    assert results.comparable(back, "val")
    assert not results.comparable(ImageResults("other", correct), "val")  # other images: no comparison
    assert not results.comparable(ImageResults("abc123", {"val": correct["val"][:180]}), "val")


def _pair(differences: int, images: int = 180):
    """A front member right on every image, and a run wrong on ``differences`` of them."""
    member = np.ones(images, dtype=bool)
    other = member.copy()
    other[:differences] = False
    return ImageResults("d", {"val": member}), ImageResults("d", {"val": other})


def test_a_run_one_image_from_the_front_is_tied_and_one_many_images_away_is_not():
    member, near = _pair(1)
    _, far = _pair(20)
    costs = np.array([1.0, 2.0, 2.0])  # the member is cheaper than both
    members = np.array([True, False, False])
    tied = paired.tied_with_front(costs, members, [member, near, far], "val")
    assert list(tied) == [True, True, False]
    # a member that costs more than the run cannot beat it: the run is tied
    tied = paired.tied_with_front(np.array([3.0, 2.0, 2.0]), members, [member, near, far], "val")
    assert list(tied) == [True, True, True]
    # missing or incomparable results: cannot tell; an unfinished run (NaN cost): nothing
    tied = paired.tied_with_front(np.array([1.0, 2.0, np.nan]), members, [member, None, far], "val")
    assert list(tied) == [True, None, None]
    tied = paired.tied_with_front(np.array([1.0, 2.0]), np.array([True, False]),
                                  [member, ImageResults("other data", near.correct)], "val")
    assert list(tied) == [True, None]


def test_tie_tags_and_words_come_from_the_same_comparison():
    member, near = _pair(1)
    _, far = _pair(20)
    runs = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "run_name": ["a", "b", "c", "d"],
                         "status": ["FINISHED", "FINISHED", "FINISHED", "FAILED"],
                         "method": ["rnl"] * 4, "val_acc_op": [100.0, 99.4, 88.9, np.nan],
                         "acc_op": [99.0, 99.0, 88.0, np.nan], "t_op": [4.0, 5.0, 6.0, np.nan],
                         "energy_op_mj": [1.0, 2.0, 3.0, np.nan]})
    ties = paired.sweep_ties(runs, {"a": member, "b": near, "c": far})
    assert list(ties.members["latency"]) == [True, False, False, False]
    assert paired.tie_tags(runs, ties.columns) == {
        "a": {"pareto_latency_tied": "true", "pareto_energy_tied": "true"},
        "b": {"pareto_latency_tied": "true", "pareto_energy_tied": "true"},
        "c": {"pareto_latency_tied": "false", "pareto_energy_tied": "false"}}  # d failed: no tag
    words = paired.tie_summary(runs, ties.columns, ties.members)
    assert "1 run(s) on it, and 1 more" in words["latency"] and "2 setting(s)" in words["latency"]
    # the report's analysis gets the same columns, and its front text says it
    analysis = pareto.analyse(runs, ("latency", "energy"))
    assert paired.add_tie_columns(analysis, {"a": member, "b": near, "c": far}) == words
    assert list(analysis.runs["tied_latency"]) == [True, True, False, None]
    assert paired.front_tie_sentence(analysis, "latency") == words["latency"]
    # without per-image results the words say how many could not be compared
    analysis = pareto.analyse(runs, ("latency",))
    text = paired.add_tie_columns(analysis, {"a": member})["latency"]
    assert "1 run(s) on it; no other run has per-image results to compare" in text
    text = paired.add_tie_columns(pareto.analyse(runs, ("latency",)), {"a": member, "b": near})["latency"]
    assert "1 more that no front member" in text and "1 run(s) without comparable per-image results" in text


def test_the_fronts_draw_tied_runs_apart_from_dominated_ones():
    runs = pd.DataFrame({"run_id": list("abc"), "run_name": list("abc"), "status": ["FINISHED"] * 3,
                         "method": ["rnl"] * 3, "val_acc_op": [95.0, 94.0, 80.0], "t_op": [4.0, 5.0, 6.0]})

    def drawn(tied):
        axes = pareto_plots.new_figure().subplots()
        pareto_plots.draw_front(axes, runs, "val_acc_op", "t_op", tied=tied, annotate=False)
        return {(round(float(x), 3), round(float(y), 3)): collection.get_alpha()
                for collection in axes.collections for x, y in collection.get_offsets()}, axes

    points, axes = drawn(np.array([False, True, False]))
    assert points[(5.0, 94.0)] == pytest.approx(0.9) and points[(6.0, 80.0)] == pytest.approx(0.35)
    labels = axes.get_legend_handles_labels()[1]
    assert "tied with the front (McNemar, 5 %)" in labels and "dominated (faded)" in labels
    points, axes = drawn(None)
    assert points[(5.0, 94.0)] == pytest.approx(0.35)  # no ties known: dominated, faded
    assert "tied with the front (McNemar, 5 %)" not in axes.get_legend_handles_labels()[1]


def test_the_energy_front_draws_the_anns_own_energy_and_says_how_many_runs_spend_less():
    from snnconv.pareto_report import front_text

    runs = pd.DataFrame({"run_id": list("abc"), "run_name": list("abc"), "status": ["FINISHED"] * 3,
                         "method": ["rnl", "qcfs", "rnl"], "val_acc_op": [95.0, 96.0, 97.0], "t_op": [4.0, 3.0, 9.0],
                         "energy_op_mj": [0.5, 1.0, 3.0], "ann_energy_mj": [2.0, 2.0, 2.0]})
    analysis = pareto.analyse(runs, ("energy",))
    text = front_text(analysis, "energy")
    assert "The ANN spends 2 mJ per image" in text and "2 of the 3 front run(s) spend less" in text
    axes = pareto_plots.new_figure().subplots()
    pareto_plots.draw_ann_energy(axes, runs)
    (line,) = axes.lines
    assert list(line.get_xdata()) == [2.0, 2.0] and line.get_label().startswith("ANN: 2 mJ")
    # runs logged before the ANN's energy existed: no line, no words
    older = runs.drop(columns="ann_energy_mj")
    assert pareto_plots.ann_energies(older) == []
    assert "ANN" not in front_text(pareto.analyse(older, ("energy",)), "energy")


def test_per_image_results_are_read_back_and_an_unreadable_one_is_left_out(tmp_path):
    from mlflow import MlflowClient

    from snnconv import tracking

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("x", artifact_location=str(tmp_path / "artifacts"))
    _, near = _pair(1)
    runs = []
    for results in (near, None):  # the second run's artifact is missing
        run_id = client.create_run(experiment, tags={paired.IMAGE_RESULTS_TAG: paired.IMAGE_RESULTS_FILE}).info.run_id
        if results is not None:
            client.log_dict(run_id, results.to_json(), paired.IMAGE_RESULTS_FILE)
        runs.append({"run_id": run_id, f"tag_{paired.IMAGE_RESULTS_TAG}": paired.IMAGE_RESULTS_FILE})
    found = tracking.image_results(client, pd.DataFrame(runs))
    assert list(found) == [runs[0]["run_id"]]  # the run whose artifact is gone cannot be compared; no error
    assert np.array_equal(found[runs[0]["run_id"]].correct["val"], near.correct["val"])
