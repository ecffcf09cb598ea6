"""Pareto computation on hand-built tables: non-dominated sets, hypervolume, knee, the three fronts of
the operating-point contract (latency, energy, omega per method), the split they are chosen on, tags,
legacy sweeps, labels, plots, CSV.

No MLflow here (``test_pareto_cli.py`` covers the store and the command line).
"""

from __future__ import annotations

import math
import warnings

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from snnconv import pareto, pareto_plots, pareto_tables
from snnconv.pareto import AnalysisError, ParetoWarning, analyse, analyse_legacy, front_tags
from snnconv.pareto_arrays import hypervolume, knee_index, pareto_mask

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
# trial tables of the operating-point contract


def trial_table() -> pd.DataFrame:
    """A sweep's runs with known fronts: accuracies in percent (val_acc_op, acc_op), t_op (IF steps for
    rnl, PASCAL T_eff for qcfs), energy_op_mj, omega, converged."""
    rows = [
        # run_name, status, method, lam, levels_profile, levels,
        # val_acc_op, acc_op, t_op, energy_op_mj, omega, converged
        ("a1", "FINISHED", "rnl", 0.1, None, None, 90.0, 89.0, 12.0, 0.50, 2.0, 1.0),
        ("a2", "FINISHED", "rnl", 0.3, None, None, 85.0, 86.0, 6.0, 0.30, 1.5, 1.0),
        ("a3", "FINISHED", "rnl", 1.0, None, None, 70.0, 72.0, 2.0, 0.20, 1.2, 1.0),
        ("a4", "FINISHED", "rnl", 0.05, None, None, 88.0, 91.0, 16.0, 0.55, 2.5, 0.0),  # unconverged; best on test
        ("a5", "FINISHED", "rnl", 0.5, None, None, 80.0, 79.0, 8.0, 0.35, 1.9, 1.0),    # a2 dominates it everywhere
        ("q1", "FINISHED", "qcfs", NAN, "al", "[8, 4, 4, 1]", 91.0, 88.0, 3.2, 0.60, 3.0, 1.0),
        ("q2", "FINISHED", "qcfs", NAN, "uniform", "[4, 4, 4, 4]", 84.0, 85.0, 2.5, 0.32, 2.8, 1.0),
        ("q3", "FINISHED", "qcfs", NAN, "custom", "[2, 2, 1, 1, 1, 1, 1, 4]", 60.0, 62.0, 1.5, 0.10, 2.6, 1.0),
        ("f1", "FAILED", "rnl", 2.0, None, None, 99.0, 99.0, 1.0, 0.01, 0.1, 1.0),      # failed: would dominate all
        ("n1", "FINISHED", "rnl", 0.7, None, None, NAN, 75.0, 4.0, 0.30, 1.0, 1.0),     # no validation accuracy
        ("i1", "FINISHED", "qcfs", NAN, "uniform", "[2, 2, 2, 2]", 50.0, 50.0, INF, 0.50, 3.5, 1.0),  # inf t_op
    ]
    columns = ["run_name", "status", "method", "lam", "levels_profile", "levels", "val_acc_op", "acc_op", "t_op",
               "energy_op_mj", "omega", "converged"]
    table = pd.DataFrame(rows, columns=columns)
    table.insert(0, "run_id", [f"id{index:02d}{'x' * 30}" for index in range(len(table))])
    table["lr"] = 0.001
    return table


# chosen on the validation split (val_acc_op)
LATENCY = {"q1", "q2", "a3", "q3"}            # q1 (91 %, T_eff 3.2) dominates a1, a2, a4 on latency
ENERGY = {"q1", "a1", "a2", "a3", "q3"}       # a2 (85 %, 0.30 mJ) dominates q2 (84 %, 0.32 mJ)
OMEGA_RNL, OMEGA_QCFS = {"a1", "a2", "a3"}, {"q1", "q2", "q3"}
OMEGA = OMEGA_RNL | OMEGA_QCFS
# chosen on the test split (acc_op): a4 (91 % on test) and a1 join the latency front, q1 leaves energy
LATENCY_TEST = {"a4", "a1", "q1", "q2", "a3", "q3"}
ENERGY_TEST = {"a4", "a1", "a2", "a3", "q3"}
OMEGA_RNL_TEST = {"a4", "a1", "a2", "n1"}       # n1 has a test accuracy; it dominates a3 (72 %, Ω 1.2)


