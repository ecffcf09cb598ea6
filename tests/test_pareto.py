"""Pareto computation on hand-built tables: non-dominated sets, hypervolume, knee, tags, plots, CSV.

No MLflow here (``test_pareto_cli.py`` covers the store and the command line).
"""

from __future__ import annotations

import math
import warnings

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from snnconv import pareto
from snnconv.pareto import AnalysisError, ParetoWarning, analyse, front_tags, hypervolume, knee_index, pareto_mask

MAX_MIN = ["max", "min"]
NAN, INF = math.nan, math.inf


def brute_force_mask(values: np.ndarray, senses) -> np.ndarray:
    """The definition, one pair at a time (rows with NaN/inf are off the front and never dominate)."""
    signs = np.array([-1.0 if s == "max" else 1.0 for s in senses])
    points = np.asarray(values, dtype=float) * signs
    finite = np.isfinite(points).all(axis=1)
    mask = finite.copy()
    for i in np.flatnonzero(finite):
        for j in np.flatnonzero(finite):
            if (points[j] <= points[i]).all() and (points[j] < points[i]).any():
                mask[i] = False
                break
    return mask


# ---------------------------------------------------------------------------------------------
# pareto_mask


def test_mask_known_front_with_ties_and_duplicates():
    values = np.array([
        [90, 2.0],   # front (tie with row 4: identical point)
        [85, 1.5],   # front (duplicate of row 2)
        [85, 1.5],   # front
        [80, 1.5],   # dominated by row 1: same cost, lower accuracy
        [90, 2.0],   # front
        [90, 2.5],   # dominated by row 0: same accuracy, higher cost
        [70, 1.2],   # front: cheapest
        [60, 2.5],   # dominated
    ])
    expected = [True, True, True, False, True, False, True, False]
    assert pareto_mask(values, MAX_MIN).tolist() == expected


def test_mask_single_run_and_empty():
    assert pareto_mask(np.array([[50.0, 3.0]]), MAX_MIN).tolist() == [True]
    assert pareto_mask(np.empty((0, 2)), MAX_MIN).tolist() == []


def test_mask_all_identical_points_are_all_on_the_front():
    assert pareto_mask(np.full((5, 3), 7.0), ["max", "min", "min"]).all()


def test_non_finite_rows_are_off_the_front_and_dominate_nothing():
    values = np.array([[100.0, NAN], [100.0, 0.5], [80.0, 1.0], [NAN, 0.1], [95.0, -INF], [99.0, INF]])
    # the NaN/inf rows would dominate row 2 if they took part; row 1 ([100, 0.5]) does dominate it
    assert pareto_mask(values, MAX_MIN).tolist() == [False, True, False, False, False, False]
    assert pareto_mask(np.array([[100.0, NAN], [80.0, 1.0]]), MAX_MIN).tolist() == [False, True]


def test_mask_senses_flip_the_answer():
    values = np.array([[1.0, 1.0], [2.0, 2.0]])
    assert pareto_mask(values, ["min", "min"]).tolist() == [True, False]
    assert pareto_mask(values, ["max", "max"]).tolist() == [False, True]
    assert pareto_mask(values, ["max", "min"]).tolist() == [True, True]


def test_mask_matches_brute_force_on_tied_random_data():
    rng = np.random.default_rng(1)
    for n, d in ((60, 2), (60, 3), (80, 4), (400, 2), (400, 3)):
        values = rng.integers(0, 8, size=(n, d)).astype(float)  # few distinct values: many ties
        values[rng.random(n) < 0.05, 0] = NAN
        senses = ["max"] + ["min"] * (d - 1)
        assert (pareto_mask(values, senses) == brute_force_mask(values, senses)).all()


def test_mask_matches_optunas_implementation():
    optuna_front = pytest.importorskip("optuna.study._multi_objective")._is_pareto_front
    rng = np.random.default_rng(3)
    for d in (2, 3):
        values = rng.integers(0, 6, size=(300, d)).astype(float)
        expected = optuna_front(values, assume_unique_lexsorted=False)  # minimises every column
        assert (pareto_mask(values, ["min"] * d) == expected).all()


@pytest.mark.parametrize("values, senses, message", [
    (np.zeros(3), MAX_MIN, "2-D"),
    (np.zeros((3, 2)), ["max"], "1 senses for 2"),
    (np.zeros((3, 2)), ["max", "lowest"], "'max' or 'min'"),
])
def test_mask_rejects_bad_input(values, senses, message):
    with pytest.raises(ValueError, match=message):
        pareto_mask(values, senses)


