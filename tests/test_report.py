"""The MatBench report (benchmarks/report.py): honest model selection and target statements."""

from __future__ import annotations

import importlib.util

import pytest

from .conftest import REPO

spec = importlib.util.spec_from_file_location("report", REPO / "benchmarks" / "report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def _model(scores, validation):
    folds = [{"fold": k, "score": s, "validation_score": v, "y_true": [0.0], "y_pred": [s]}
             for k, (s, v) in enumerate(zip(scores, validation))]
    return {"mean": sum(scores) / len(scores), "std": 0.0, "folds": folds,
            "settings": {"readout": "mean", "loss": "mae", "max_epochs": 10, "patience": 2}}


def _result():
    return {"task": "matbench_x", "metric": "mae", "unit": "", "settings": {}, "anchors": {"AMMExpress v2020": 1.5},
            "models": {
                # A wins on test scores; its validation scores are worse on folds 0 and 2
                "AtomSets": _model([1.0, 1.0, 1.0], [0.9, 0.1, 0.9]),
                "AtomSets-V0": _model([2.0, 2.0, 2.0], [0.1, 0.5, 0.1]),
                "AMM-style": {"mean": 0.5, "std": 0.0, "folds": [], "settings": {"n_estimators": 5}},
            }}


def test_validation_selection_uses_validation_scores_only():
    selected = report.validation_selected(_result())
    assert [f["model"] for f in selected["folds"]] == ["AtomSets-V0", "AtomSets", "AtomSets-V0"]
    assert selected["mean"] == (2.0 + 1.0 + 2.0) / 3
    assert selected["candidates"] == ["AtomSets", "AtomSets-V0"]


def test_models_without_validation_scores_are_not_candidates():
    result = _result()
    for f in result["models"]["AtomSets-V0"]["folds"]:
        f["validation_score"] = None
    assert report.validation_selected(result) is None  # one candidate left: nothing to select


def test_seed_ensembles_are_shown_but_not_validation_selected():
    """An ensemble's validation score is its members' mean over their own inner splits: the
    validation-selected row does not compare it with the single nets' (one shared split)."""
    result = _result()
    result["models"]["AtomSets-V1 x5"] = _model([0.5, 0.5, 0.5], [0.0, 0.0, 0.0])
    result["models"]["AtomSets-V1 x5"]["settings"]["ensemble"] = 5
    selected = report.validation_selected(result)
    assert selected["candidates"] == ["AtomSets", "AtomSets-V0"]
    assert report.training(result, "AtomSets-V1 x5").startswith(
        "mean readout, L1 loss, seed ensemble of 5 nets (mean prediction;")


def test_ensembles_grown_from_selected_nets_get_their_own_selected_row():
    """Rows '<model> x5' of ``--select --ensemble 5`` carry their chosen (first) net's validation
    score on the shared split: the 'validation-selected x5' row picks among them on those scores,
    the same picks as the single nets' row, and scores the picks' ensembles. Ensembles without
    that mark (members' mean scores) stay out, and a model with only some folds grown is no candidate."""
    result = _result()
    for name, scores in (("AtomSets x5", [0.8, 0.8, 0.8]), ("AtomSets-V0 x5", [1.5, 1.5, 1.5])):
        single = result["models"][name[:-3]]
        grown = _model(scores, [f["validation_score"] for f in single["folds"]])
        grown["settings"]["ensemble"] = 5
        for f in grown["folds"]:
            f["ensemble"] = {"n_estimators": 5, "seeds": [0, 1, 2, 3, 4], "of_selected": True}
        result["models"][name] = grown
    assert report.ensembles_of_selected(result) == [5]
    assert report.validation_selected(result)["candidates"] == ["AtomSets", "AtomSets-V0"]
    picked = report.validation_selected(result, ensemble=5)
    assert picked["candidates"] == ["AtomSets x5", "AtomSets-V0 x5"]
    assert [f["model"] for f in picked["folds"]] == ["AtomSets-V0 x5", "AtomSets x5", "AtomSets-V0 x5"]
    assert picked["mean"] == pytest.approx((1.5 + 0.8 + 1.5) / 3)
    assert "then a seed ensemble of 5 nets of the chosen configuration" in report.training(result, "AtomSets x5")
    del result["models"]["AtomSets-V0 x5"]["folds"][1]["ensemble"]["of_selected"]
    assert report.ensembles_of_selected(result) == [5]
    assert report.validation_selected(result, ensemble=5) is None  # one candidate left


def test_seed_ensembles_are_compared_with_their_own_first_member_on_the_same_folds():
    """The paired gain of a grown ensemble: per seed the mean over folds of (ensemble - the chosen
    net alone), then mean ± std over seeds; rows without the first member's score are left out."""
    result = _result()
    grown = _model([1.0, 2.0, 3.0, 1.0], [0.1] * 4)
    firsts = [1.5, 2.0, 2.0, 2.0]  # seed 0: -0.5, +0.0; seed 1: +1.0, -1.0
    for f, first, seed in zip(grown["folds"], firsts, (0, 0, 1, 1)):
        f["seed"] = seed
        f["ensemble"] = {"n_estimators": 5, "of_selected": True, "first_member_score": first}
    grown["settings"]["ensemble"] = 5
    result["models"]["AtomSets x5"] = grown
    lines = report.ensemble_gains([result]).splitlines()
    assert len(lines) == 1  # the single nets have no first member
    assert "(MAE, lower is better): AtomSets x5 minus its first member: -0.125 ± 0.18 over 2 seed(s)" in lines[0]
    assert lines[0].endswith("(per seed -0.25, +0); ensemble better in 2 of 4 fits")
    del grown["folds"][0]["ensemble"]["first_member_score"]  # an x5 fold recorded before the runner kept it
    assert report.ensemble_gains([result]) == ""


def test_targets_state_both_selections():
    result = _result()
    result["models"][report.SELECTED] = report.validation_selected(result)
    text = report.target_check([result])
    assert "best AtomSets model (picked on test scores) AtomSets 1 vs AMMExpress v2020 1.5: beats" in text
    assert f"{report.SELECTED} 1.667 vs AMMExpress v2020 1.5: does NOT beat" in text
    assert report.training(result, "AMM-style") == "random forest, 5 trees"
    assert report.training(result, "AtomSets") == "mean readout, L1 loss, ≤10 epochs, patience 2"


def test_table_names_the_pick_of_each_fold_and_the_best_entry():
    result = _result()
    result["models"][report.SELECTED] = report.validation_selected(result)
    assert report.training(result, report.SELECTED) == (
        "per fold, whichever of the 2 AtomSets-family models above has the best inner-validation score "
        "(fold 0: AtomSets-V0; fold 1: AtomSets; fold 2: AtomSets-V0)")
    assert report.best_entry({"Dummy": 3.0, "best (TPOT-Mat)": 79.95}) == "79.95 (TPOT-Mat)"
    assert report.best_entry({"best": 0.9598}) == "0.9598"
    assert report.best_entry({"Dummy": 3.0}) == ""


def test_thresholds_chosen_on_validation_have_their_own_selected_row_and_rescoring():
    """Rows '<model> (validation threshold)' are selected among themselves (their probabilities,
    hence validation ROC-AUC, may equal the 0.5 rows'), and their folds are rescored at the
    recorded threshold, not at 0.5."""
    result = _result()
    tuned = _model([0.8, 0.8, 0.8], [0.0, 0.0, 0.0])
    tuned["settings"]["threshold"] = "validation"
    result["models"]["AtomSets (validation threshold)"] = tuned
    assert report.validation_selected(result)["candidates"] == ["AtomSets", "AtomSets-V0"]
    assert report.validation_selected(result, threshold=True) is None  # one tuned candidate: nothing to select
    result["models"]["AtomSets-V0 (validation threshold)"] = _model([0.7, 0.7, 0.7], [0.5, 0.5, 0.5])
    picked = report.validation_selected(result, threshold=True)
    assert picked["candidates"] == ["AtomSets (validation threshold)", "AtomSets-V0 (validation threshold)"]
    assert report.selected_label(threshold=True) == "AtomSets (validation-selected, validation threshold)"
    assert report.training(result, "AtomSets (validation threshold)").endswith(
        "decision threshold chosen on inner validation (highest balanced accuracy), ≤10 epochs, patience 2")
    clf = {"task": "t", "metric": "rocauc", "models": {"m": {"folds": [
        {"y_true": [0, 0, 1, 1], "y_pred": [0.1, 0.3, 0.35, 0.9], "threshold": 0.35, "score": 0.0}]}}}
    report.rescore_classification(clf)
    assert clf["models"]["m"]["folds"][0]["score"] == 1.0  # labels 0,0,1,1 (>= 0.35); at 0.5: 0,0,0,1, i.e. 0.75
    del clf["models"]["m"]["folds"][0]["threshold"]
    report.rescore_classification(clf)
    assert clf["models"]["m"]["folds"][0]["score"] == 0.75


def _stored_classification_results():
    """Every stored classification result file: the first pass and the full protocol's jobs."""
    import json

    results = [json.loads(p.read_text()) for folder in ("matbench", "matbench_seeds")
               for task in ("matbench_expt_is_metal", "matbench_glass")
               for p in sorted((REPO / "benchmarks" / "results" / folder).rglob(f"{task}.json"))]
    if not results:
        import pytest

        pytest.skip("no stored classification results in benchmarks/results/matbench")
    return results


def test_classification_is_scored_exactly_as_matbench_scores_the_leaderboard():
    """On every stored fold: our 'ROC-AUC as scored by matbench' is matbench 0.6's own
    score_array rocauc (labels at 0.5), equal to its balanced accuracy, while ROC-AUC from
    probabilities is a different number."""
    import numpy as np
    from matbench.data_ops import score_array

    from sklearn_atomsets.matbench import classification_scores

    n_checked, n_differ = 0, 0
    for result in _stored_classification_results():
        for m in result["models"].values():
            for f in m["folds"]:
                y_true = [bool(v) for v in f["y_true"]]
                ours = classification_scores(y_true, f["y_pred"], f.get("threshold"))
                # a threshold chosen on inner validation: the submission is its labels
                submitted = [float(p) if "threshold" not in f else p >= f["threshold"] for p in f["y_pred"]]
                theirs = score_array(y_true, submitted, "classification")
                assert ours["rocauc"] == theirs["rocauc"]
                assert np.isclose(ours["rocauc"], theirs["balanced_accuracy"])
                n_checked += 1
                n_differ += abs(ours["rocauc_proba"] - ours["rocauc"]) > 1e-3
    assert n_checked >= 10
    assert n_differ > n_checked // 2  # the two ROC-AUCs really are different numbers


def test_report_rescores_stored_classification_folds_from_predictions():
    result = _stored_classification_results()[0]
    name = next(iter(result["models"]))
    fold = result["models"][name]["folds"][0]
    fold["score"] = 123.0  # a wrong stored score is replaced by the one computed from the predictions
    report.rescore_classification(result)
    from sklearn_atomsets.matbench import classification_scores

    expected = classification_scores(fold["y_true"], fold["y_pred"])
    assert fold["score"] == expected["rocauc"]
    assert fold["rocauc_proba"] == expected["rocauc_proba"]
    scores = [f["score"] for f in result["models"][name]["folds"]]
    assert abs(result["models"][name]["mean"] - sum(scores) / len(scores)) < 1e-12
    assert "labels" in report.metric_name(result)


def _seeded_model(scores_by_seed, validation_by_seed, epochs=None, max_epochs=10):
    folds = []
    for seed, (scores, validation) in scores_by_seed_items(scores_by_seed, validation_by_seed):
        for k, (s, v) in enumerate(zip(scores, validation)):
            f = {"seed": seed, "fold": k, "score": s, "validation_score": v, "y_true": [0.0], "y_pred": [s]}
            if epochs is not None:
                f["epochs_run"] = epochs[seed][k]
            folds.append(f)
    return {"mean": None, "std": None, "folds": folds,
            "settings": {"readout": "mean", "loss": "mae", "max_epochs": max_epochs, "patience": 2}}


def scores_by_seed_items(scores, validation):
    return [(seed, (scores[seed], validation[seed])) for seed in scores]


def test_seeds_give_mean_over_seeds_spread_cap_count_and_margins(tmp_path):
    import json

    result = {"task": "matbench_steels", "metric": "mae", "unit": "MPa", "settings": {"max_epochs": 10},
              "seeds": [0, 1, 2], "anchors": {"AMMExpress v2020": 1.5}, "models": {
                  # seed means 1.0, 1.2, 1.4: mean 1.2, seed std 0.163; 2 of 6 fits at the cap of 10
                  "AtomSets": _seeded_model({0: [0.9, 1.1], 1: [1.2, 1.2], 2: [1.3, 1.5]},
                                            {0: [0.5, 0.5], 1: [0.9, 0.5], 2: [0.5, 0.9]},
                                            epochs={0: [10, 4], 1: [5, 6], 2: [7, 10]}),
                  "AtomSets-V0": _seeded_model({0: [2.0, 2.0], 1: [2.0, 2.0], 2: [2.0, 2.0]},
                                               {0: [0.9, 0.9], 1: [0.1, 0.9], 2: [0.9, 0.1]}),
              }}
    (tmp_path / "matbench_steels.json").write_text(json.dumps(result))
    [r] = report.load_results(tmp_path)
    m = r["models"]["AtomSets"]
    assert abs(m["mean"] - 1.2) < 1e-12 and abs(m["seed_std"] - 0.163299) < 1e-6 and m["n_seeds"] == 3
    assert (m["n_hit_cap"], m["n_fits"]) == (2, 6) and report.cap_cell(m) == "2/6"
    assert report.score_cell(m) == "1.2 ± 0.16 over 3 seeds (folds ± 0.067)"
    # validation selection is made per seed and fold
    sel = r["models"][report.SELECTED]
    assert [(f["seed"], f["fold"], f["model"]) for f in sel["folds"]] == [
        (0, 0, "AtomSets"), (0, 1, "AtomSets"), (1, 0, "AtomSets-V0"), (1, 1, "AtomSets"),
        (2, 0, "AtomSets"), (2, 1, "AtomSets-V0")]
    assert abs(sel["mean"] - (1.0 + 1.6 + 1.65) / 3) < 1e-12
    text = report.target_check([r])
    assert ("AtomSets 1.2 vs AMMExpress v2020 1.5: beats by 0.3, seed std 0.16 (margin beyond the seed spread)"
            in text)
    assert f"{report.SELECTED} 1.417 vs AMMExpress v2020 1.5: beats by 0.0833, seed std 0.3 (margin within" in text


def test_margin_within_the_seed_spread_is_said():
    assert report.verdict(1.4, 1.5, True, 0.2) == "beats by 0.1, seed std 0.2 (margin within the seed spread)"
    assert report.verdict(0.91, 0.92, False, None) == "does NOT beat (short by 0.01, seed std n/a (1 seed))"


def test_composition_only_results_are_marked_and_kept_apart(tmp_path):
    import json

    base = {"metric": "mae", "unit": "eV/atom", "settings": {"max_epochs": 10}, "anchors": {},
            "models": {"AtomSets": _model([0.2, 0.3], [0.1, 0.1])}}
    comp = dict(base, task="matbench_mp_e_form", composition_only=True, notes=["Composition only: ...",
                                                                              "The parent model ... Materials Project"])
    (tmp_path / "matbench_mp_e_form_composition_only.json").write_text(json.dumps(comp))
    (tmp_path / "matbench_steels.json").write_text(json.dumps(dict(base, task="matbench_steels")))
    results = report.load_results(tmp_path)
    assert [report.result_key(r) for r in results] == ["matbench_steels", "matbench_mp_e_form_composition_only"]
    table = report.markdown_table(results)
    assert "| matbench_mp_e_form *(composition only)* | MAE | AtomSets" in table
    assert "- The parent model ... Materials Project" in table


def test_selected_protocol_is_described_with_its_picks():
    result = _result()
    m = result["models"]["AtomSets"]
    m["settings"]["selection"] = {"loss": ["mae", "mse"], "readout": ["mean", "set2set"]}
    for f, chosen in zip(m["folds"], [("mae", "mean"), ("mse", "mean"), ("mae", "mean")]):
        f["selection"] = {"chosen": {"loss": chosen[0], "readout": chosen[1]}, "candidates": []}
    assert report.training(result, "AtomSets") == (
        "per fit chosen on inner validation among loss ∈ {mae, mse}, readout ∈ {mean, set2set} "
        "(chosen: mae, mean ×2; mse, mean ×1), ≤10 epochs, patience 2")


def test_results_of_a_run_in_parts_are_merged(tmp_path):
    import json
    import os

    def part(seed, scores, max_epochs=10):
        m = _seeded_model({seed: scores}, {seed: [0.1] * len(scores)}, max_epochs=max_epochs)
        return {"task": "matbench_steels", "metric": "mae", "unit": "", "settings": {}, "anchors": {},
                "seeds": [seed], "models": {"AtomSets": m}}

    for k, (sub, r) in enumerate([("a", part(0, [1.0, 1.2])), ("b", part(1, [1.4, 1.6])),
                                  ("c", dict(part(0, [9.0, 9.0]), task="matbench_glass"))]):
        (tmp_path / sub).mkdir()
        path = tmp_path / sub / f"{r['task']}.json"
        path.write_text(json.dumps(r))
        os.utime(path, (1000 + k, 1000 + k))
    results = {r["task"]: r for r in report.load_results(tmp_path)}
    m = results["matbench_steels"]["models"]["AtomSets"]
    assert [(f["seed"], f["fold"]) for f in m["folds"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert abs(m["mean"] - 1.3) < 1e-12 and abs(m["seed_std"] - 0.2) < 1e-12
    assert results["matbench_steels"]["seeds"] == [0, 1] and results["matbench_glass"]["models"]["AtomSets"]["mean"] == 9
    # a later part with other settings replaces the model instead of mixing protocols
    later = part(2, [5.0, 5.0], max_epochs=20)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "matbench_steels.json").write_text(json.dumps(later))
    os.utime(tmp_path / "d" / "matbench_steels.json", (2000, 2000))
    m = {r["task"]: r for r in report.load_results(tmp_path)}["matbench_steels"]["models"]["AtomSets"]
    assert [(f["seed"], f["fold"]) for f in m["folds"]] == [(2, 0), (2, 1)]


def test_old_single_seed_fits_are_compared_with_later_models_of_the_same_seed(tmp_path):
    import json
    import os

    old = dict(_result(), seed=0)  # written before fits recorded their seed
    assert all("seed" not in f for m in old["models"].values() for f in m["folds"])
    later = {"task": "matbench_x", "metric": "mae", "unit": "", "settings": {}, "anchors": {}, "seed": 0,
             "seeds": [0], "models": {"AtomSets-V1 [CHGNet-0.3.0]": _model([0.5, 0.5, 0.5], [0.05, 0.05, 0.05])}}
    for k, (sub, r) in enumerate([("old", old), ("new", later)]):
        (tmp_path / sub).mkdir()
        path = tmp_path / sub / "matbench_x.json"
        path.write_text(json.dumps(r))
        os.utime(path, (1000 + k, 1000 + k))
    for f in later["models"]["AtomSets-V1 [CHGNet-0.3.0]"]["folds"]:
        f["seed"] = 0
    (tmp_path / "new" / "matbench_x.json").write_text(json.dumps(later))
    (result,) = report.load_results(tmp_path)
    selected = result["models"][report.SELECTED]
    # every fold has all three candidates: the new model's validation scores are the best on each
    assert len(selected["candidates"]) == 3 and [f["model"] for f in selected["folds"]] == \
        ["AtomSets-V1 [CHGNet-0.3.0]"] * 3 and selected["mean"] == 0.5
    assert {f["seed"] for f in result["models"]["AtomSets"]["folds"]} == {0}
    # two parents: a selection among each parent's own models too (one with a single candidate has none),
    # and every AtomSets-family row of the table names its parent
    megnet_only = result["models"]["AtomSets [Eform_MP_2019] (validation-selected)"]
    assert megnet_only["candidates"] == ["AtomSets", "AtomSets-V0"]
    assert [f["model"] for f in megnet_only["folds"]] == ["AtomSets-V0", "AtomSets", "AtomSets-V0"]
    assert "AtomSets [CHGNet-0.3.0] (validation-selected)" not in result["models"]
    table = report.markdown_table([result])
    assert "| AtomSets-V0 [Eform_MP_2019] |" in table and "| AtomSets-V1 [CHGNet-0.3.0] |" in table
    assert "AtomSets [Eform_MP_2019] (validation-selected) 1.667 vs AMMExpress v2020 1.5" in report.target_check([result])
    parents, rows = report.parent_comparison([result])
    assert parents == ["Eform_MP_2019", "CHGNet-0.3.0"]
    assert ["matbench_x (MAE)", "AtomSets-V1", "", "0.5", "AMMExpress v2020 1.5"] in rows
    assert ["matbench_x (MAE)", "AtomSets (validation-selected among the parent's models)", "1.667", "",
            "AMMExpress v2020 1.5"] in rows
    (one_parent,) = report.load_results(tmp_path / "old")
    assert report.parent_comparison([one_parent]) == ([], [])


def test_validation_scores_in_different_units_are_never_compared(tmp_path):
    import json

    spec = importlib.util.spec_from_file_location("convert", REPO / "benchmarks" / "convert_validation_units.py")
    convert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert)

    legacy = dict(_result(), seed=0)  # before 2026-11-26: no seeds, validation MAE of standardised targets
    later = {"task": "matbench_x", "metric": "mae", "unit": "", "settings": {}, "anchors": {}, "seed": 0, "seeds": [0],
             "validation_units": "mae in target units",
             "models": {"AtomSets-V1 [CHGNet-0.3.0]": _model([0.5, 0.5, 0.5], [0.3, 0.3, 0.3])}}
    for f in later["models"]["AtomSets-V1 [CHGNet-0.3.0]"]["folds"]:
        f["seed"] = 0
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "matbench_x.json").write_text(json.dumps(legacy))
    (tmp_path / "b" / "matbench_x.json").write_text(json.dumps(later))
    with pytest.raises(ValueError, match="different units.*convert_validation_units"):
        report.load_results(tmp_path)
    # converted: x the population std of each fold's training targets (folds 0, 1, 2: std 1, 2, 4)
    targets = {0: [0.0, 2.0], 1: [0.0, 4.0], 2: [0.0, 8.0]}
    assert convert.convert(legacy, targets.get, "2026-11-27") == "converted"
    assert [f["validation_score"] for f in legacy["models"]["AtomSets"]["folds"]] == [0.9, 0.2, 3.6]
    assert legacy["models"]["AtomSets"]["folds"][0]["validation_score_standardised"] == 0.9
    assert convert.convert(legacy, targets.get, "2026-11-27") == "unchanged"  # once only
    (tmp_path / "a" / "matbench_x.json").write_text(json.dumps(legacy))
    (result,) = report.load_results(tmp_path)
    picks = [f["model"] for f in result["models"][report.SELECTED]["folds"]]
    # converted AtomSets 0.9, 0.2, 3.6; AtomSets-V0 0.1, 1.0, 0.4; the CHGNet model 0.3 on each fold
    assert picks == ["AtomSets-V0", "AtomSets", "AtomSets-V1 [CHGNet-0.3.0]"]