def names(table: pd.DataFrame, mask) -> set[str]:
    return set(table.loc[np.asarray(mask, dtype=bool), "run_name"])


def quiet_analyse(table: pd.DataFrame, *args, **kwargs) -> pareto.ParetoAnalysis:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParetoWarning)
        return analyse(table, *args, **kwargs)


def test_accuracy_column_and_front_specs():
    assert pareto.accuracy_column("val") == "val_acc_op" and pareto.accuracy_column("test") == "acc_op"
    for bad in ("train", "", "VAL"):
        with pytest.raises(AnalysisError, match="select_on must be one of"):
            pareto.accuracy_column(bad)
    assert pareto.FRONT_NAMES == ("latency", "energy", "omega")
    assert {name: (spec.cost, spec.per_method) for name, spec in pareto.FRONTS.items()} == {
        "latency": ("t_op", False), "energy": ("energy_op_mj", False), "omega": ("omega", True)}
    assert pareto.FRONTS["omega"].tag == "pareto_omega"


def test_latency_front_is_over_all_methods_together():
    result = quiet_analyse(trial_table())
    assert names(result.runs, result.runs["front_latency"]) == LATENCY
    # scaled over the front: q3 (1, 0), a3 (0.68, 0.29), q2 (0.23, 0.59), q1 (0, 1): q2 bulges most
    assert names(result.runs, result.runs["knee_latency"]) == {"q2"}
    assert result.front_runs("latency")["run_name"].tolist() == ["q1", "q2", "a3", "q3"]
    # slices along t_op up to the reference 1.1 x 16 (a4): 1.5..2 at 60 %, 2..2.5 at 70, 2.5..3.2 at 84, 3.2..17.6 at 91
    front = result.fronts["latency"]
    assert front.reference == pytest.approx((0.0, 17.6))
    assert front.hypervolume == pytest.approx(60 * 0.5 + 70 * 0.5 + 84 * 0.7 + 91 * 14.4)
    assert front.hypervolume_norm == pytest.approx(front.hypervolume / (100 * 17.6))


def test_energy_front_differs_from_the_latency_front():
    result = quiet_analyse(trial_table())
    assert names(result.runs, result.runs["front_energy"]) == ENERGY
    assert names(result.runs, result.runs["knee_energy"]) == {"a2"}  # scaled sums 1, .88, .59, .83, 1
    assert result.fronts["energy"].reference == pytest.approx((0.0, 0.66))


def test_omega_front_is_per_method():
    table = trial_table()
    result = quiet_analyse(table)
    assert set(result.fronts) == {"latency", "energy", "omega:rnl", "omega:qcfs", "joint"}
    assert names(result.runs, result.fronts["omega:rnl"].members) == OMEGA_RNL
    assert names(result.runs, result.fronts["omega:qcfs"].members) == OMEGA_QCFS
    assert names(result.runs, result.runs["front_omega"]) == OMEGA
    assert names(result.runs, result.runs["knee_omega"]) == {"a2", "q2"}  # one knee per method
    # across methods, rnl's a2 (85 %, Ω 1.5) and a3 (70 %, Ω 1.2) would dominate q2 and q3
    finished = table["status"] == "FINISHED"
    across = pareto_mask(table[["val_acc_op", "omega"]].where(finished).to_numpy(), MAX_MIN)
    assert names(table, across) == {"a1", "a2", "a3", "q1"}
    assert {"q2", "q3"} <= OMEGA
    # each method's reference is 1.1 x its own largest Ω (a4's 2.5; i1's 3.5 for qcfs)
    assert result.reference == pytest.approx({"t_op": 17.6, "energy_op_mj": 0.66, "omega:rnl": 2.75,
                                              "omega:qcfs": 3.85})
    assert result.fronts["omega:rnl"].hypervolume == pytest.approx(70 * 0.3 + 85 * 0.5 + 90 * 0.75)
    assert result.front_runs("omega")["run_name"].tolist() == ["a1", "a2", "a3", "q1", "q2", "q3"]
    assert [f.method for f in result.spec_fronts("omega")] == ["rnl", "qcfs"]


