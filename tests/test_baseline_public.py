"""The AutoMatminer-style baseline as a public, configurable part of the API (issue 34, item 6)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from matminer.featurizers.base import BaseFeaturizer

import sklearn_atomsets
from sklearn_atomsets import ElementSetFeaturizer, automatminer_style_pipeline, load_matbench_task

FORMULAS = ["SiO2", "Fe2O3", "NaCl", "MgO", "Al2O3", "TiO2", "ZnO", "CaO"] * 3
GAPS = np.array([9.0, 2.2, 8.5, 7.8, 8.8, 3.2, 3.4, 7.1] * 3)


def test_baseline_and_fold_loader_are_public_and_in_the_api_reference():
    from pathlib import Path

    api = (Path(__file__).resolve().parents[1] / "docs" / "api.rst").read_text()
    for name in ("automatminer_style_pipeline", "MatminerFeatures", "default_matminer_featurizers",
                 "load_matbench_task"):
        assert name in sklearn_atomsets.__all__ and f"   {name}\n" in api


@pytest.mark.parametrize("n_jobs", [None, 1, 2])
def test_n_jobs_reaches_the_selector_and_the_forest(n_jobs):
    pipe = automatminer_style_pipeline("regression", "composition", n_jobs=n_jobs)
    assert pipe.get_params()["select__estimator__n_jobs"] == n_jobs
    assert pipe.get_params()["model__n_jobs"] == n_jobs


def test_a_set_valued_featurizer_is_refused_by_name():
    pipe = automatminer_style_pipeline("regression", "composition", extra_featurizers=[ElementSetFeaturizer()],
                                       include_default=False, n_estimators=5)
    with pytest.raises(TypeError, match="ElementSetFeaturizer gives WeightedSet features, not numbers"):
        pipe.fit(FORMULAS, GAPS)


class _Warns(BaseFeaturizer):
    """A featurizer that warns about something the user should see."""

    def featurize(self, x):
        warnings.warn("this featurizer's own warning", UserWarning)
        return [float(len(str(x)))]

    def feature_labels(self):
        return ["length"]

    def citations(self):
        return []

    def implementors(self):
        return ["tests"]


def test_featurizer_warnings_reach_the_user():
    pipe = automatminer_style_pipeline("regression", "composition", extra_featurizers=[_Warns()],
                                       include_default=False, n_estimators=5)
    with pytest.warns(UserWarning, match="this featurizer's own warning"):
        pipe.fit(FORMULAS, GAPS)


def test_fold_loader_gives_the_official_folds(tmp_path):
    from .conftest import SHARED_MATBENCH

    if not (SHARED_MATBENCH / "matbench_steels.json.gz").is_file():
        pytest.skip(f"MatBench steels not found at {SHARED_MATBENCH}")
    task = load_matbench_task("matbench_steels", download=False)
    X_train, y_train, X_test, y_test = task.split(0)
    assert len(X_train) + len(X_test) == len(task.inputs) == 312
    assert not set(X_train.index) & set(X_test.index)