def _estimate_module():
    spec = importlib.util.spec_from_file_location("estimate", REPO / "benchmarks" / "estimate_protocol_time.py")
    estimate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(estimate)
    return estimate


def test_the_plan_covers_every_seed_and_fold_once_within_slots():
    estimate = _estimate_module()
    rows = [("matbench_steels", "AtomSets", 100.0), ("matbench_steels", "AMM-style", 30.0),
            ("matbench_dielectric", "AtomSets-V1", 250.0),  # > slot: one job per seed
            ("matbench_mp_e_form (composition only)", "AtomSets", 1500.0)]  # > slot per seed: per seed and fold
    jobs = estimate.plan(rows, [0, 1, 2], slot_s=120.0)
    covered = {}
    for part, slot, job, task, comp, model, seeds, folds, seconds, flags in jobs:
        for s in seeds:
            for k in folds:
                covered[(task, comp, model, s, k)] = covered.get((task, comp, model, s, k), 0) + 1
    assert set(covered.values()) == {1} and len(covered) == 4 * 3 * 5
    assert {(t, c) for t, c, *_ in covered} == {("matbench_steels", False), ("matbench_dielectric", False),
                                                ("matbench_mp_e_form", True)}
    load = {}
    for part, slot, *_, seconds, _ in jobs:
        load[(part, slot)] = load.get((part, slot), 0) + seconds
    assert max(load.values()) <= 120.0 and {s for _, s in load} == {1, 2}
    # the structure tasks come first, the composition-only ones in later parts
    first_comp = min(p for p, _, _, _, comp, *_ in jobs if comp)
    assert all(p < first_comp for p, _, _, _, comp, *_ in jobs if not comp)


