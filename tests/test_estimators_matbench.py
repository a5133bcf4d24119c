"""The paper's non-transfer-learning AtomSets model (trainable element embedding) on real
MatBench composition data.

Each task is read with ``matminer.datasets.load_dataset`` from ``../shared/data/matbench``
(beside the repository) and split once into 80 % training / 20 % held out (seed 0,
stratified for the classifier); the held-out part is never seen during training, and the
inner validation split for early stopping comes out of the training part only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, roc_auc_score
from sklearn.model_selection import train_test_split

from sklearn_atomsets import AtomSetsClassifier, AtomSetsRegressor, WeightedSet

MATBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "matbench"

pytestmark = [pytest.mark.shared, pytest.mark.slow]



def held_out_split(task):
    path = MATBENCH / f"{task}.json.gz"
    if not path.is_file():
        pytest.skip(f"{task} not found at {path} (the MatBench copies in ../shared/data/matbench)")
    from matminer.datasets import load_dataset

    df = load_dataset(task, data_home=str(MATBENCH))
    X = [WeightedSet.from_composition(c) for c in df["composition"]]
    y = df.drop(columns="composition").iloc[:, 0].to_numpy()
    stratify = y if y.dtype == bool else None
    return train_test_split(X, y, test_size=0.2, random_state=0, stratify=stratify)


# Held-out MAE relative to predicting the training mean (1.0: no skill). Measured with these
# settings on 2 CPU cores: steels 0.29 (70 vs 237 MPa), expt_gap 0.43 (0.51 vs 1.19 eV).
@pytest.mark.parametrize(
    ("task", "batch_size", "max_epochs", "max_ratio"),
    [("matbench_steels", 32, 400, 0.5), ("matbench_expt_gap", 128, 300, 0.55)],
)
def test_atomsets_beats_the_mean_predictor_by_a_wide_margin(task, batch_size, max_epochs, max_ratio):
    X_train, X_test, y_train, y_test = held_out_split(task)
    model = AtomSetsRegressor(
        batch_size=batch_size, lr=3e-3, max_epochs=max_epochs, patience=40, random_state=0
    ).fit(X_train, y_train)
    assert model.input_kind_ == "atomic_numbers"
    mae = mean_absolute_error(y_test, model.predict(X_test))
    dummy = mean_absolute_error(y_test, np.full(len(y_test), y_train.mean()))
    assert mae < max_ratio * dummy, f"{task}: held-out MAE {mae:.3f} vs mean predictor {dummy:.3f}"


# Measured with these settings: 0.96.
def test_metal_classifier_reaches_roc_auc_above_085():
    X_train, X_test, y_train, y_test = held_out_split("matbench_expt_is_metal")
    clf = AtomSetsClassifier(lr=3e-3, max_epochs=200, patience=30, random_state=0).fit(X_train, y_train)
    assert clf.classes_.tolist() == [False, True]
    auc = roc_auc_score(y_test, clf.predict_proba(X_test)[:, 1])
    assert auc > 0.85, f"held-out ROC-AUC {auc:.3f}"