# ---------------------------------------------------------------------------------------------
# hypervolume


def test_hypervolume_2d_hand_value():
    front = np.array([[90, 2.0], [85, 1.5], [70, 1.2]])
    # slices along the cost axis: 1.2..1.5 at 70 %, 1.5..2.0 at 85 %, 2.0..3.3 at 90 %
    expected = 70 * 0.3 + 85 * 0.5 + 90 * 1.3
    assert hypervolume(front, MAX_MIN, [0.0, 3.3]) == pytest.approx(expected)


def test_hypervolume_ignores_duplicates_dominated_and_outside_points():
    front = np.array([[90, 2.0], [85, 1.5], [70, 1.2]])
    noisy = np.vstack([front, front[:1], [[60, 2.5], [95, 4.0], [NAN, 1.0], [-5.0, 0.1]]])
    assert hypervolume(noisy, MAX_MIN, [0.0, 3.3]) == pytest.approx(hypervolume(front, MAX_MIN, [0.0, 3.3]))
    assert hypervolume(np.empty((0, 2)), MAX_MIN, [0.0, 1.0]) == 0.0


def test_hypervolume_3d_hand_value_by_inclusion_exclusion():
    points = np.array([[1.0, 1.0, 2.0], [2.0, 2.0, 1.0]])  # all minimised, reference (3, 3, 3)
    a, b, both = 2 * 2 * 1, 1 * 1 * 2, 1 * 1 * 1
    assert hypervolume(points, ["min"] * 3, [3, 3, 3]) == pytest.approx(a + b - both)


def test_hypervolume_matches_optunas_implementation():
    optuna_hv = pytest.importorskip("optuna._hypervolume").compute_hypervolume
    rng = np.random.default_rng(2)
    for d in (2, 3, 4):
        points = rng.random((30, d))
        reference = np.full(d, 1.2)
        assert hypervolume(points, ["min"] * d, reference) == pytest.approx(optuna_hv(points, reference))


def test_hypervolume_rejects_a_non_finite_reference():
    with pytest.raises(ValueError, match="reference point must be finite"):
        hypervolume(np.ones((2, 2)), MAX_MIN, [0.0, INF])


# ---------------------------------------------------------------------------------------------
# knee


def test_knee_is_the_bulge_toward_the_ideal_point():
    values = np.array([[90, 2.0], [90, 2.0], [85, 1.5], [85, 1.5], [70, 1.2], [60, 2.5]])
    # scaled over the front: (0, 1), (0.25, 0.375), (1, 0); only (0.25, 0.375) is inside the chord
    assert knee_index(values, MAX_MIN) == 2  # the first of the duplicates


def test_knee_ignores_dominated_runs_even_near_the_ideal():
    values = np.array([[60, 9.0], [90, 10.0], [88, 9.0], [80, 8.0], [75, 3.0], [70, 2.0]])
    # front rows 1..5; scaled sums 1, 0.975, 1.25, 0.875, 1 -> row 4
    assert knee_index(values, MAX_MIN) == 4


def test_knee_of_one_or_two_runs_and_of_a_straight_front():
    assert knee_index(np.array([[50.0, 3.0]]), MAX_MIN) == 0
    assert knee_index(np.array([[70.0, 1.0], [90.0, 2.0]]), MAX_MIN) == 1  # tie on distance: higher accuracy
    straight = np.array([[90.0, 3.0], [80.0, 2.0], [70.0, 1.0]])
    assert knee_index(straight, MAX_MIN) == 1  # nothing inside the chord: closest to the ideal point
    assert knee_index(np.array([[NAN, 1.0]]), MAX_MIN) is None


# ---------------------------------------------------------------------------------------------
# trial tables: tags, analysis