def test_the_committed_plan_is_what_the_script_writes_and_keeps_finished_parts(tmp_path, capsys):
    """benchmarks/matbench_plan.tsv: every (task, model) the estimate prices and the pruning keeps --
    the CHGNet and SevenNet parents' first-pass models included -- once per seed and fold; re-planned
    with the flags in its header (as it was written) it comes out the same, its kept parts line for line."""
    estimate = _estimate_module()
    committed = (REPO / "benchmarks" / "matbench_plan.tsv").read_text()
    written_by = committed.splitlines()[1]  # "# written by: python ... --plan ... <flags> (an ESTIMATE)"
    flags = written_by.split("--plan ... ")[1].removesuffix(" (an ESTIMATE)").split()
    keep = int(flags[flags.index("--keep-parts") + 1])
    plan = tmp_path / "plan.tsv"
    # a stale plan: the kept parts as committed, the later parts lost -- they are packed again
    plan.write_text("".join(line + "\n" for line in committed.splitlines()
                            if line.startswith("#") or int(line.split("\t")[0]) <= keep))
    assert estimate.main([str(REPO / "benchmarks" / "results" / "matbench"), "--plan", str(plan), *flags]) == 0
    assert plan.read_text() == committed
    covered = {}
    for line in committed.splitlines():
        if not line.startswith("#"):
            _, _, _, task, comp, model, seeds, folds, *_ = line.split("\t")
            for s in seeds.split():
                for k in folds.split():
                    covered[(task, comp, model, s, k)] = covered.get((task, comp, model, s, k), 0) + 1
    assert set(covered.values()) == {1}
    pairs = {(t, c, m) for t, c, m, *_ in covered}
    # 3 seeds x 5 folds; the composition-only tasks' protocol (--composition-protocol steps): 1 seed
    assert len(covered) == sum(5 if c == "1" else 15 for _, c, _ in pairs)
    assert {s for (_, c, _, s, _) in covered if c == "1"} == {"0"}
    assert ("matbench_jdft2d", "0", "AtomSets-V1 [CHGNet-0.3.0]") in pairs
    assert "78.7 process-hours" in capsys.readouterr().out