def test_select_on_test_ranks_runs_differently():
    table = trial_table()
    on_val, on_test = quiet_analyse(table, select_on="val"), quiet_analyse(table, select_on="test")
    assert on_val.accuracy == "val_acc_op" and on_test.accuracy == "acc_op" and on_test.select_on == "test"
    assert names(on_test.runs, on_test.runs["front_latency"]) == LATENCY_TEST != LATENCY
    assert names(on_test.runs, on_test.runs["front_energy"]) == ENERGY_TEST != ENERGY
    assert names(on_test.runs, on_test.fronts["omega:rnl"].members) == OMEGA_RNL_TEST
    assert names(on_test.runs, on_test.fronts["omega:qcfs"].members) == OMEGA_QCFS


def test_joint_front_only_with_latency_and_energy():
    table = trial_table()
    result = quiet_analyse(table)
    assert result.fronts["joint"].objectives == ("val_acc_op", "t_op", "energy_op_mj")
    members = result.runs["front_joint"].to_numpy(bool)
    assert names(result.runs, members) == {"a1", "a2", "a3", "q1", "q2", "q3"}
    points = result.runs.loc[members, ["val_acc_op", "t_op", "energy_op_mj"]].to_numpy()
    assert result.fronts["joint"].hypervolume == pytest.approx(
        hypervolume(points, ["max", "min", "min"], [0.0, 17.6, 0.66]))
    for fronts in (("latency", "omega"), ("omega",), ("energy",)):
        result = quiet_analyse(table, fronts)
        assert "joint" not in result.fronts and "front_joint" not in result.runs
        assert [s.name for s in result.specs] == list(fronts)
        flags = {c for c in result.runs.columns if c.startswith("front_")}
        assert flags == {f"front_{name}" for name in fronts}


def test_analyse_counts_warns_and_names_the_runs_left_out():
    with pytest.warns(ParetoWarning) as caught:
        result = analyse(trial_table())
    messages = "\n".join(str(w.message) for w in caught)
    assert "val_acc_op" in messages and "n1 (id09" in messages and "i1 (id10" in messages
    assert result.skipped == {"val_acc_op": ["n1 (id09xxxx)"], "t_op": ["i1 (id10xxxx)"]}
    assert result.counts == {"runs": 11, "finished": 10, "failed": 1, "unfinished": 0}
    assert result.unconverged()["run_name"].tolist() == ["a4"]


def test_front_tags_follow_the_contract():
    table = trial_table()
    by_name = dict(zip(table["run_id"], table["run_name"]))
    for select_on, expected in (("val", {"latency": LATENCY, "energy": ENERGY, "omega": OMEGA}),
                                ("test", {"latency": LATENCY_TEST, "energy": ENERGY_TEST,
                                          "omega": OMEGA_RNL_TEST | OMEGA_QCFS})):
        tags = front_tags(table, select_on)
        assert set(tags) == set(table["run_id"])
        assert all(set(t) == {"pareto_latency", "pareto_energy", "pareto_omega"} for t in tags.values())
        for front, members in expected.items():
            assert {by_name[r] for r, t in tags.items() if t[f"pareto_{front}"] == "true"} == members
        for run in ("f1", "i1") + (("n1",) if select_on == "val" else ()):  # failed, inf t_op, NaN accuracy
            run_id = table.loc[table["run_name"] == run, "run_id"].item()
            assert tags[run_id] == {"pareto_latency": "false", "pareto_energy": "false", "pareto_omega": "false"}
    with pytest.raises(AnalysisError, match="select_on must be one of"):
        front_tags(table, "train")


