"""AtomSets (trainable element embedding, no transfer learning) on real MatBench data.

Held-out split: the official MatBench fold 0 (its test part is never seen in training).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, roc_auc_score

from sklearn_atomsets import AtomSetsClassifier, AtomSetsRegressor, WeightedSet

from .conftest import needs_matbench


def fold0(name):
    from sklearn_atomsets._matbench import load_matbench_task

    task = load_matbench_task(name, download=False)
    X_train, y_train, X_test, y_test = task.split(0)
    to_sets = lambda compositions: [WeightedSet.from_composition(c) for c in compositions]  # noqa: E731
    return to_sets(X_train), y_train.to_numpy(), to_sets(X_test), y_test.to_numpy()


pytestmark = [needs_matbench, pytest.mark.shared]


@pytest.mark.parametrize(("task", "max_ratio"), [("matbench_steels", 0.6), ("matbench_expt_gap", 0.6)])
def test_atomsets_beats_the_mean_predictor_by_a_wide_margin(task, max_ratio):
    X_train, y_train, X_test, y_test = fold0(task)
    model = AtomSetsRegressor(max_epochs=400, patience=40, readout="set2set", random_state=0).fit(X_train, y_train)
    mae = mean_absolute_error(y_test, model.predict(X_test))
    dummy = mean_absolute_error(y_test, np.full(len(y_test), y_train.mean()))
    assert mae < max_ratio * dummy, f"{task}: MAE {mae:.3f} vs mean predictor {dummy:.3f}"


def test_metal_classifier_reaches_roc_auc_above_085():
    X_train, y_train, X_test, y_test = fold0("matbench_expt_is_metal")
    clf = AtomSetsClassifier(max_epochs=300, patience=30, random_state=0).fit(X_train, y_train)
    auc = roc_auc_score(y_test, clf.predict_proba(X_test)[:, list(clf.classes_).index(True)])
    assert auc > 0.85, f"ROC-AUC {auc:.3f}"