def test_calibration_compares_logged_wall_times_of_finished_jobs_with_the_estimate(tmp_path):
    estimate = _estimate_module()
    rows = [("matbench_steels", "AtomSets", 300.0), ("matbench_steels", "AMM-style", 30.0),
            ("matbench_mp_gap (composition only)", "AMM-style", 600.0)]
    lines = [["1", "1", "a", "matbench_steels", "0", "AtomSets", "0 1 2", "0 1 2 3 4", "300"],
             ["1", "2", "b", "matbench_steels", "0", "AMM-style", "0 1 2", "0 1 2 3 4", "30"],
             ["2", "1", "c", "matbench_mp_gap", "1", "AMM-style", "1", "0 1 2 3 4", "200"],
             ["2", "2", "d", "matbench_mp_gap", "1", "AMM-style", "2", "0", "40"],  # not done
             ["3", "1", "e", "matbench_mp_gap", "1", "AMM-style", "0", "0 1 2 3 4", "200"]]  # no wall time logged
    for job, logs in {"a": {"seed0": 100, "seed1": 200, "seed2": 300}, "b": {"": 90}, "c": {"": 500},
                      "d": {"": 1}, "e": {"": None}}.items():
        for sub, wall in logs.items():
            (tmp_path / job / sub).mkdir(parents=True, exist_ok=True)
            (tmp_path / job / sub / "log.txt").write_text("fold 0 ...\n" + (f"wall time {wall} s\n" if wall else ""))
        if job != "d":
            (tmp_path / job / "done").touch()
    sums = estimate.measured_ratios(lines, tmp_path, rows, n_seeds=3)
    assert sums == {"networks": (600.0, 300.0, 1), "forests": (590.0, 30.0 + 200.0, 2)}