def test_front_tags_tolerate_missing_columns_and_a_shuffled_index():
    table = trial_table().drop(columns="energy_op_mj")  # no run logged the energy
    tags = front_tags(table)
    assert {t["pareto_energy"] for t in tags.values()} == {"false"}
    assert sum(t["pareto_latency"] == "true" for t in tags.values()) == len(LATENCY)
    shuffled = trial_table().sample(frac=1.0, random_state=0).set_index("run_name", drop=False)
    assert front_tags(shuffled) == front_tags(trial_table())


@pytest.mark.filterwarnings("ignore::snnconv.pareto.ParetoWarning")
def test_analyse_errors_are_clear():
    table = trial_table()
    with pytest.raises(AnalysisError, match="fronts must be one or more of"):
        analyse(table, ["latency", "speed"])
    with pytest.raises(AnalysisError, match="repeat"):
        analyse(table, ["omega", "omega"])
    with pytest.raises(AnalysisError, match="select_on must be one of"):
        analyse(table, select_on="train")
    with pytest.raises(AnalysisError, match="nothing to analyse: 11 trial runs.*11 failed"):
        analyse(table.assign(status="FAILED"))
    with pytest.raises(AnalysisError, match="nothing to analyse: .*finite val_acc_op"):
        analyse(table.assign(val_acc_op=NAN))
    with pytest.raises(AnalysisError, match="lacks columns"):
        analyse(table.drop(columns="status"))


def test_analyse_with_a_single_run():
    result = analyse(trial_table().iloc[[5]])  # q1 alone
    assert set(result.fronts) == {"latency", "energy", "omega:qcfs", "joint"}
    assert result.fronts["omega:qcfs"].size == 1 and result.fronts["omega:qcfs"].knee == 0
    assert result.fronts["latency"].hypervolume == pytest.approx(91 * (3.2 * 1.1 - 3.2))


# ---------------------------------------------------------------------------------------------
# legacy sweeps (logged before operating points: snn_acc, omega, t_eff only)


def legacy_table() -> pd.DataFrame:
    """Runs of an old sweep with known fronts (snn_acc %, omega, t_eff)."""
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
    for column in ("val_acc_op", "acc_op", "t_op"):  # what the reader gives for metrics nobody logged
        table[column] = NAN
    return table


LEGACY_OMEGA = {"r1", "r2", "r3", "r5", "r7"}  # across methods, as the old fronts were
LEGACY_T_EFF = {"r1", "r4", "r6", "r7", "r9"}


def test_legacy_tables_are_recognised():
    assert pareto.is_legacy(legacy_table()) and not pareto.is_legacy(trial_table())
    assert not pareto.is_legacy(legacy_table().assign(snn_acc=NAN))  # nothing at all: not "legacy"


def test_legacy_analysis_keeps_the_old_fronts():
    with pytest.warns(ParetoWarning) as caught:
        result = analyse_legacy(legacy_table())
    assert "r10 (id09" in "\n".join(str(w.message) for w in caught)
    assert result.legacy and result.accuracy == "snn_acc" and result.select_on == "test"
    assert set(result.fronts) == {"t_eff", "omega", "joint"}
    assert names(result.runs, result.runs["front_omega"]) == LEGACY_OMEGA
    assert names(result.runs, result.runs["front_t_eff"]) == LEGACY_T_EFF
    assert names(result.runs, result.runs["front_joint"]) == {"r1", "r2", "r3", "r4", "r6", "r7"}
    assert names(result.runs, result.runs["knee_omega"]) == {"r2"}
    assert names(result.runs, result.runs["knee_t_eff"]) == {"r9"}
    assert result.reference == pytest.approx({"t_eff": 44.0, "omega": 3.3})
    assert result.fronts["omega"].hypervolume == pytest.approx(70 * 0.3 + 85 * 0.5 + 90 * 1.3)
    with pytest.raises(AnalysisError, match=r"before operating points has the fronts \['latency', 'omega'\]"):
        analyse_legacy(legacy_table(), ["energy"])


# ---------------------------------------------------------------------------------------------
# labels, tables, CSV, plots


def row_of(table: pd.DataFrame, name: str) -> pd.Series:
    return table.set_index("run_name", drop=False).loc[name]


