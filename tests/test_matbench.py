"""MatBench plumbing: official folds, the runner, the baseline pipeline and the CLI."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace

import numpy as np
import pytest

from sklearn_atomsets._baseline import CorrelationFilter, MissingColumnFilter, automatminer_style_pipeline
from sklearn_atomsets.matbench import (MATBENCH_TASKS, MODELS, TrainingSettings, load_matbench_composition_task,
                                       load_matbench_task, make_model, models_for, protocol, run_matbench_task, running,
                                       selection, tasks)

from .conftest import SHARED_MATBENCH, assert_float32_close, needs_matbench

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
    official = tasks._official_folds()["splits"]["matbench_expt_is_metal"]["fold_2"]["test"]
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


def test_the_data_beside_a_checkout_is_found_without_matminer_data(monkeypatch):
    """Without $MATMINER_DATA a source checkout finds ../shared/data/matbench beside it (CI's layout)."""
    from .conftest import REPO

    assert tasks._checkout_shared() == REPO.parent / "shared" / "data" / "matbench"
    monkeypatch.delenv("MATMINER_DATA", raising=False)
    if tasks._checkout_shared().is_dir():
        assert len(load_matbench_task("matbench_steels", download=False).targets) == 312


def test_missing_data_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("MATMINER_DATA", str(tmp_path))
    monkeypatch.setattr(tasks, "_checkout_shared", lambda: tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="MATMINER_DATA"):
        load_matbench_task("matbench_glass", download=False)
    with pytest.raises(ValueError, match="Unknown MatBench task"):
        load_matbench_task("matbench_unicorns")


def test_composition_only_copy_keeps_official_order_and_folds(tmp_path):
    task = load_matbench_composition_task("matbench_log_kvrh")
    assert len(task.inputs) == 10987 and task.info.input == "composition" and task.info.kind == "regression"
    official = tasks._official_folds()["splits"]["matbench_log_kvrh"]["fold_1"]["test"]
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


def _poison_test_fold(task, fold, new_targets):
    """A copy of ``task`` whose fold's test targets are replaced (its training rows are untouched)."""
    import dataclasses

    targets = task.targets.copy()
    targets.iloc[task.folds[fold][1]] = new_targets
    return dataclasses.replace(task, targets=targets)


def test_selection_never_reads_the_test_fold(monkeypatch, tmp_path):
    """The chosen protocol and every candidate's validation score stay the same when the test
    targets are replaced by the predictions of a candidate that was *not* chosen (a selector
    that looked at test scores would pick that one: its test MAE becomes 0)."""

    settings = TrainingSettings(max_epochs=6, patience=6)
    grid = protocol.parse_selection(["loss=mse,mae", "readout=mean,set2set"])
    run = dict(models=["AtomSets-V0"], folds=[0], settings=settings, selection=grid, log=lambda *a: None)
    clean = run_matbench_task("matbench_steels", **run)["models"]["AtomSets-V0"]["folds"][0]
    records = clean["selection"]["candidates"]
    assert len(records) == 4 and all(np.isfinite(r["validation_score"]) for r in records)
    assert {tuple(sorted(r["config"].items())) for r in records} == {
        (("loss", l), ("readout", r)) for l in ("mse", "mae") for r in ("mean", "set2set")}
    best = min(records, key=lambda r: r["validation_score"])
    assert clean["selection"]["chosen"] == best["config"] and clean["validation_score"] == best["validation_score"]
    # the test fold's targets become the predictions of a candidate that was not chosen
    task = load_matbench_task("matbench_steels", download=False)
    other = next(r["config"] for r in records if r["config"] != clean["selection"]["chosen"])
    pipe = make_model("AtomSets-V0", task.info, replace(settings, **other), seed=0)
    X_train, y_train, X_test, _ = task.split(0)
    F_train = pipe[:-1].fit_transform(list(X_train))
    pipe[-1].fit(F_train, y_train.to_numpy())
    poisoned = _poison_test_fold(task, 0, pipe[-1].predict(pipe[:-1].transform(list(X_test))))
    monkeypatch.setattr(running, "load_matbench_task", lambda name: poisoned)
    dirty = run_matbench_task("matbench_steels", **run)["models"]["AtomSets-V0"]["folds"][0]
    assert dirty["selection"] == clean["selection"] | {"candidates": dirty["selection"]["candidates"]}
    assert [r["validation_score"] for r in dirty["selection"]["candidates"]] == [r["validation_score"] for r in records]
    assert dirty["y_true"] != clean["y_true"] and dirty["score"] != clean["score"]


def test_sets_plus_descriptors_never_see_the_test_rows_while_fitting(monkeypatch):
    """The hybrid model (sets + the descriptor preset, imputed and NMI-selected on the training fold):
    its test predictions stay the same when the test fold's targets are replaced by noise, so neither
    the imputer, nor the selector, nor the net read them; and the descriptors really enter the net."""
    small = dataclasses_replace_folds(load_matbench_task("matbench_steels"), 120, 40)
    monkeypatch.setattr(running, "load_matbench_task", lambda name: small)
    # losses would share a stack; with descriptors the candidates fit one by one
    run = dict(models=["AtomSets-V0 + descriptors"], folds=[0], log=lambda *a: None,
               settings=TrainingSettings(max_epochs=4, patience=4), selection={"loss": ("mae", "mse"), "n_descriptors": (16, 64)})
    clean = run_matbench_task("matbench_steels", **run)["models"]["AtomSets-V0 + descriptors"]["folds"][0]
    noise = np.random.default_rng(0).normal(1e4, 1e3, size=clean["n_test"])
    monkeypatch.setattr(running, "load_matbench_task", lambda name: _poison_test_fold(small, 0, noise))
    dirty = run_matbench_task("matbench_steels", **run)["models"]["AtomSets-V0 + descriptors"]["folds"][0]
    assert dirty["y_pred"] == clean["y_pred"] and dirty["y_true"] != clean["y_true"]
    assert dirty["selection"]["chosen"] == clean["selection"]["chosen"] and len(clean["selection"]["candidates"]) == 4
    assert ([c["validation_score"] for c in dirty["selection"]["candidates"]]
            == [c["validation_score"] for c in clean["selection"]["candidates"]])
    assert all("stack" not in c for c in clean["selection"]["candidates"])
    pipe = make_model("AtomSets-V0 + descriptors", small.info, run["settings"])
    X_train, y_train, _, _ = small.split(0)
    F = pipe[:-1].fit_transform(list(X_train), y_train.to_numpy())
    model = pipe[-1].fit(F, y_train.to_numpy())
    assert model.n_descriptors_in_ == F.shape[1] - 1 > 64 and model.descriptor_selector_.get_support().sum() == 64
    assert model.module_.rho[0].in_features == 64 + 64  # the readout, then the 64 descriptors kept


def test_selection_of_classifiers_and_baselines():
    from sklearn_atomsets.matbench import candidate_configs, parse_selection, select_protocol

    glass = MATBENCH_TASKS["matbench_glass"]
    grid = parse_selection([])
    assert candidate_configs("AtomSets", glass, grid) == [{"readout": "mean"}, {"readout": "set2set"}]
    assert len(candidate_configs("AtomSets", MATBENCH_TASKS["matbench_steels"], grid)) == 6
    assert candidate_configs("MLP-f", MATBENCH_TASKS["matbench_dielectric"], grid) == [
        {"loss": "mse"}, {"loss": "mae"}, {"loss": "huber"}]
    with pytest.raises(ValueError, match="no training configuration"):
        select_protocol("AMM-style", glass, [], [], grid)
    for bad, match in [("loss=l2", "not among"), ("lr=fast", "could not convert"), ("epochs=3", "NAME=V1")]:
        with pytest.raises(ValueError, match=match):
            parse_selection([bad])
    # a classifier's candidates are ranked by inner-validation ROC-AUC: higher wins
    rng = np.random.default_rng(0)
    X = [rng.integers(1, 30, size=rng.integers(1, 4)) for _ in range(120)]
    y = np.array([x.max() > 15 for x in X])
    settings = TrainingSettings(max_epochs=4, patience=4)
    model, chosen, records = select_protocol("AtomSets", glass, X, y, {"readout": ("mean", "set2set")}, settings)
    assert chosen == max(records, key=lambda r: r["validation_score"])["config"]
    assert model.readout == chosen["readout"] and all(r["hit_cap"] == (r["epochs_run"] == 4) for r in records)


def test_seeds_and_the_epoch_cap_are_recorded(tmp_path):
    settings = TrainingSettings(max_epochs=3, patience=50)  # the cap stops every fit
    result = run_matbench_task("matbench_steels", models=["AtomSets-V0"], folds=[0, 1], seeds=[0, 1],
                               settings=settings, out_dir=tmp_path, log=lambda *a: None)
    m = json.loads((tmp_path / "matbench_steels.json").read_text())["models"]["AtomSets-V0"]
    assert [(f["seed"], f["fold"]) for f in m["folds"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert m["n_fits"] == 4 and m["n_hit_cap"] == 4 and all(f["epochs_run"] == 3 for f in m["folds"])
    seed_means = [np.mean([f["score"] for f in m["folds"] if f["seed"] == s]) for s in (0, 1)]
    assert np.isclose(m["mean"], np.mean(seed_means)) and np.isclose(m["seed_std"], np.std(seed_means))
    assert m["seed_std"] > 0  # the seeds really differ (inner split and initialisation)
    # the featurizer runs once per fold; a later seed reuses its features and gets what a run of its own gets
    assert [f["features_reused"] for f in m["folds"]] == [False, False, True, True]
    alone = run_matbench_task("matbench_steels", models=["AtomSets-V0"], folds=[1], seeds=[1], settings=settings,
                              log=lambda *a: None)["models"]["AtomSets-V0"]["folds"][0]
    assert alone["y_pred"] == m["folds"][3]["y_pred"] and not alone["features_reused"]
    assert result["seeds"] == [0, 1] and result["settings"]["max_epochs"] == 3
    # the same table in parts: a later run of other folds/seeds with the same settings adds its fits
    part = tmp_path / "parts"
    run = dict(models=["AtomSets-V0"], settings=settings, out_dir=part, log=lambda *a: None)
    run_matbench_task("matbench_steels", folds=[0, 1], seeds=[0], **run)
    run_matbench_task("matbench_steels", folds=[0, 1], seeds=[1], **run)
    merged = json.loads((part / "matbench_steels.json").read_text())
    assert [f["y_pred"] for f in merged["models"]["AtomSets-V0"]["folds"]] == [f["y_pred"] for f in m["folds"]]
    assert merged["models"]["AtomSets-V0"]["mean"] == m["mean"] and merged["seeds"] == [0, 1]
    run_matbench_task("matbench_steels", folds=[0], seeds=[0], **dict(run, settings=TrainingSettings(max_epochs=2)))
    replaced = json.loads((part / "matbench_steels.json").read_text())["models"]["AtomSets-V0"]
    assert [(f["seed"], f["fold"]) for f in replaced["folds"]] == [(0, 0)]  # other settings: a new model
    with pytest.raises(ValueError, match="distinct"):
        run_matbench_task("matbench_steels", models=["AtomSets-V0"], seeds=[1, 1], settings=settings)


def test_patience_and_cap_in_optimizer_steps_become_epochs_of_the_training_folds(tmp_path, capsys):
    from skorch.dataset import ValidSplit

    from sklearn_atomsets.__main__ import main

    task = load_matbench_task("matbench_steels")  # 312 rows: folds train on 249 or 250, 224 after the inner split
    train = min(len(task.split(k)[0]) for k in range(5))
    inner, _ = ValidSplit(0.1, random_state=0)(np.zeros((train, 1)))
    assert protocol.train_steps(train) == -(-len(inner) // 128) == 2
    settings = TrainingSettings(patience_steps=3, max_steps=5)  # 2 steps an epoch: patience 2 epochs, cap 3
    result = run_matbench_task("matbench_steels", models=["AtomSets-V0"], folds=[0], settings=settings,
                               out_dir=tmp_path, log=lambda *a: None)
    m = result["models"]["AtomSets-V0"]
    assert {k: m["settings"][k] for k in ("patience_steps", "max_steps", "patience", "max_epochs")} == {
        "patience_steps": 3, "max_steps": 5, "patience": 2, "max_epochs": 3}
    assert m["folds"][0]["epochs_run"] <= 3 and result["settings"]["max_epochs"] == 3
    assert "patience_steps" not in run_matbench_task(  # epoch-counted runs record what they always did
        "matbench_steels", models=["AtomSets-V0"], folds=[0], settings=TrainingSettings(max_epochs=2, patience=2),
        log=lambda *a: None)["settings"]
    with pytest.raises(ValueError, match="max_steps should be a positive"):
        protocol.step_epochs(TrainingSettings(max_steps=0), 312)
    assert main(["matbench", "--folds", "0", "--patience-steps", "3", "--max-steps", "5", "--out", str(tmp_path / "cli")]) == 0
    saved = json.loads((tmp_path / "cli" / "matbench_steels.json").read_text())["models"]["AtomSets-V0"]["settings"]
    assert (saved["patience"], saved["max_epochs"]) == (2, 3)
    assert main(["matbench", "--patience-steps", "0"]) == 2
    assert "--patience-steps should be a positive" in capsys.readouterr().out


def test_composition_only_tasks_run_the_composition_models(monkeypatch, tmp_path):

    full = load_matbench_composition_task("matbench_mp_e_form")
    assert full.info.input == "composition" and models_for(full.info) == [
        "AtomSets", "AtomSets-V0", "AtomSets-V0 [CHGNet-0.3.0]", "AtomSets-V0 + descriptors", "AMM-style",
        "AMM-style + MEGNet"]
    # a small slice of the official folds keeps the test fast
    small = dataclasses_replace_folds(full, 300, 60)
    monkeypatch.setattr(running, "load_matbench_composition_task", lambda name: small)
    settings = TrainingSettings(max_epochs=2, patience=2)
    run_matbench_task("matbench_mp_e_form", models=["AtomSets"], folds=[0], settings=settings, out_dir=tmp_path,
                      composition_only=True, log=lambda *a: None)
    saved = json.loads((tmp_path / "matbench_mp_e_form_composition_only.json").read_text())
    assert saved["composition_only"] and not (tmp_path / "matbench_mp_e_form.json").exists()
    assert any("Composition only" in n for n in saved["notes"])
    assert any("Materials Project" in n for n in saved["notes"])  # the mp_* leakage note
    assert saved["models"]["AtomSets"]["folds"][0]["n_test"] == 60


def _small_jdft2d_counting_encoded_structures(monkeypatch):
    """jdft2d sliced to 60 training and 20 test rows per fold; returns the list that collects how many
    structures each parent pass encodes."""
    from sklearn_atomsets._featurizers import _StructureBase

    small = dataclasses_replace_folds(load_matbench_task("matbench_jdft2d"), 60, 20)
    monkeypatch.setattr(running, "load_matbench_task", lambda name: small)
    encoded = []
    original = _StructureBase._encode_structures

    def counting(self, structures, *args, **kwargs):
        encoded.append(len(structures))
        return original(self, structures, *args, **kwargs)

    monkeypatch.setattr(_StructureBase, "_encode_structures", counting)
    return encoded


def test_each_structure_is_encoded_once_for_all_models_of_a_run(monkeypatch):
    from sklearn_atomsets import clear_feature_cache

    encoded = _small_jdft2d_counting_encoded_structures(monkeypatch)
    run = dict(models=["AtomSets-V1", "AtomSets-V2", "MLP-f"], folds=[0], log=lambda *a: None,
               settings=TrainingSettings(max_epochs=3, patience=3))
    clear_feature_cache()
    filled = run_matbench_task("matbench_jdft2d", **run)
    assert sum(encoded) == 80 and "encode_s" in filled  # once, for the three models' layers together
    clear_feature_cache()
    encoded.clear()
    monkeypatch.setattr(running, "precompute_features", lambda inputs, steps, cache=None: 0)
    plain = run_matbench_task("matbench_jdft2d", **run)
    # without it the featurizers' own cache does the same: the first model's pass keeps every
    # output of each structure (issue 34), so the other models' layers run no parent again
    assert sum(encoded) == 80
    for name in run["models"]:  # and the features, hence the predictions, are the same
        assert_float32_close(filled["models"][name]["folds"][0]["y_pred"], plain["models"][name]["folds"][0]["y_pred"])


def test_a_feature_cache_keeps_the_parents_outputs_for_later_runs(monkeypatch, tmp_path):
    # the plan runs each job (and, with WORKERS, each seed) as its own process: with --feature-cache the
    # parents' outputs of the task's structures are written once and read by the later processes
    from sklearn_atomsets import clear_feature_cache

    encoded = _small_jdft2d_counting_encoded_structures(monkeypatch)
    settings = TrainingSettings(max_epochs=3, patience=3)
    clear_feature_cache()
    first = run_matbench_task("matbench_jdft2d", models=["AtomSets-V1"], folds=[0], settings=settings,
                              feature_cache=tmp_path, log=lambda *a: None)
    assert sum(encoded) == 80
    folder = tmp_path / "parents" / running._versions_folder()
    assert len(list(folder.glob("*.npz"))) == 80  # one file per structure and parent
    clear_feature_cache()  # as a new process starts
    encoded.clear()
    # another job: another layer of the same parent, read from the folder (every layer was kept)
    later = run_matbench_task("matbench_jdft2d", models=["AtomSets-V1", "AtomSets-V2"], folds=[0],
                              settings=settings, feature_cache=tmp_path, log=lambda *a: None)
    assert sum(encoded) == 0
    assert_float32_close(later["models"]["AtomSets-V1"]["folds"][0]["y_pred"],
                         first["models"]["AtomSets-V1"]["folds"][0]["y_pred"])
    clear_feature_cache()
    fresh = run_matbench_task("matbench_jdft2d", models=["AtomSets-V2"], folds=[0], settings=settings,
                              log=lambda *a: None)
    assert sum(encoded) == 80  # without the folder: encoded again, to the same features
    assert_float32_close(later["models"]["AtomSets-V2"]["folds"][0]["y_pred"],
                         fresh["models"]["AtomSets-V2"]["folds"][0]["y_pred"])
    clear_feature_cache()


def dataclasses_replace_folds(task, n_train, n_test):
    import dataclasses

    train, test = task.folds[0]
    return dataclasses.replace(task, folds=[(train[:n_train], test[:n_test])])


def test_cli_seeds_selection_and_bad_selection(capsys, tmp_path):
    from sklearn_atomsets.__main__ import main

    assert main(["matbench", "--folds", "0", "--max-epochs", "3", "--patience", "3", "--seeds", "0", "1",
                 "--select", "readout=mean,set2set", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "seed 1 fold 0" in out and "chosen {'readout'" in out and "at epoch cap" in out
    # the candidates were pickled under checkpoints/ while each selection ran, and are gone once recorded
    assert not (tmp_path / "checkpoints").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["matbench_steels.json"]
    saved = json.loads((tmp_path / "matbench_steels.json").read_text())
    assert saved["selection"] == {"readout": ["mean", "set2set"]} and saved["seeds"] == [0, 1]
    assert main(["matbench", "--select", "loss=l2"]) == 2
    assert "not among" in capsys.readouterr().out


def test_seed_ensembles_grow_from_the_net_selected_on_inner_validation(monkeypatch, tmp_path):
    """``ensemble=K`` with a selection (``--select --ensemble K``): the configuration is chosen
    on single nets exactly as without the ensemble, and the chosen net grows into an ensemble of
    K (K - 1 more fits with other seeds). The row '<model> xK' records the members' seeds and
    fits; its validation score is the chosen net's; its test predictions are the mean of single
    nets of the chosen configuration fitted with the members' seeds."""
    from sklearn_atomsets.__main__ import main

    small = dataclasses_replace_folds(load_matbench_task("matbench_steels", download=False), 100, 30)
    monkeypatch.setattr(running, "load_matbench_task", lambda name: small)
    settings = TrainingSettings(max_epochs=4, patience=4, loss="mae", ensemble=3, threshold="validation")
    grid = {"readout": ("mean", "set2set")}
    run = dict(models=["AtomSets-V0", "AMM-style"], folds=[0], selection=grid, log=lambda *a: None, seed=7)
    run_matbench_task("matbench_steels", settings=settings, out_dir=tmp_path, **run)
    saved = json.loads((tmp_path / "matbench_steels.json").read_text())
    assert saved["models"].keys() == {"AtomSets-V0 x3", "AMM-style"}  # the forest is not an ensemble of nets
    m = saved["models"]["AtomSets-V0 x3"]
    assert m["settings"]["ensemble"] == 3 and "ensemble" not in saved["models"]["AMM-style"]["settings"]
    fold = m["folds"][0]
    seeds = fold["ensemble"]["seeds"]
    assert fold["ensemble"]["n_estimators"] == 3 and fold["ensemble"]["of_selected"] and len(set(seeds)) == 3
    assert seeds[0] == 7 and [x["seed"] for x in fold["ensemble"]["members"]] == seeds[1:]
    assert m["n_fits"] == 2 + 2  # two single-net candidates, then two more members
    # the selection is the single nets' selection, scores and all
    single_run = run_matbench_task("matbench_steels", settings=replace(settings, ensemble=1), **run)
    single = single_run["models"]["AtomSets-V0"]["folds"][0]
    scores = lambda f: [(c["config"], c["validation_score"]) for c in f["selection"]["candidates"]]  # noqa: E731
    assert fold["selection"]["chosen"] == single["selection"]["chosen"] and scores(fold) == scores(single)
    assert fold["validation_score"] == single["validation_score"]
    chosen = fold["selection"]["chosen"]
    # the predictions are the mean of single nets of the chosen configuration fitted with the members' seeds
    X_train, y_train, X_test, _ = small.split(0)
    config = replace(settings, ensemble=1, **chosen)
    preds = []
    for s in seeds:
        pipe = make_model("AtomSets-V0", small.info, config, seed=s)
        pipe.fit(list(X_train), y_train.to_numpy())
        preds.append(pipe.predict(list(X_test)))
    assert_float32_close(preds[0], single["y_pred"])  # the first member is the chosen net
    assert fold["ensemble"]["first_member_score"] == pytest.approx(single["score"], rel=1e-5)  # its test score
    assert_float32_close(fold["y_pred"], np.mean(preds, axis=0))
    assert not np.allclose(preds[0], preds[1])  # the members differ
    # the default (one net) records no ensemble; the CLI passes --ensemble through
    plain = run_matbench_task("matbench_steels", models=["AtomSets-V0"], folds=[0], log=lambda *a: None,
                              settings=TrainingSettings(max_epochs=2, patience=2))
    assert "ensemble" not in plain["settings"] and "ensemble" not in plain["models"]["AtomSets-V0"]["folds"][0]
    assert main(["matbench", "--folds", "0", "--max-epochs", "2", "--patience", "2", "--ensemble", "2",
                 "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "matbench_steels.json").read_text())["models"]
    assert list(cli) == ["AtomSets-V0 x2"] and len(cli["AtomSets-V0 x2"]["folds"][0]["members"]) == 2
    assert main(["matbench", "--ensemble", "0"]) == 2


def test_ensembles_grown_from_recorded_selections_fit_only_the_chosen_net_again(monkeypatch, tmp_path):
    """``selected_from``: a seed ensemble grown from the selected net reuses the selection a
    single-net run of the same settings recorded (same model, seed, fold): no candidate is fitted
    again, only the chosen one (the first member, equal to the single run's net); the result is
    the ensemble the full selection would have grown. Fits the files do not record are selected
    as usual; selections made under other settings are not reused."""
    from sklearn_atomsets.__main__ import main

    import dataclasses

    task = load_matbench_task("matbench_steels", download=False)
    small = dataclasses.replace(task, folds=[(train[:100], test[:30]) for train, test in task.folds[:2]])
    monkeypatch.setattr(running, "load_matbench_task", lambda name: small)
    single = TrainingSettings(max_epochs=4, patience=4, loss="mae", threshold="validation")
    grid = {"readout": ("mean", "set2set")}
    run = dict(models=["AtomSets-V0"], selection=grid, log=lambda *a: None, seeds=[3, 5])
    run_matbench_task("matbench_steels", settings=single, out_dir=tmp_path / "single", folds=[0], **run)
    grown_full = run_matbench_task("matbench_steels", settings=replace(single, ensemble=3), folds=[0, 1],
                                   **run)["models"]["AtomSets-V0 x3"]["folds"]
    selections = []
    select = running.select_protocol
    monkeypatch.setattr(running, "select_protocol", lambda *a, **k: selections.append(a[0]) or select(*a, **k))
    grown = run_matbench_task("matbench_steels", settings=replace(single, ensemble=3), folds=[0, 1],
                              selected_from=[tmp_path / "single"], **run)["models"]["AtomSets-V0 x3"]
    assert len(selections) == 2  # fold 0 (both seeds) reused; fold 1 is not recorded: selected as usual
    recorded = json.loads((tmp_path / "single" / "matbench_steels.json").read_text())["models"]["AtomSets-V0"]
    for fit, full in zip(grown["folds"], grown_full):
        assert (fit["seed"], fit["fold"]) == (full["seed"], full["fold"])
        assert fit["selection"]["chosen"] == full["selection"]["chosen"]
        assert fit["validation_score"] == full["validation_score"]  # the first member: the chosen net again
        assert_float32_close(fit["y_pred"], full["y_pred"])
        reused = [r for r in recorded["folds"] if (r["seed"], r["fold"]) == (fit["seed"], fit["fold"])]
        assert ("recorded_in" in fit["selection"]) == bool(reused)
        if reused:
            assert fit["selection"]["candidates"] == reused[0]["selection"]["candidates"]
    assert grown["n_fits"] == 4 * (2 + 2)  # the recorded candidates count as this protocol's fits
    # a selection made under other settings (here another patience) is not reused
    recorded_selections = selection.recorded_selections
    label, settings = "AtomSets-V0", running._recorded_settings("AtomSets-V0", small.info, single, grid)
    assert len(recorded_selections([tmp_path / "single"], "matbench_steels.json", label, settings)) == 2
    assert recorded_selections([tmp_path], "matbench_steels.json", label, {**settings, "patience": 5}) == {}
    # two files that disagree on one fit's choice are refused
    clash = json.loads((tmp_path / "single" / "matbench_steels.json").read_text())
    first = clash["models"]["AtomSets-V0"]["folds"][0]["selection"]
    first["chosen"] = {"readout": "set2set" if first["chosen"]["readout"] == "mean" else "mean"}
    (tmp_path / "clash").mkdir()
    (tmp_path / "clash" / "matbench_steels.json").write_text(json.dumps(clash))
    with pytest.raises(ValueError, match="seed 3 fold 0"):
        recorded_selections([tmp_path], "matbench_steels.json", label, settings)
    with pytest.raises(ValueError, match="selected_from"):
        run_matbench_task("matbench_steels", settings=single, folds=[0], selected_from=[tmp_path], **run)
    assert main(["matbench", "--select", "--selected-from", str(tmp_path)]) == 2  # no --ensemble
    assert main(["matbench", "--select", "--ensemble", "2", "--selected-from", str(tmp_path / "nowhere")]) == 2


def test_a_threshold_chosen_on_inner_validation_never_reads_the_test_fold(monkeypatch):
    """--threshold validation: each network classifier's threshold is the one with the best
    balanced accuracy on its own inner validation split; the test fold is scored on labels at
    that threshold, exactly as matbench scores submitted labels; poisoning the test targets
    changes the score but neither the threshold nor its validation score."""
    from matbench.data_ops import score_array


    settings = TrainingSettings(max_epochs=8, patience=8, threshold="validation")
    run = dict(models=["AtomSets"], folds=[0], settings=settings, log=lambda *a: None)
    clean = run_matbench_task("matbench_expt_is_metal", **run)["models"]
    assert list(clean) == ["AtomSets (validation threshold)"]
    for name, kind, label in [("AMM-style", "classification", "AMM-style"), ("AtomSets", "regression", "AtomSets"),
                              ("MLP-f", "classification", "MLP-f (validation threshold)")]:  # trees keep matbench's 0.5
        assert running.model_label(name, settings, kind=kind) == label
    fold = clean["AtomSets (validation threshold)"]["folds"][0]
    assert clean["AtomSets (validation threshold)"]["settings"]["threshold"] == "validation"
    proba = np.array(fold["y_pred"])
    labels = proba >= fold["threshold"]
    y_true = [bool(v) for v in fold["y_true"]]
    assert fold["score"] == score_array(y_true, labels.tolist(), "classification")["rocauc"]
    assert fold["rocauc_at_half"] == score_array(y_true, proba.tolist(), "classification")["rocauc"]
    assert 0 < fold["threshold"] < 1 and 0.5 < fold["threshold_validation_balanced_accuracy"] <= 1
    # test targets that a test-reading threshold would chase: positive exactly above another cut
    task = load_matbench_task("matbench_expt_is_metal", download=False)
    other = float(np.quantile(proba, 0.8))
    poisoned = _poison_test_fold(task, 0, proba > other)
    monkeypatch.setattr(running, "load_matbench_task", lambda name, **kw: poisoned)
    dirty = run_matbench_task("matbench_expt_is_metal", **run)["models"]["AtomSets (validation threshold)"]["folds"][0]
    assert dirty["y_true"] != fold["y_true"] and dirty["score"] != fold["score"]
    for key in ("threshold", "threshold_validation_balanced_accuracy", "validation_score", "y_pred"):
        assert dirty[key] == fold[key]


def test_tune_threshold_maximises_balanced_accuracy_on_the_inner_split_only():
    from sklearn.metrics import balanced_accuracy_score

    from sklearn_atomsets import AtomSetsClassifier, AtomSetsEnsembleClassifier
    from sklearn_atomsets.matbench import tune_threshold

    rng = np.random.default_rng(1)
    X = [rng.integers(1, 40, size=rng.integers(1, 5)) for _ in range(400)]
    y = np.array([x.mean() > 24 for x in X])  # imbalanced: about a quarter positive
    clf = AtomSetsClassifier(max_epochs=20, random_state=0).fit(X, y)
    tuned = tune_threshold(clf, X, y)
    assert tuned.estimator_ is clf  # not refitted
    idx = clf.validation_indices_
    p_valid = clf.predict_proba([X[i] for i in idx])[:, 1]
    at = lambda t: balanced_accuracy_score(y[idx], p_valid >= t)  # noqa: E731
    assert tuned.best_score_ == pytest.approx(at(tuned.best_threshold_))
    assert at(tuned.best_threshold_) >= max(at(t) for t in (0.5, *np.linspace(0.05, 0.95, 19)))
    p_all = clf.predict_proba(X)[:, 1]
    np.testing.assert_array_equal(tuned.predict(X), p_all >= tuned.best_threshold_)
    ensemble = AtomSetsEnsembleClassifier(AtomSetsClassifier(max_epochs=2), n_estimators=2, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="no inner validation split"):
        tune_threshold(ensemble, X, y)
    with pytest.raises(ValueError, match="single nets"):
        run_matbench_task("matbench_glass", models=["AtomSets"], folds=[0],
                          settings=TrainingSettings(ensemble=2, threshold="validation"))


def test_an_interrupted_run_resumes_after_its_last_fit(monkeypatch, tmp_path):

    settings = TrainingSettings(max_epochs=3, patience=50)
    run = dict(models=["AtomSets-V0"], folds=[0, 1], seeds=[0, 1], settings=settings, log=lambda *a: None)
    whole = run_matbench_task("matbench_steels", out_dir=tmp_path / "whole", **run)["models"]["AtomSets-V0"]
    calls, real = [], running._run_fold

    def stopped_at_the_third(task, name, fold, seed, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is stopped during its third fit
        calls.append((seed, fold))
        return real(task, name, fold, seed, *args, **kwargs)

    monkeypatch.setattr(running, "_run_fold", stopped_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_matbench_task("matbench_steels", out_dir=tmp_path / "parts", **run)
    saved = json.loads((tmp_path / "parts" / "matbench_steels.json").read_text())["models"]["AtomSets-V0"]
    assert [(f["seed"], f["fold"]) for f in saved["folds"]] == [(0, 0), (1, 0)]  # both fits before the stop
    assert not list((tmp_path / "parts").glob("*.partial"))
    calls.clear()
    monkeypatch.setattr(running, "_run_fold", real)
    counted = []
    monkeypatch.setattr(running, "_run_fold", lambda task, name, fold, seed, *a, **k: counted.append((seed, fold))
                        or real(task, name, fold, seed, *a, **k))
    resumed = run_matbench_task("matbench_steels", out_dir=tmp_path / "parts", resume=True, **run)["models"]["AtomSets-V0"]
    assert counted == [(0, 1), (1, 1)]  # only the fits the stopped run had not finished
    assert [f["y_pred"] for f in resumed["folds"]] == [f["y_pred"] for f in whole["folds"]]
    assert resumed["mean"] == whole["mean"] and resumed["n_fits"] == 4
    # without resume the same fits are fitted again (and replace the recorded ones)
    counted.clear()
    run_matbench_task("matbench_steels", out_dir=tmp_path / "parts", **dict(run, folds=[0], seeds=[0]))
    assert counted == [(0, 0)]


def test_a_stopped_selection_resumes_with_its_next_candidate(monkeypatch, tmp_path):
    """Each fitted candidate is pickled as it is done; a selection stopped during its third
    candidate goes on, with resume, from there: the same choice, records and model."""
    from sklearn_atomsets.matbench import select_protocol

    steels = MATBENCH_TASKS["matbench_steels"]
    rng = np.random.default_rng(0)
    X = [rng.integers(1, 30, size=rng.integers(1, 4)) for _ in range(120)]
    y = np.array([float(x.sum()) for x in X])
    # four candidates that each fit alone (a stack of candidates trains together: see test_stacked.py)
    grid = {"readout": ("mean", "set2set"), "dropout": (0.0, 0.1)}
    settings = TrainingSettings(max_epochs=4, patience=4)
    whole_model, whole_chosen, whole_records = select_protocol("AtomSets", steels, X, y, grid, settings, seed=3)
    fitted, real = [], selection._fit_config

    def stopped_at_the_third(name, info, F, t, config, *args):
        if len(fitted) == 2:
            raise KeyboardInterrupt
        fitted.append(config)
        return real(name, info, F, t, config, *args)

    monkeypatch.setattr(selection, "_fit_config", stopped_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        select_protocol("AtomSets", steels, X, y, grid, settings, seed=3, checkpoint=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["candidate0.pkl", "candidate1.pkl"]
    fitted.clear()
    monkeypatch.setattr(selection, "_fit_config", lambda *a: fitted.append(a[4]) or real(*a))
    model, chosen, records = select_protocol("AtomSets", steels, X, y, grid, settings, seed=3, checkpoint=tmp_path,
                                             resume=True)
    assert fitted == [{"readout": "set2set", "dropout": 0.0}, {"readout": "set2set", "dropout": 0.1}]  # the two left
    assert chosen == whole_chosen
    assert [r["validation_score"] for r in records] == [r["validation_score"] for r in whole_records]
    np.testing.assert_array_equal(model.predict(X[:10]), whole_model.predict(X[:10]))
    # a checkpoint of another configuration is not taken for this one
    assert selection._read_candidate(tmp_path / "candidate0.pkl", {"readout": "set2set", "dropout": 0.0}) is None


def test_forests_featurize_each_distinct_input_once_with_the_per_fold_results(monkeypatch, tmp_path):
    """The forests' features come from one featurization of the task's distinct inputs (and, with a
    feature cache, from the first run's file): every fold's predictions equal those of the baseline
    pipeline fitted on that fold from scratch, as the runner fitted it before."""
    from sklearn_atomsets._baseline import MatminerFeatures

    full = load_matbench_task("matbench_steels")
    # two folds of 100 of the 312 rows (the runner featurizes the rows its folds use), each fold on all 100, as
    # each official fold is on all rows
    rows = np.concatenate(full.folds[0])[:100]
    task = replace(full, folds=[(rows[:70], rows[70:]), (rows[30:], rows[:30])])
    used = sorted(rows.tolist())
    monkeypatch.setattr(running, "load_matbench_task", lambda name: task)
    settings = TrainingSettings(n_estimators=10)
    featurized = []
    transform = MatminerFeatures.transform
    monkeypatch.setattr(MatminerFeatures, "transform", lambda self, X: featurized.append(len(X)) or transform(self, X))
    lines = []
    result = run_matbench_task("matbench_steels", models=["AMM-style"], folds=[0, 1], settings=settings, seed=3,
                               feature_cache=tmp_path, log=lines.append)
    distinct = len(set(task.inputs.iloc[used]))
    n_sets = len(MatminerFeatures()._featurizers())  # matminer's composition sets, a block each
    assert featurized == [distinct] * n_sets  # once, each distinct formula once, for both folds
    assert any("featurized once" in line for line in lines)
    assert all(fit["features_reused"] for fit in result["models"]["AMM-style"]["folds"])
    for fit in result["models"]["AMM-style"]["folds"][1:]:  # fold 1: its rows come from the table fitted on fold 0's
        X_train, y_train, X_test, y_test = task.split(fit["fold"])
        alone = make_model("AMM-style", task.info, settings, seed=3).fit(list(X_train), y_train.to_numpy())
        # the same trees; their mean differs in the last bit at most (the forest's threads add it up in any order)
        np.testing.assert_allclose(fit["y_pred"], alone.predict(list(X_test)), rtol=1e-13, atol=0)
    # another process (another fold's job) reads the table instead of featurizing
    featurized.clear()
    lines.clear()
    again = run_matbench_task("matbench_steels", models=["AMM-style"], folds=[1], settings=settings, seed=3,
                              feature_cache=tmp_path, log=lines.append)
    assert featurized == [] and any("read from" in line for line in lines)
    np.testing.assert_allclose(again["models"]["AMM-style"]["folds"][0]["y_pred"],
                               result["models"]["AMM-style"]["folds"][1]["y_pred"], rtol=1e-13, atol=0)
    # so does another task on the same inputs (mp_gap's and mp_is_metal's compositions are the same)
    table, rows_of = running._featurize_once(replace(task, name="matbench_expt_gap"), "AMM-style", settings, [0],
                                             tmp_path, log=lines.append)
    assert featurized == [] and table.shape[0] == distinct and (rows_of[used] >= 0).all()
    # and the other forest: matminer's blocks are read, only the parent's composition features are computed
    run_matbench_task("matbench_steels", models=["AMM-style + MEGNet"], folds=[1], settings=settings,
                      feature_cache=tmp_path, log=lines.append)
    assert featurized == [distinct] and sum("read from" in line for line in lines) == 3 * n_sets  # 3 runs read
    # other inputs (here one formula changed) do not match the files' digests: featurized again
    featurized.clear()
    changed = replace(task, inputs=task.inputs.copy())
    changed.inputs.iloc[used[0]] = "Fe0.5Ni0.5"
    monkeypatch.setattr(running, "load_matbench_task", lambda name: changed)
    run_matbench_task("matbench_steels", models=["AMM-style"], folds=[1], settings=settings, feature_cache=tmp_path,
                      log=lambda *a: None)
    assert featurized == [len(set(changed.inputs.iloc[used]))] * n_sets