def trial_table() -> pd.DataFrame:
    """Runs of a sweep with known fronts (accuracy %, omega, t_eff)."""
    rows = [
        # run_name, status, method, lam, levels_profile, levels, snn_acc, omega, t_eff
        ("r1", "FINISHED", "rnl", 0.1, None, None, 90.0, 2.0, 10.0),
        ("r2", "FINISHED", "rnl", 0.01, None, None, 85.0, 1.5, 12.0),
        ("r3", "FINISHED", "rnl", 0.01, None, None, 85.0, 1.5, 12.0),     # duplicate of r2
        ("r4", "FINISHED", "rnl", 0.3, None, None, 80.0, 1.5, 8.0),       # dominated on omega only
        ("r5", "FINISHED", "rnl", 0.2, None, None, 90.0, 2.0, 11.0),      # tie with r1 on omega, dominated on t_eff
        ("r6", "FINISHED", "qcfs", NAN, "vgg-paper", "[8, 4, 4, 1]", 88.0, 3.0, 9.0),
        ("r7", "FINISHED", "qcfs", NAN, "custom", "[2, 2, 1, 1, 1, 1, 1, 4]", 70.0, 1.2, 2.0),
        ("r8", "FINISHED", "rnl", 1.0, None, None, 60.0, 2.5, 30.0),
        ("r9", "FINISHED", "rnl", 0.5, None, None, 75.0, NAN, 3.0),       # NaN omega
        ("r10", "FINISHED", "rnl", 0.7, None, None, NAN, 1.0, 1.0),       # no snn_acc
        ("r11", "FAILED", "rnl", 2.0, None, None, 99.0, 0.5, 1.0),        # failed: would dominate all
        ("r12", "FINISHED", "qcfs", NAN, "uniform", "[4, 4, 4, 4]", 50.0, INF, 40.0),
    ]
    columns = ["run_name", "status", "method", "lam", "levels_profile", "levels", "snn_acc", "omega", "t_eff"]
    table = pd.DataFrame(rows, columns=columns)
    table.insert(0, "run_id", [f"id{index:02d}{'x' * 30}" for index in range(len(table))])
    table["ann_acc"] = 92.0
    return table


OMEGA_FRONT = {"r1", "r2", "r3", "r5", "r7"}
T_EFF_FRONT = {"r1", "r4", "r6", "r7", "r9"}
JOINT_FRONT = {"r1", "r2", "r3", "r4", "r6", "r7"}


def names(table: pd.DataFrame, mask) -> set[str]:
    return set(table.loc[np.asarray(mask, dtype=bool), "run_name"])


def test_front_tags_follow_the_contract():
    table = trial_table()
    tags = front_tags(table)
    assert set(tags) == set(table["run_id"])
    by_name = dict(zip(table["run_id"], table["run_name"]))
    for cost, front in (("omega", OMEGA_FRONT), ("t_eff", T_EFF_FRONT)):
        on = {by_name[run_id] for run_id, run_tags in tags.items() if run_tags[f"pareto_{cost}"] == "true"}
        assert on == front
        assert {t[f"pareto_{cost}"] for t in tags.values()} == {"true", "false"}


def test_front_tags_rejects_unknown_costs_and_tolerates_missing_columns():
    with pytest.raises(AnalysisError, match="objectives must be one or more of"):
        front_tags(trial_table(), ["latency"])
    tags = front_tags(trial_table().drop(columns="t_eff"))  # no run logged t_eff
    assert {t["pareto_t_eff"] for t in tags.values()} == {"false"}
    assert sum(t["pareto_omega"] == "true" for t in tags.values()) == len(OMEGA_FRONT)


def test_analyse_finds_every_front_and_warns_with_names():
    table = trial_table()
    with pytest.warns(ParetoWarning) as caught:
        result = analyse(table)
    messages = "\n".join(str(w.message) for w in caught)
    assert "r10 (id09" in messages and "snn_acc" in messages
    assert "r9 (id08" in messages and "r12 (id11" in messages  # NaN and inf omega
    assert result.skipped == {"snn_acc": ["r10 (id09xxxx)"], "omega": ["r9 (id08xxxx)", "r12 (id11xxxx)"]}
    assert result.counts == {"runs": 12, "finished": 11, "failed": 1, "unfinished": 0}
    assert names(result.runs, result.runs["front_omega"]) == OMEGA_FRONT
    assert names(result.runs, result.runs["front_t_eff"]) == T_EFF_FRONT
    assert names(result.runs, result.runs["front_joint"]) == JOINT_FRONT
    assert names(result.runs, result.runs["knee_omega"]) == {"r2"}
    assert names(result.runs, result.runs["knee_t_eff"]) == {"r9"}
    assert result.front_runs("omega")["run_name"].tolist() == ["r1", "r5", "r2", "r3", "r7"]


