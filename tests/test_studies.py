"""The paper-study script (benchmarks/paper_studies.py): its bookkeeping, and one short real run."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch

from .conftest import REPO, SHARED_MODELS, needs_matbench, needs_shared_models

spec = importlib.util.spec_from_file_location("paper_studies", REPO / "benchmarks" / "paper_studies.py")
studies = importlib.util.module_from_spec(spec)
spec.loader.exec_module(studies)


def _run(model, size, n_train, score, repeat=0):
    return {"model": model, "size": size, "n_train": n_train, "score": score, "repeat": repeat}


def test_convergence_summary_states_where_transfer_learning_wins():
    runs = [_run("AtomSets", 100, 100, 0.9), _run("AtomSets-V0", 100, 100, 0.6),
            _run("AtomSets", "full fold", 508, 0.40), _run("AtomSets", "full fold", 509, 0.44, repeat=1),
            _run("AtomSets-V0", "full fold", 508, 0.45), _run("AtomSets-V0", "full fold", 509, 0.47, repeat=1)]
    result = {"tasks": {"t": {"metric": "mae", "models": ["AtomSets", "AtomSets-V0"], "runs": runs}}}
    text = "\n".join(studies.convergence_summary(result))
    # full folds of 508 and 509 points are one point (mean size 508), averaged over repeats
    assert "AtomSets-V0 beats AtomSets at 1 of 2 sizes (not at [508])" in text
    assert "100: +33%" in text and "508: -10%" in text


def test_gain_is_on_error_for_auc():
    assert studies._gain(0.95, 0.90, lower=False) == pytest.approx(0.5)  # 1 - AUC halves
    assert studies._gain(2.0, 4.0, lower=True) == pytest.approx(0.5)


@needs_matbench
@needs_shared_models
def test_all_studies_run_and_write_json_and_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("SKLEARN_ATOMSETS_MODEL_DIR", str(SHARED_MODELS))
    threads = torch.get_num_threads()
    monkeypatch.setattr(studies, "MAX_EPOCHS", 3)
    monkeypatch.setattr(studies, "PATIENCE", 2)
    monkeypatch.setattr(studies, "CONVERGENCE_TASKS", {
        "matbench_jdft2d": (("AtomSets-V0", "MLP-f", "AtomSets-V1"), False),
        "matbench_log_kvrh": (("AtomSets", "AtomSets-V0"), True),
    })
    monkeypatch.setattr(studies, "EXTRAPOLATION_TASKS", {"matbench_jdft2d": (("AtomSets", "AtomSets-V0"), False)})
    monkeypatch.setattr(studies, "STRUCTURE_TASKS", ("matbench_jdft2d",))
    try:
        assert studies.main(["--out", str(tmp_path), "--plots", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    for name in studies.STUDIES:
        assert (tmp_path / f"study_{name}.png").read_bytes()[:4] == b"\x89PNG"
    conv = json.loads((tmp_path / "convergence.json").read_text())
    jdft = conv["tasks"]["matbench_jdft2d"]
    assert {(r["size"], r["model"]) for r in jdft["runs"] if r["repeat"] == 4} == {
        (n, m) for n in (100, 200, 400, "full fold") for m in ("AtomSets-V0", "MLP-f", "AtomSets-V1")}
    assert {r["n_train"] for r in jdft["runs"] if r["size"] == "full fold"} <= {508, 509}
    kvrh = conv["tasks"]["matbench_log_kvrh (composition only)"]
    assert max(r["n_train"] for r in kvrh["runs"]) == studies.LARGEST_SAMPLE
    assert conv["loss"] == "mae" and conv["max_epochs"] == 3 and conv["wall_s"] > 0

    extra = json.loads((tmp_path / "extrapolation.json").read_text())["tasks"]["matbench_jdft2d"]
    for r in extra["runs"]:  # the top 10% is never trained on
        assert r["train_max"] < extra["top10_threshold"]
        assert np.isfinite([r["mae_interpolation"], r["mae_extrapolation"]]).all()
    assert {r["scenario"] for r in extra["runs"]} == {"all below the top 10%", "bottom 50% only"}

    parents = json.loads((tmp_path / "parents.json").read_text())["tasks"]["matbench_jdft2d"]
    assert list(parents) == list(studies.PARENTS) and all(len(p["folds"]) == 5 for p in parents.values())
    assert parents["Eform_MP_2019"]["folds"] != parents["logK_MP_2019"]["folds"]  # features do differ
    h_only = json.loads((tmp_path / "structure_only.json").read_text())["tasks"]["matbench_jdft2d"]
    assert h_only["elements"] == parents["Eform_MP_2019"]  # the same run, not repeated
    assert h_only["H only"]["folds"] != h_only["elements"]["folds"]
    assert h_only["mae_ratio"] == pytest.approx(h_only["H only"]["mean"] / h_only["elements"]["mean"])


@needs_shared_models
def test_parents_are_compared_on_the_rows_every_parent_can_encode(monkeypatch, pymatgen_structures):
    import pandas as pd
    from pymatgen.core import Lattice, Structure
    from sklearn.model_selection import KFold

    from sklearn_atomsets.matbench import MATBENCH_TASKS, MatbenchTask

    monkeypatch.setenv("SKLEARN_ATOMSETS_MODEL_DIR", str(SHARED_MODELS))
    monkeypatch.setattr(studies, "MAX_EPOCHS", 2)
    monkeypatch.setattr(studies, "PATIENCE", 1)
    # one Cs atom per 4.5 A cube: its nearest neighbour is inside the 5 A cutoff of
    # Eform_MP_2019, outside the 4 A cutoff of Eform_MP_2018 and logK_MP_2019
    lonely = Structure(Lattice.cubic(4.5), ["Cs"], [[0, 0, 0]])
    structures = [*pymatgen_structures[:19], lonely]
    ids = [f"row-{i}" for i in range(len(structures))]
    folds = [(train, test) for train, test in KFold(5, shuffle=True, random_state=0).split(structures)]
    task = MatbenchTask("fake", MATBENCH_TASKS["matbench_jdft2d"], pd.Series(structures, index=ids),
                        pd.Series(np.linspace(0, 1, len(ids)), index=ids), folds)
    monkeypatch.setattr(studies, "_task", lambda name, composition_only: task)
    monkeypatch.setattr(studies, "STRUCTURE_TASKS", ("fake",))
    cache, log = {}, []

    parents = studies.parents(log.append, "mae", repeats=2, cache=cache)["tasks"]["fake"]
    for parent in studies.PARENTS:
        assert parents[parent]["n_dropped"] == 1 and parents[parent]["dropped_ids"] == ["row-19"]
        assert np.isfinite(parents[parent]["folds"]).all()
    assert any("1 of 20 structures cannot be encoded" in line for line in log)

    # structure only: every row encodes with Eform_MP_2019, so none is dropped and the
    # parents study's run (on 19 rows) is not reused
    h_only = studies.structure_only(log.append, "mae", repeats=2, cache=cache)["tasks"]["fake"]
    assert h_only["elements"]["n_dropped"] == h_only["H only"]["n_dropped"] == 0
    assert h_only["elements"] != parents["Eform_MP_2019"]


def test_mp_results_carry_the_leakage_note():
    from sklearn_atomsets.matbench.results import LEAKAGE_NOTE

    runs = [_run("AtomSets", 100, 100, 0.9), _run("AtomSets-V0", 100, 100, 0.6)]
    task = {"metric": "mae", "models": ["AtomSets", "AtomSets-V0"], "runs": runs}
    result = {"tasks": {"matbench_mp_e_form (composition only)": dict(task, task="matbench_mp_e_form"),
                        "matbench_expt_gap": dict(task, task="matbench_expt_gap")}}
    text = "\n".join(studies.convergence_summary(result))
    assert text.count(LEAKAGE_NOTE) == 1 and text.index(LEAKAGE_NOTE) < text.index("matbench_expt_gap")
    stored = studies.load_study("convergence")["tasks"]["matbench_mp_e_form (composition only)"]
    assert stored["notes"] == [LEAKAGE_NOTE]


def test_repeated_compositions_count_reduced_formulas_and_single_target_groups():
    spec = importlib.util.spec_from_file_location("repeated_compositions",
                                                  REPO / "benchmarks" / "repeated_compositions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    formulas = ["Fe2O3", "Fe4O6", "NaCl", "Na2Cl2", "KCl"]
    targets = pd.Series([1.0, 1.0, 1.0, 2.0, 3.0], index=[f"mb-{i}" for i in range(5)])
    # Fe2O3 = Fe4O6 and NaCl = Na2Cl2 once reduced; only the iron oxide's targets agree
    assert module.repeats(formulas, targets) == (5, 3, 2, 1)