def test_labels_say_which_latency():
    table = trial_table()
    assert pareto_tables.run_label(row_of(table, "a1")) == "λ=0.1 · 12 IF steps"
    assert pareto_tables.run_label(row_of(table, "f1")) == "λ=2 · 1 IF step"
    assert pareto_tables.run_label(row_of(table, "q1")) == "L=al · T_eff 3.2"
    assert pareto_tables.run_label(row_of(table, "q3")) == "L=[2,2,1,1,1,1,…] · T_eff 1.5"
    assert pareto_tables.run_label(row_of(table, "i1")) == "L=uniform"  # no finite t_op: no latency
    assert pareto_tables.run_label(row_of(table, "a1"), with_latency=False) == "λ=0.1"
    assert pareto_tables.converged_text(row_of(table, "a4")) == "no: raise T_max"
    assert pareto_tables.converged_text(row_of(table, "a1")) == "yes"
    assert pareto_tables.parse_levels("[8, 4]") == [8, 4] and pareto_tables.parse_levels("8,4") is None


def test_front_table_shows_both_accuracies_and_the_latency_kind():
    result = quiet_analyse(trial_table(), select_on="test")
    text = pareto_tables.format_table(pareto_tables.front_table(result.front_runs("latency")))
    lines = text.splitlines()
    assert lines[0].split() == ["run", "method", "setting", "lr", "levels", "val_acc_op", "val", "95%", "CI", "acc_op",
                                "test", "95%", "CI", "latency", "energy_op_mj", "omega", "converged"]
    a4 = next(line for line in lines if line.split()[0] == "a4")
    assert "16 IF steps" in a4 and "no: raise T_max" in a4 and " 88 " in a4 and " 91 " in a4
    assert "T_eff 3.2" in next(line for line in lines if line.split()[0] == "q1")
    # the intervals, where the runs logged them ("-" where not: these did not)
    table = trial_table()
    table["val_acc_op_low"], table["val_acc_op_high"] = table["val_acc_op"] - 4.0, table["val_acc_op"] + 3.0
    shown = pareto_tables.front_table(table)
    assert list(shown["val 95% CI"])[:2] == ["[86.0, 93.0]", "[81.0, 88.0]"] and set(shown["test 95% CI"]) == {"-"}
    legacy = pareto_tables.format_table(pareto_tables.front_table(legacy_table().iloc[[0, 5]], legacy=True))
    assert legacy.splitlines()[0].split() == ["run", "method", "λ", "lr", "sharescale", "levels", "snn_acc",
                                              "omega", "t_eff"]
    assert "[8, 4, 4, 1]" in legacy and " - " in legacy


def assert_png(path) -> np.ndarray:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    return image


def test_draw_front_marks_methods_unconverged_runs_and_latencies():
    result = quiet_analyse(trial_table(), select_on="test")  # a4 (unconverged) is on this front
    figure = pareto_plots.new_figure()
    axes = figure.add_subplot()
    pareto_plots.draw_front(axes, result.runs, "acc_op", "t_op")
    labels = axes.get_legend_handles_labels()[1]
    assert {"rnl", "qcfs", "knee", "dominated (faded)", "unconverged (raise T_max)"} <= set(labels)
    texts = {text.get_text() for text in axes.texts}
    assert {"λ=0.05 · 16 IF steps", "L=al · T_eff 3.2", "λ=1 · 2 IF steps"} <= texts
    assert len(texts) == len(LATENCY_TEST)
    on_val = quiet_analyse(trial_table())
    figure = pareto_plots.new_figure()
    axes = figure.add_subplot()
    pareto_plots.draw_front(axes, on_val.runs, "val_acc_op", "t_op")
    assert "unconverged (raise T_max)" in axes.get_legend_handles_labels()[1]  # a4 is drawn (dominated), hollow