def test_default_results_take_each_task_from_the_full_protocol_where_it_ran(tmp_path):
    """A task all of whose plan jobs the full protocol has finished comes from matbench_seeds
    alone (no mixing of protocols within a task); the others still come from the first pass."""
    import json

    seeded, first = tmp_path / "matbench_seeds", tmp_path / "matbench"
    for folder, task, score in [(first, "matbench_steels", 1.0), (first, "matbench_jdft2d", 2.0),
                                (seeded / "jobs" / "p01", "matbench_steels", 3.0)]:
        folder.mkdir(parents=True, exist_ok=True)
        result = _result() | {"task": task}
        result["models"] = {"AtomSets": _model([score] * 3, [0.1] * 3)}
        (folder / f"{task}.json").write_text(json.dumps(result))
    plan = tmp_path / "plan.tsv"
    plan.write_text("# part\tslot\tjob\ttask\tcomposition_only\tmodel\tseeds\tfolds\testimated_s\n"
                    "1\t1\tp01\tmatbench_steels\t0\tAtomSets\t0 1 2\t0 1 2 3 4\t10\n"
                    "1\t2\tp02\tmatbench_steels\t0\tAMM-style\t0 1 2\t0 1 2 3 4\t10\n")
    # one of steels' two jobs done: steels still comes from the first pass
    (seeded / "jobs" / "p01" / "done").write_text("")
    assert [r["models"]["AtomSets"]["mean"] for r in report.load_default_results(seeded, first, plan)] == [1.0, 2.0]
    (seeded / "jobs" / "p02").mkdir()
    (seeded / "jobs" / "p02" / "done").write_text("")
    assert report.complete_tasks(seeded, plan) == {("matbench_steels", False)}
    results = report.load_default_results(seeded, first, plan)
    assert [(r["task"], r["models"]["AtomSets"]["mean"]) for r in results] == [
        ("matbench_steels", 3.0), ("matbench_jdft2d", 2.0)]
    assert [r["task"] for r in report.load_default_results(tmp_path / "none", first, plan)] == [
        "matbench_steels", "matbench_jdft2d"]
    # a seed-ensemble job ('<model> x5') does not hold a task back; its row shows once its job is done
    with plan.open("a") as f:
        f.write("2\t1\tp03\tmatbench_steels\t0\tAtomSets x5\t0 1 2\t0 1 2 3 4\t10\n")
    result = _result() | {"task": "matbench_steels"}
    result["models"] = {"AtomSets x5": _model([2.5] * 3, [0.1] * 3)}
    result["models"]["AtomSets x5"]["settings"]["ensemble"] = 5
    (seeded / "jobs" / "p03").mkdir()
    (seeded / "jobs" / "p03" / "matbench_steels.json").write_text(json.dumps(result))  # partly run
    assert report.complete_tasks(seeded, plan) == {("matbench_steels", False)}
    assert report.unfinished_additions(seeded, plan) == {("matbench_steels", False, "AtomSets x5")}
    assert list(report.load_default_results(seeded, first, plan)[0]["models"]) == ["AtomSets"]
    (seeded / "jobs" / "p03" / "done").write_text("")
    assert list(report.load_default_results(seeded, first, plan)[0]["models"]) == ["AtomSets", "AtomSets x5"]
    # so does a sets-plus-descriptors job (issue 33's hybrids), its rows matched by the plan's name (a
    # classifier's label adds the threshold suffix)
    with plan.open("a") as f:
        f.write("2\t2\tp04\tmatbench_steels\t0\tAtomSets-V0 + descriptors\t0 1 2\t0 1 2 3 4\t10\n")
    hybrid = "AtomSets-V0 + descriptors (validation threshold)"
    result["models"] = {hybrid: _model([2.0] * 3, [0.1] * 3)}
    (seeded / "jobs" / "p04").mkdir()
    (seeded / "jobs" / "p04" / "matbench_steels.json").write_text(json.dumps(result))
    assert report.complete_tasks(seeded, plan) == {("matbench_steels", False)}
    assert ("matbench_steels", False, "AtomSets-V0 + descriptors") in report.unfinished_additions(seeded, plan)
    assert hybrid not in report.load_default_results(seeded, first, plan)[0]["models"]
    (seeded / "jobs" / "p04" / "done").write_text("")
    assert hybrid in report.load_default_results(seeded, first, plan)[0]["models"]


_FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for the runner: records its call, counts the calls running beside it, fails where told
[[ $1 == -m ]] || exit 0  # the report step
out=${@: -1}; seeds=$(echo "$@" | sed 's/.*--seeds \\(.*\\) --folds.*/\\1/')
echo "$seeds $out" >> "$FAKE_DIR/calls"
printf '%s|' "$@" >> "$FAKE_DIR/args"; echo >> "$FAKE_DIR/args"
touch "$FAKE_DIR/running.$$"; ls "$FAKE_DIR"/running.* | wc -l >> "$FAKE_DIR/beside"
sleep 0.4; rm "$FAKE_DIR/running.$$"
[[ " $FAIL " == *" $out "* ]] && exit 1
echo '{}' > "$out/matbench_fake.json"
"""


def _run_script(tmp_path, jobs, workers, fail="", which="jobs"):
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(tmp_path / "python"), "PLAN": str(tmp_path / "plan.tsv"),
           "JOBS": jobs, "WORKERS": workers, "FAKE_DIR": str(tmp_path), "FAIL": fail, "MATMINER_DATA": "-"}
    return subprocess.run(["bash", str(REPO / "benchmarks" / "run_matbench.sh"), which, str(tmp_path / "res")],
                          env=env, capture_output=True, text=True, timeout=60)


def test_run_matbench_workers_run_each_seed_once_and_finish_a_job_only_with_all_its_seeds(tmp_path):
    (tmp_path / "python").write_text(_FAKE_PYTHON)
    (tmp_path / "python").chmod(0o755)
    (tmp_path / "plan.tsv").write_text("# part\tslot\tjob\n"
                                       "1\t1\tpa\tmatbench_steels\t0\tAtomSets\t0 1 2\t0 1 2 3 4\t10\n"
                                       "1\t2\tpb\tmatbench_steels\t0\tAMM-style\t0 1\t0 1\t10\n"
                                       "2\t1\tpc\tmatbench_glass\t0\tAtomSets\t0\t0\t10\n"
                                       "3\t1\tpd\tmatbench_steels\t0\tAtomSets-V0 [CHGNet-0.3.0] x5\t0\t0\t10\n")
    jobs = tmp_path / "res" / "matbench_seeds" / "jobs"
    failing = f"{jobs}/pa/seed1"
    run = _run_script(tmp_path, "pa pb", "2", fail=failing)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"FAILED pa seed 1 (see {failing}/log.txt)" in run.stdout
    calls = sorted((tmp_path / "calls").read_text().splitlines())
    assert calls == sorted(f"{s} {jobs}/{j}/seed{s}" for j, seeds in (("pa", "012"), ("pb", "01")) for s in seeds)
    beside = [int(n) for n in (tmp_path / "beside").read_text().split()]
    assert max(beside) == 2  # two at a time, never more
    assert not (jobs / "pa" / "done").exists() and (jobs / "pa" / "seed0" / "done").exists()
    assert (jobs / "pb" / "done").exists() and not (jobs / "pc").exists()
    listed = _run_script(tmp_path, "", "1", which="list").stdout.splitlines()
    assert listed[0].startswith("part 1 slot 1: 0.00 h estimated, 0/1 jobs done")
    assert listed[1].startswith("part 1 slot 2: 0.00 h estimated, 1/1 jobs done") and listed[-1].startswith("1/4 jobs")

    (tmp_path / "calls").unlink()
    run = _run_script(tmp_path, "pa pb", "2")  # the rerun does only what is missing
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [f"1 {jobs}/pa/seed1"]
    assert (jobs / "pa" / "done").exists() and "skip pb (done)" in run.stdout

    for bad in ("0", "two"):
        run = _run_script(tmp_path, "pc", bad)
        assert run.returncode == 2 and "WORKERS must be a whole number" in run.stderr
    assert not (jobs / "pc").exists()
    (tmp_path / "calls").unlink()
    run = _run_script(tmp_path, "pc", "1")  # one process per job, as without WORKERS
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [f"0 {jobs}/pc"] and (jobs / "pc" / "done").exists()
    # '<model> xK' in the plan: the model, as a seed ensemble of K nets
    assert "|--models|AtomSets|--seeds|0|" in (tmp_path / "args").read_text().splitlines()[-1]
    run = _run_script(tmp_path, "pd", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    args = (tmp_path / "args").read_text().splitlines()[-1]
    assert "|--models|AtomSets-V0 [CHGNet-0.3.0]|--seeds|0|" in args and f"|--ensemble|5|--selected-from|{jobs}|" in args


def test_protocol_options_study_pairs_each_variant_with_its_base_run(tmp_path):
    """benchmarks/protocol_options.py: a variant's line gives its mean ± seed std, the paired
    difference from the base run per seed, and how often the option's alternative was chosen."""
    import json

    spec = importlib.util.spec_from_file_location("protocol_options", REPO / "benchmarks" / "protocol_options.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    case, task, model, base = study.CASES[0]
    assert study.grid(base, "dropout") == [f"{k}={v}" for k, v in base.items()] + ["dropout=0.0,0.1"]

    def write(variant, scores, chosen):
        folds = [{"seed": s, "fold": k, "score": scores[i], "selection": {"chosen": {**base, **chosen[i]}}}
                 for i, (s, k) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)])]
        where = study.folder(case, variant, tmp_path)
        where.mkdir(parents=True)
        (where / f"{task}.json").write_text(json.dumps({"models": {model: {"folds": folds}}}))

    write("base", [10.0, 12.0, 11.0, 13.0], [{}] * 4)
    write("dropout", [10.0, 10.0, 11.0, 15.0], [{"dropout": d} for d in (0.0, 0.1, 0.0, 0.1)])
    lines = study.summary(tmp_path)
    assert lines[0] == f"{task} {model} base: MAE 11.5 ± 0.71 over 2 seeds"
    assert lines[1] == (f"{task} {model} dropout: MAE 11.5 ± 2.1 over 2 seeds; minus base +0 ± 1.4 over seeds "
                        "(per seed -1, +1); an alternative chosen in 2 of 4 fits, better than base on test in 1")