def test_analyse_reference_point_and_hypervolume():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParetoWarning)
        result = analyse(trial_table())
    # 1.1 x the largest finite cost among finished runs (the failed r11 and the inf of r12 do not count)
    assert result.reference == pytest.approx({"snn_acc": 0.0, "omega": 3.3, "t_eff": 44.0})
    omega = result.fronts["omega"]
    assert omega.hypervolume == pytest.approx(70 * 0.3 + 85 * 0.5 + 90 * 1.3)
    assert omega.hypervolume_norm == pytest.approx(omega.hypervolume / (100 * 3.3))
    front = result.runs.loc[result.runs["front_joint"], ["snn_acc", "omega", "t_eff"]].to_numpy()
    assert result.fronts["joint"].hypervolume == pytest.approx(
        hypervolume(front, ["max", "min", "min"], [0.0, 3.3, 44.0]))


def test_analyse_with_a_single_run():
    table = trial_table().iloc[[0]]
    result = analyse(table, ["omega"])
    assert set(result.fronts) == {"omega"}  # no joint front with one cost
    assert result.fronts["omega"].size == 1 and result.fronts["omega"].knee == 0
    assert result.fronts["omega"].hypervolume == pytest.approx(90 * (2.2 - 2.0))


def test_analyse_with_energy_as_a_third_cost():
    table = trial_table()
    table["energy_mj"] = table["t_eff"] * 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParetoWarning)
        result = analyse(table, ["omega", "t_eff", "energy_mj"])
    assert names(result.runs, result.runs["front_energy_mj"]) == T_EFF_FRONT  # energy is proportional to t_eff
    assert result.fronts["joint"].objectives == ("snn_acc", "omega", "t_eff", "energy_mj")


def test_analyse_errors_are_clear():
    table = trial_table()
    with pytest.raises(AnalysisError, match="objectives must be one or more of"):
        analyse(table, ["omega", "speed"])
    with pytest.raises(AnalysisError, match="repeat"):
        analyse(table, ["omega", "omega"])
    failed = table.assign(status="FAILED")
    with pytest.raises(AnalysisError, match="nothing to analyse: 12 trial runs.*12 failed"):
        analyse(failed)
    with pytest.raises(AnalysisError, match="lacks columns"):
        analyse(table.drop(columns="status"))


# ---------------------------------------------------------------------------------------------
# labels, CSV, plots


def test_run_labels():
    table = trial_table().set_index("run_name")
    assert pareto.run_label(table.loc["r1"]) == "λ=0.1"
    assert pareto.run_label(table.loc["r6"]) == "L=vgg-paper"
    assert pareto.run_label(table.loc["r7"]) == "L=[2,2,1,1,1,1,…]"
    assert pareto.parse_levels("[8, 4]") == [8, 4] and pareto.parse_levels("8,4") is None


def assert_png(path) -> None:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0


def test_plot_front_and_sweep_files(tmp_path):
    table = trial_table()
    path = pareto.plot_front(table, "omega", "snn_acc", tmp_path / "omega.png")
    assert_png(path)
    with pytest.raises(AnalysisError, match="lacks columns"):
        pareto.plot_front(table, "energy_mj", "snn_acc", tmp_path / "energy.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParetoWarning)
        files = pareto.write_sweep_fronts(table, tmp_path / "sweep")
    assert [f.name for f in files] == ["pareto.csv", "front_omega.png", "front_t_eff.png"]
    for png in files[1:]:
        assert_png(png)
    written = pd.read_csv(files[0])
    assert len(written) == len(table)
    assert names(written, written["front_t_eff"]) == T_EFF_FRONT


def test_sweep_files_when_every_trial_failed(tmp_path):
    files = pareto.write_sweep_fronts(trial_table().assign(status="FAILED"), tmp_path)
    assert [f.name for f in files] == ["pareto.csv"]
    written = pd.read_csv(files[0])
    assert not written["front_omega"].any() and len(written) == 12


def test_format_table_shows_missing_values_as_dashes():
    text = pareto.format_table(pareto.front_table(trial_table().iloc[[0, 5]]))
    assert text.splitlines()[0].split() == ["run", "method", "λ", "lr", "sharescale", "levels", "snn_acc",
                                            "omega", "t_eff"]
    assert "vgg" not in text and "[8, 4, 4, 1]" in text and " - " in text
