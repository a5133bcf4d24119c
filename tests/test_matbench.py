"""MatBench plumbing: official folds, the runner, the baseline pipeline and the CLI."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from sklearn_atomsets import _matbench
from sklearn_atomsets._baseline import CorrelationFilter, MissingColumnFilter, automatminer_style_pipeline
from sklearn_atomsets._benchmark import MODELS, TrainingSettings, make_model, models_for, run_matbench_task
from sklearn_atomsets._matbench import MATBENCH_TASKS, load_matbench_composition_task, load_matbench_task

from .conftest import SHARED_MATBENCH, needs_matbench

pytestmark = needs_matbench


def test_official_folds_partition_the_data():
    task = load_matbench_task("matbench_steels", download=False)
    assert len(task.inputs) == 312 and len(task.folds) == 5
    tests = np.concatenate([test for _, test in task.folds])
    assert sorted(tests) == list(range(312))  # every row is tested exactly once
    for train, test in task.folds:
        assert not set(train) & set(test) and len(train) + len(test) == 312
    # positions follow MatBench ids: mb-steels-001 is row 0
    assert task.inputs.index[0] == "mb-steels-001"


def test_folds_match_the_validation_file_ids():
    task = load_matbench_task("matbench_expt_is_metal", download=False)
    official = _matbench._official_folds()["splits"]["matbench_expt_is_metal"]["fold_2"]["test"]
    assert list(task.inputs.index[task.folds[2][1]]) == official
    assert task.targets.dtype == bool


@pytest.mark.slow
def test_folds_are_those_of_the_matbench_task_objects(monkeypatch):
    monkeypatch.setenv("MATMINER_DATA", str(SHARED_MATBENCH))
    from matbench.task import MatbenchTask

    official = MatbenchTask("matbench_steels", autoload=False)
    official.load()
    task = load_matbench_task("matbench_steels", download=False)
    for fold in range(5):
        train, test = task.folds[fold]
        assert list(task.inputs.index[train]) == list(official.get_train_and_val_data(fold)[0].index)
        assert list(task.inputs.index[test]) == list(official.get_test_data(fold).index)
        np.testing.assert_array_equal(task.targets.iloc[test], official.get_test_data(fold, include_target=True)[1])


def test_approximate_structures_are_flagged():
    task = load_matbench_task("matbench_jdft2d", download=False)
    assert task.approximate and task.source.endswith("approx")


def test_missing_data_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("MATMINER_DATA", str(tmp_path))
    monkeypatch.setattr(_matbench, "_checkout_shared", lambda: tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="MATMINER_DATA"):
        load_matbench_task("matbench_glass", download=False)
    with pytest.raises(ValueError, match="Unknown MatBench task"):
        load_matbench_task("matbench_unicorns")


def test_composition_only_copy_keeps_official_order_and_folds(tmp_path):
    task = load_matbench_composition_task("matbench_log_kvrh")
    assert len(task.inputs) == 10987 and task.info.input == "composition" and task.info.kind == "regression"
    official = _matbench._official_folds()["splits"]["matbench_log_kvrh"]["fold_1"]["test"]
    assert list(task.inputs.index[task.folds[1][1]]) == official
    assert task.inputs.iloc[0] == "Ag2Ca1Ge2" and np.isfinite(task.targets).all()
    assert load_matbench_composition_task("matbench_mp_is_metal").targets.dtype == bool
    with pytest.raises(FileNotFoundError, match="composition_only/matbench_steels.crabnet.csv.gz"):
        load_matbench_composition_task("matbench_steels", data_home=tmp_path)
    (tmp_path / "composition_only").mkdir()
    with gzip.open(tmp_path / "composition_only" / "matbench_steels.crabnet.csv.gz", "wt") as fh:
        fh.write("name,value\nFe,1.0\n")
    with pytest.raises(ValueError, match="should have the columns formula,target"):
        load_matbench_composition_task("matbench_steels", data_home=tmp_path)


def test_models_apply_to_the_right_inputs():
    comp, struct = MATBENCH_TASKS["matbench_steels"], MATBENCH_TASKS["matbench_dielectric"]
    assert "AtomSets-V1" not in models_for(comp) and "AtomSets-V1" in models_for(struct)
    assert set(models_for(struct)) == set(MODELS)
    for name in models_for(struct):
        pipe = make_model(name, struct)
        assert hasattr(pipe, "fit") and hasattr(pipe[-1], "predict")
    with pytest.raises(ValueError, match="does not apply"):
        make_model("MLP-f", comp)


def test_runner_writes_scores_times_and_predictions(tmp_path):
    settings = TrainingSettings(max_epochs=20, patience=5, n_estimators=20)
    result = run_matbench_task("matbench_steels", models=["AtomSets-V0", "AMM-style"], folds=[0],
                               settings=settings, out_dir=tmp_path, log=lambda *a: None)
    saved = json.loads((tmp_path / "matbench_steels.json").read_text())
    assert saved["models"].keys() == {"AtomSets-V0", "AMM-style"}
    fold = saved["models"]["AtomSets-V0"]["folds"][0]
    assert fold["n_test"] == 63 and len(fold["y_pred"]) == 63 and fold["fit_s"] > 0
    dummy = np.mean(np.abs(np.array(fold["y_true"]) - np.mean(fold["y_true"])))
    assert 0 < fold["score"] < 2 * dummy
    assert result["anchors"]["RF-SCM/Magpie"] == 103.51
    assert saved["models"]["AtomSets-V0"]["settings"]["loss"] == "mse"
    # a second run of one model with another loss replaces that model and keeps the other
    l1 = TrainingSettings(max_epochs=20, patience=5, loss="mae")
    run_matbench_task("matbench_steels", models=["AtomSets-V0"], folds=[0], settings=l1, out_dir=tmp_path,
                      log=lambda *a: None)
    again = json.loads((tmp_path / "matbench_steels.json").read_text())
    assert again["models"]["AMM-style"] == saved["models"]["AMM-style"]
    assert again["models"]["AtomSets-V0"]["settings"]["loss"] == "mae"
    assert again["models"]["AtomSets-V0"]["folds"][0]["y_pred"] != fold["y_pred"]
    assert 0 < again["models"]["AtomSets-V0"]["folds"][0]["validation_score"] < 2 * dummy
    # the set2set readout is a variant of its own, next to the weighted mean
    s2s = TrainingSettings(max_epochs=5, patience=5, readout="set2set")
    run_matbench_task("matbench_steels", models=["AtomSets-V0"], folds=[0], settings=s2s, out_dir=tmp_path,
                      log=lambda *a: None)
    both = json.loads((tmp_path / "matbench_steels.json").read_text())
    assert both["models"].keys() == {"AtomSets-V0", "AtomSets-V0 (set2set)", "AMM-style"}
    assert both["models"]["AtomSets-V0 (set2set)"]["settings"]["readout"] == "set2set"


def test_baseline_filters():
    X = np.array([[1.0, 2.0, np.nan, 4.0], [2.0, 4.0, np.nan, 0.0], [3.0, 6.1, 1.0, 1.0]])
    assert MissingColumnFilter(0.5).fit(X).keep_.tolist() == [True, True, False, True]
    assert CorrelationFilter(0.95).fit(X[:, [0, 1, 3]]).keep_.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="task_kind"):
        automatminer_style_pipeline("ranking", "composition")


def test_cli_runs_the_default_job_on_one_fold(capsys):
    from sklearn_atomsets.__main__ import main

    assert main(["matbench", "--folds", "0", "--max-epochs", "30", "--patience", "10"]) == 0
    out = capsys.readouterr().out
    assert "matbench_steels" in out and "AtomSets-V0" in out and "AMMExpress v2020" in out
    assert main(["matbench", "--models", "GPT"]) == 2