def test_richer_sets_study_pairs_the_new_model_and_reselects_on_validation_only():
    """benchmarks/richer_sets.py: the new model against AtomSets-V0+V1 per seed and fold, and the
    validation-selected row recomputed with it as a candidate (picked on validation scores, not test)."""
    spec = importlib.util.spec_from_file_location("richer_sets", REPO / "benchmarks" / "richer_sets.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    report = study.report
    keys = [(0, 0), (0, 1), (1, 0), (1, 1)]

    def model(scores, validation):
        folds = [{"seed": s, "fold": k, "score": x, "validation_score": v}
                 for (s, k), x, v in zip(keys, scores, validation)]
        return report._summarise({"folds": folds})

    full = {"task": "matbench_jdft2d", "metric": "mae", "models": {
        study.BASE: model([10, 12, 11, 13], [5, 5, 5, 5]), "AtomSets-V1": model([20, 20, 20, 20], [4, 6, 4, 6])}}
    full["models"][report.SELECTED] = report.validation_selected(full)
    # the new model has the best test scores everywhere but the best validation score in two fits only
    new = {"task": "matbench_jdft2d", "models": {study.MODEL: model([9, 9, 9, 9], [3, 7, 7, 3])}}
    lines = study.compare(new, full)
    assert lines[2] == (f"  {study.MODEL} minus {study.BASE}: -2.5 ± 0.71 over seeds (per seed -2, -3); "
                        "lower in 4 of 4 fits")
    # picks: (0,0) new 9 vs V1 20; (0,1) base 12 both; (1,0) V1 20 both; (1,1) new 9 vs base 13
    assert lines[3].startswith(f"matbench_jdft2d validation-selected with {study.MODEL} a candidate: MAE 12.5 ")
    assert lines[5] == (f"  difference: -3.75 ± 2.5 over seeds; {study.MODEL} chosen in 2 of 4 fits, "
                        "lower than the table's pick in 2")
    partial = {"task": "matbench_jdft2d", "models": {study.MODEL: model([9, 9], [3, 7])}}
    assert study.compare(partial, full) == [f"matbench_jdft2d: {study.MODEL} has run 2 of the 4 fits of "
                                            f"{study.BASE} so far"]


def test_the_headline_recommends_by_the_rule_fixed_in_advance_and_states_the_verdict(tmp_path):
    """One row per task: the validation-selected row, as its largest ensemble where there is one
    (never the model with the best test score), the anchors, the margin and whether it is beyond
    the seed spread; every task of the table has a row, run or not."""
    result = _result()
    result["task"] = "matbench_steels"
    result["models"][report.SELECTED] = dict(report.validation_selected(result), seed_std=0.5, n_seeds=3)
    assert report.recommended(result) == report.SELECTED  # not 'AtomSets' (best on test), not the forest
    for name in ("AtomSets", "AtomSets-V0"):  # x5 ensembles grown from each candidate's selected net
        grown = _model([1.0, 1.0, 1.0], [f["validation_score"] for f in result["models"][name]["folds"]])
        grown["settings"]["ensemble"] = 5
        for f in grown["folds"]:
            f["ensemble"] = {"n_estimators": 5, "of_selected": True}
        result["models"][f"{name} x5"] = grown
    result["models"][f"{report.SELECTED} x5"] = dict(result["models"][report.SELECTED], mean=90.0)
    assert report.recommended(result) == f"{report.SELECTED} x5"
    row = next(line for line in report.headline([result]).splitlines() if line.startswith("| matbench_steels"))
    assert "| AtomSets (validation-selected) x5 | 90 ± 0.5 | 97.49 | 103.51 | 87.76 | - | 79.95 (TPOT-Mat) |" in row
    assert "beats by 7.49, seed std 0.5 (margin beyond the seed spread)" in row  # vs AMMExpress v2020 97.49
    assert "does NOT beat (short by 10" in row and row.endswith("| full: 3 seeds, selection on inner validation |")
    assert sum(line.startswith("| matbench_") for line in report.headline([result]).splitlines()) == 13
    steps = {**result, "composition_only": True, "settings": {"patience_steps": 5000, "max_steps": 50000}}
    row = next(line for line in report.headline([steps]).splitlines() if line.startswith("| matbench_steels"))
    assert row.endswith("| composition protocol: 3 seeds, patience 5000 / cap 50000 optimizer steps, selection on "
                        "inner validation, compositions only (the anchors used structures) |")
    classifier = {**_result(), "task": "matbench_glass", "metric": "rocauc"}
    classifier["models"] = {report.SELECTED: _model([0.8], [0.1]),
                            report.selected_label(threshold=True): _model([0.7], [0.1])}
    assert report.recommended(classifier) == report.selected_label(threshold=True)  # the protocol's threshold
    assert report.headline_figure([result, classifier], tmp_path / "headline.png") and (tmp_path / "headline.png").is_file()