def test_sweep_files(tmp_path):
    table = trial_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParetoWarning)
        files = pareto_plots.write_sweep_fronts(table, tmp_path / "sweep")
        test_files = pareto_plots.write_sweep_fronts(table, tmp_path / "test", select_on="test")
    assert [f.name for f in files] == ["pareto.csv", "front_latency.png", "front_energy.png", "front_omega.png"]
    widths = {f.name: assert_png(f).shape[1] for f in files[1:]}
    assert widths["front_omega.png"] > 1.5 * widths["front_latency.png"]  # one panel per method
    written = pd.read_csv(files[0])
    assert len(written) == len(table)
    for name in ("latency", "energy", "omega"):
        assert {f"front_{name}", f"knee_{name}"} <= set(written.columns)
    assert names(written, written["front_latency"]) == LATENCY
    assert names(written, written["front_energy"]) == ENERGY
    assert names(written, written["front_omega"]) == OMEGA
    assert names(written, written["knee_omega"]) == {"a2", "q2"}
    tested = pd.read_csv(test_files[0])
    assert names(tested, tested["front_latency"]) == LATENCY_TEST
    with pytest.raises(AnalysisError, match="select_on must be one of"):
        pareto_plots.write_sweep_fronts(table, tmp_path / "bad", select_on="train")


def test_sweep_files_when_no_run_has_an_accuracy(tmp_path):
    for index, table in enumerate((trial_table().assign(status="FAILED"), trial_table().assign(val_acc_op=NAN))):
        files = pareto_plots.write_sweep_fronts(table, tmp_path / str(index))
        assert [f.name for f in files] == ["pareto.csv"]
        written = pd.read_csv(files[0])
        flags = [c for c in written.columns if c.startswith(("front_", "knee_"))]
        assert set(flags) == {"front_latency", "knee_latency", "front_energy", "knee_energy", "front_omega",
                              "knee_omega", "front_joint"}
        assert not written[flags].to_numpy().any() and len(written) == 11


def test_legacy_plot(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParetoWarning)
        result = analyse_legacy(legacy_table())
    assert_png(pareto_plots.plot_front(result, "t_eff", tmp_path / "t_eff.png"))
    assert_png(pareto_plots.plot_front(result, "omega", tmp_path / "omega.png"))
    with pytest.raises(KeyError, match="was not analysed"):
        pareto_plots.plot_front(result, "latency", tmp_path / "latency.png")


def test_fronts_draw_each_accuracys_interval_as_an_error_bar():
    from matplotlib.container import ErrorbarContainer

    from snnconv.metrics import wilson_interval

    table = trial_table()
    bounds = [wilson_interval(value, 180) for value in table["val_acc_op"]]
    table["val_acc_op_low"], table["val_acc_op_high"] = zip(*bounds)
    figure = pareto_plots.new_figure()
    axes = figure.subplots()
    pareto_plots.draw_front(axes, table, "val_acc_op", "t_op")
    bars = [container for container in axes.containers if isinstance(container, ErrorbarContainer)]
    drawn = {}
    for container in bars:
        for segment in container.lines[2][0].get_segments():  # one vertical bar per point: [(x, low), (x, high)]
            (x, low), (_, high) = segment
            drawn[round(float(x), 6), round(float(low), 6)] = float(high)
    finished = table[(table["status"] == "FINISHED") & np.isfinite(table["val_acc_op"]) & np.isfinite(table["t_op"])]
    assert len(drawn) == len(finished)  # every finished run with both values has its bar, the failed one none
    for _, row in finished.iterrows():
        low, high = wilson_interval(row["val_acc_op"], 180)
        assert drawn[round(row["t_op"], 6), round(low, 6)] == pytest.approx(high)
    # a sweep logged before the intervals existed: no bars, the same front
    plain = pareto_plots.new_figure().subplots()
    pareto_plots.draw_front(plain, trial_table(), "val_acc_op", "t_op")
    assert not [c for c in plain.containers if isinstance(c, ErrorbarContainer)]


def test_the_latency_axis_names_each_registered_methods_unit():
    from snnconv.pareto_plots import axis_label

    assert axis_label("t_op") == "latency t_op (rnl, datanorm: IF time steps; qcfs: PASCAL T_eff)"
    assert axis_label("energy_op_mj").startswith("energy")
