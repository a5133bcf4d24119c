"""The plan's estimate of the composition-only protocol and of the pruned models (benchmarks/estimate_protocol_time.py)."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _module(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def estimate():
    return _module("estimate_protocol_time")


def test_steps_per_epoch_matches_the_estimators_inner_split(estimate):
    """A training fold (4/5 of the rows) less skorch's ValidSplit(0.1) part, in minibatches of 128:
    the numbers of steps the estimator really takes (its iterator over the inner training part)."""
    from skorch.dataset import ValidSplit

    for n_rows in (4604, 10987, 132752):
        n_train = n_rows - math.ceil(n_rows / 5)
        train, valid = ValidSplit(0.1, random_state=0)(np.zeros((n_train, 1)))
        assert estimate.steps_per_epoch(n_rows) == math.ceil(len(train) / 128)
    assert estimate.steps_per_epoch(4604) == 26  # expt_gap, the reference task
    assert estimate.step_epochs(5000, 132752) == 7 and estimate.step_epochs(50000, 132752) == 67
    assert estimate.step_epochs(5000, 4604) == 193  # ~ the full protocol's 200 epochs there
    assert estimate.step_epochs(1, 132752) == 1


def _files():
    def fold(v):
        return {"validation_score": v, "score": 0.0, "fit_s": 1.0, "featurize_s": 0.0, "epochs_run": 10, "best_epoch": 5}

    return {"matbench_dielectric": {"metric": "mae", "models": {
        "A": {"folds": [fold(1.0), fold(1.0)]},
        "B": {"folds": [fold(1.2), fold(1.2)]},  # 20% worse than A: pruned at margin 0.1
        "C": {"folds": [fold(1.3), fold(1.3)]}, "C (set2set)": {"folds": [fold(1.05), fold(1.05)]},  # its best readout
        "D": {"folds": [fold(None), fold(1.0)]},  # no complete record: kept
        "AMM-style": {"folds": [{"score": 0.0, "fit_s": 1.0, "featurize_s": 0.0}]}}},
        "matbench_glass": {"metric": "rocauc", "models": {"A": {"folds": [fold(0.9)]}, "B": {"folds": [fold(0.5)]}}}}


def test_pruning_drops_models_ruled_out_on_inner_validation_only(estimate):
    rows = [("matbench_dielectric", m, 1.0) for m in ("A", "B", "B x5", "C", "D", "AMM-style")]
    rows += [("matbench_glass", "B", 1.0), ("matbench_mp_gap (composition only)", "B", 1.0)]
    kept, dropped = estimate.pruned(rows, _files(), 0.1)
    assert [(t, m) for t, m, *_ in dropped] == [("matbench_dielectric", "B"), ("matbench_dielectric", "B x5")]
    assert dropped[0][2:] == (1.2, 1.0, "A")
    assert ("matbench_dielectric", "C", 1.0) in kept and ("matbench_dielectric", "D", 1.0) in kept
    assert ("matbench_glass", "B", 1.0) in kept  # classification: not pruned by an MAE margin
    assert estimate.pruned(rows, _files(), None) == (rows, [])
    # the test scores never enter: the same decision whatever they are
    files = _files()
    for m in files["matbench_dielectric"]["models"].values():
        for f in m["folds"]:
            f["score"] = -1e9
    assert estimate.pruned(rows, files, 0.1) == (kept, dropped)


def test_plan_gives_the_composition_only_tasks_their_own_seeds(estimate):
    rows = [("matbench_steels", "AtomSets", 100.0), ("matbench_mp_gap (composition only)", "AtomSets", 50.0)]
    jobs = estimate.plan(rows, [0, 1, 2], slot_s=1000.0, composition_seeds=[0])
    seeds = {(task, comp): s for _, _, _, task, comp, _, s, _, _, _ in jobs}
    assert seeds == {("matbench_steels", False): [0, 1, 2], ("matbench_mp_gap", True): [0]}
    line = ["1", "1", "x", "matbench_mp_gap", "1", "AtomSets", "0", "0 1 2 3 4", "50"]
    per_pair = {("matbench_mp_gap", True, "AtomSets"): 50.0}
    assert estimate._job_estimate(per_pair, line, 3, composition_seeds=1) == 50.0
    assert estimate._job_estimate(per_pair, line, 3) == pytest.approx(50.0 / 3)


def test_loss_grids_keep_the_losses_recorded_selections_chose(estimate, tmp_path):
    """A task with enough single-net selections recorded keeps only the losses they chose at least once
    (ensembles reuse their single net's choice and are not counted twice); the plan's flags pass it on,
    and the composition-only tasks get their own protocol's flags."""
    import json

    def job(name, task, model, losses):
        folds = [{"fold": k, "selection": {"chosen": {"loss": loss, "readout": "mean"}}} for k, loss in enumerate(losses)]
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{task}.json").write_text(json.dumps({"task": task, "models": {model: {"folds": folds}}}))

    job("a", "matbench_dielectric", "AtomSets-V1", ["mae"] * 4)
    job("b", "matbench_dielectric", "AtomSets-V2", ["mae", "huber"])
    job("c", "matbench_dielectric", "AtomSets-V2 x5", ["mse"] * 5)  # an ensemble: not counted
    job("d", "matbench_steels", "AtomSets", ["mae"] * 2)  # too few selections: the full grid stays
    recorded = estimate.recorded_losses(estimate.job_results(tmp_path))
    assert recorded["matbench_dielectric"] == {"mae": 5, "huber": 1}
    grids = estimate.loss_grids(recorded, 5)
    assert grids == {"matbench_dielectric": ("mae", "huber")} and estimate.loss_grids(recorded, 0) == {}
    assert estimate.job_flags("matbench_dielectric", False, grids) == "--select loss=mae,huber readout=mean,set2set"
    assert estimate.job_flags("matbench_steels", False, grids) == ""
    p = estimate.COMPOSITION_PROTOCOL
    assert estimate.job_flags("matbench_mp_gap", True, grids) == (
        f"--select loss=mae readout=mean,set2set --patience-steps {p['patience_steps']} --max-steps {p['max_steps']}")
    rows = [("matbench_dielectric", "AtomSets-V1", 100.0), ("matbench_dielectric", "AMM-style", 10.0)]
    jobs = estimate.plan(rows, [0, 1, 2], slot_s=1000.0, grids=grids)
    assert {j[5]: j[9] for j in jobs} == {"AtomSets-V1": "--select loss=mae,huber readout=mean,set2set",
                                          "AMM-style": ""}  # the forests have no selection


def test_validation_spread_is_the_seed_std_of_two_models_relative_validation_difference(estimate, tmp_path):
    import json

    def fits(scores):  # {seed: [validation MAE per fold]}
        return {"folds": [{"seed": s, "fold": k, "validation_score": v} for s, vs in scores.items()
                          for k, v in enumerate(vs)]}

    models = {"AtomSets": fits({0: [1.0, 3.0], 1: [2.0, 2.0], 2: [3.0, 3.0]}),
              "AtomSets-V1": fits({0: [2.0, 2.0], 1: [1.0, 1.0], 2: [2.0, 2.0]}),
              "AtomSets x5": fits({0: [9.0, 9.0], 1: [9.0, 9.0]}),  # ensembles and forests are not models' pairs
              "AMM-style": fits({0: [9.0, 9.0], 1: [9.0, 9.0]})}
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "matbench_jdft2d.json").write_text(json.dumps({"task": "matbench_jdft2d", "metric": "mae",
                                                                     "models": models}))
    [(task, a, b, std)] = estimate.validation_spread(estimate.job_results(tmp_path))
    assert (task, a, b) == ("matbench_jdft2d", "AtomSets", "AtomSets-V1")
    assert std == pytest.approx(np.std([2 / 2 - 1, 2 / 1 - 1, 3 / 2 - 1]))  # per seed: mean a / mean b - 1


@pytest.mark.slow
def test_the_composition_only_tasks_rows_and_distinct_formulas_are_the_datas(estimate):
    """The forests' featurization is priced per distinct formula: the counts the estimate uses are the data's."""
    from sklearn_atomsets.matbench import load_matbench_composition_task
    from sklearn_atomsets.matbench.tasks import find_matbench_data

    if find_matbench_data("matbench_steels")[0] is None:
        pytest.skip("MatBench data not found (set MATMINER_DATA or put ../shared beside the checkout)")
    for task, (n_rows, distinct, _) in estimate.COMPOSITION_ONLY.items():
        inputs = load_matbench_composition_task(task).inputs
        assert (len(inputs), inputs.nunique()) == (n_rows, distinct), task
    for task, other in estimate.SAME_INPUTS.items():
        assert load_matbench_composition_task(task).inputs.tolist() == load_matbench_composition_task(other).inputs.tolist()
