"""Issue 34 (estimator items): sample weights, skorch's prefixed parameters and callbacks,
warm start, feature names, device and all-NaN-row errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.validation import has_fit_parameter
from skorch.callbacks import Callback

from sklearn_atomsets import (
    AtomSetsClassifier,
    AtomSetsEnsembleRegressor,
    AtomSetsRegressor,
    MLPfClassifier,
    MLPfRegressor,
    WeightedSet,
)

from .conftest import TRAINED_RTOL, assert_float32_close

ALL = [AtomSetsRegressor, AtomSetsClassifier, MLPfRegressor, MLPfClassifier]


def _sets(n=30, seed=0):
    rng = np.random.default_rng(seed)
    X = [WeightedSet(rng.normal(size=(rng.integers(1, 5), 4))) for _ in range(n)]
    y = np.array([s.features[:, 0].mean() * 2 + 1 for s in X])
    return X, y


@pytest.mark.parametrize("cls", ALL + [AtomSetsEnsembleRegressor])
def test_fit_takes_sample_weight(cls):
    assert has_fit_parameter(cls(), "sample_weight")


@pytest.mark.parametrize("standardize", [False, True])
def test_integer_sample_weights_equal_duplicated_rows(standardize):
    """One batch per epoch (batch_size > rows), no validation split, a fixed number of epochs:
    the weighted loss is then the mean loss over the duplicated rows, so the two fits agree
    within float32 error; weights of 1 too. Shuffling only reorders the one batch."""
    X, y = _sets(30)
    w = np.random.default_rng(1).integers(0, 4, size=30)
    w[0] = 3
    X_dup = [x for x, k in zip(X, w) for _ in range(k)]
    y_dup = np.repeat(y, w)
    params = dict(max_epochs=40, validation_fraction=None, batch_size=512, random_state=0, lr=1e-2,
                  standardize_features=standardize)
    weighted = AtomSetsRegressor(**params).fit(X, y, sample_weight=w)
    repeated = AtomSetsRegressor(**params).fit(X_dup, y_dup)
    np.testing.assert_allclose(weighted.target_mean_, repeated.target_mean_, rtol=1e-12)
    np.testing.assert_allclose(weighted.target_scale_, repeated.target_scale_, rtol=1e-12)
    assert_float32_close(weighted.predict(X), repeated.predict(X), TRAINED_RTOL, scale=np.ptp(y))
    plain = AtomSetsRegressor(**params).fit(X, y)
    assert np.abs(plain.predict(X) - weighted.predict(X)).max() > 1e-2 * np.ptp(y)  # the weights matter
    ones = AtomSetsRegressor(**params).fit(X, y, sample_weight=np.ones(30))
    assert_float32_close(ones.predict(X), plain.predict(X), TRAINED_RTOL, scale=np.ptp(y))


def test_class_weight_balanced_equals_duplicating_the_small_class():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(30, 3))
    labels = np.array([0] * 20 + [1] * 10)
    params = dict(max_epochs=30, validation_fraction=None, batch_size=512, random_state=0, lr=1e-2)
    balanced = MLPfClassifier(**params, class_weight="balanced").fit(F, labels)
    # balanced weights 0.75 and 1.5: the same as weights 1 and 2, i.e. the small class twice
    doubled = MLPfClassifier(**params).fit(np.vstack([F, F[20:]]), np.r_[labels, labels[20:]])
    assert_float32_close(balanced.predict_proba(F), doubled.predict_proba(F), TRAINED_RTOL, scale=1.0)
    as_dict = MLPfClassifier(**params, class_weight={0: 1.0, 1: 2.0}).fit(F, labels)
    assert_float32_close(as_dict.predict_proba(F), doubled.predict_proba(F), TRAINED_RTOL, scale=1.0)
    with pytest.raises(ValueError, match="class_weight"):
        MLPfClassifier(class_weight="equal").fit(F, labels)


@pytest.mark.parametrize(("w", "match"), [
    (-np.ones(6), "Negative values"), (np.ones(5), r"sample_weight.shape == \(5,\), expected \(6,\)"),
    (np.r_[np.ones(5), np.nan], "NaN"), (np.zeros(6), "at least one non-zero"),
])
def test_bad_sample_weights_are_refused(w, match):
    with pytest.raises(ValueError, match=match):
        AtomSetsRegressor(max_epochs=1).fit(np.ones((6, 2)), np.arange(6.0), sample_weight=w)


def test_sample_weight_through_pipeline_cross_val_score_and_ensemble():
    import sklearn

    X, y = _sets(40)
    w = np.arange(40) % 3 + 0.5
    model = AtomSetsRegressor(max_epochs=3, random_state=0)
    pipe = Pipeline([("identity", FunctionTransformer(validate=False)), ("model", model)])
    pipe.fit(X, y, model__sample_weight=w)
    with sklearn.config_context(enable_metadata_routing=True):
        routed = Pipeline([("identity", FunctionTransformer(validate=False)),
                           ("model", clone(model).set_fit_request(sample_weight=True))])
        from sklearn.metrics import make_scorer, mean_absolute_error

        weighted_mae = make_scorer(mean_absolute_error, greater_is_better=False).set_score_request(sample_weight=True)
        scores = cross_val_score(routed, X, y, cv=2, scoring=weighted_mae, params={"sample_weight": w})
    assert np.isfinite(scores).all()
    ens = AtomSetsEnsembleRegressor(AtomSetsRegressor(max_epochs=3, validation_fraction=None), n_estimators=2,
                                    random_state=0).fit(X, y, sample_weight=w)
    assert len(ens.estimators_) == 2


def test_weighted_validation_score_is_the_weighted_mae():
    X, y = _sets(60)
    w = np.random.default_rng(2).uniform(0.1, 2, size=60)
    model = AtomSetsRegressor(max_epochs=5, random_state=3).fit(X, y, sample_weight=w)
    idx = model.validation_indices_
    err = np.abs(model.predict([X[i] for i in idx]) - y[idx])
    assert model.best_validation_score_ == pytest.approx(np.average(err, weights=w[idx]), rel=1e-5)


class _Count(Callback):
    def initialize(self):
        self.epochs = 0
        return self

    def on_epoch_end(self, net, **kwargs):
        self.epochs += 1


def test_skorch_prefixed_params_and_callbacks_reach_the_net():
    X, y = _sets(40)
    cb = _Count()
    model = AtomSetsRegressor(max_epochs=4, optimizer=torch.optim.SGD, optimizer__momentum=0.9,
                              iterator_train__batch_size=7, callbacks=[("count", cb)],
                              callbacks__early_stopping__threshold=0.5)
    params = model.get_params()
    assert params["optimizer__momentum"] == 0.9 and clone(model).get_params()["iterator_train__batch_size"] == 7
    model.fit(X, y)
    net = model.net_
    assert net.optimizer_.defaults["momentum"] == 0.9 and net.iterator_train__batch_size == 7
    callbacks = dict(net.callbacks_)
    assert callbacks["count"].epochs == 4 and callbacks["early_stopping"].threshold == 0.5
    assert not hasattr(cb, "epochs")  # the parameter itself is left as given
    model.set_params(optimizer__momentum=0.5, optimizer__nesterov=True)
    assert model.fit(X, y).net_.optimizer_.defaults["nesterov"] is True
    grid = GridSearchCV(AtomSetsRegressor(max_epochs=2, optimizer=torch.optim.SGD),
                        {"optimizer__momentum": [0.0, 0.9]}, cv=2).fit(X, y)
    assert grid.best_estimator_.net_.optimizer_.defaults["momentum"] in (0.0, 0.9)
    with pytest.raises(TypeError, match=r"AtomSetsRegressor got unexpected parameter\(s\) \['momentum'\]"):
        AtomSetsRegressor(momentum=0.9).fit(X, y)
    with pytest.raises(TypeError, match=r"MLPfClassifier got unexpected parameter\(s\) \['module__n_features'\]"):
        MLPfClassifier(module__n_features=3).fit(np.ones((4, 2)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="Invalid parameter 'momentum' for estimator AtomSetsRegressor"):
        AtomSetsRegressor().set_params(momentum=0.9)


def test_warm_start_continues_from_the_previous_weights():
    X, y = _sets(40)
    params = dict(max_epochs=6, validation_fraction=None, random_state=0, batch_size=512)
    once = AtomSetsRegressor(**params, warm_start=True).fit(X, y)
    first = once.predict(X)
    twice = once.fit(X, y).predict(X)
    cold = AtomSetsRegressor(**params).fit(X, y)
    np.testing.assert_array_equal(cold.predict(X), first)
    assert np.abs(twice - first).max() > 0
    long = AtomSetsRegressor(**{**params, "max_epochs": 12}).fit(X, y)
    # 6 + 6 epochs (Adam restarted) is closer to 12 epochs than to 6
    assert np.abs(twice - long.predict(X)).mean() < np.abs(first - long.predict(X)).mean()
    with pytest.raises(ValueError, match="warm_start"):
        once.fit(np.ones((4, 3)), np.arange(4.0))


def test_feature_names_are_set_and_checked():
    F = pd.DataFrame(np.random.default_rng(0).normal(size=(30, 3)), columns=["a", "b", "c"])
    model = MLPfRegressor(max_epochs=2, validation_fraction=None).fit(F, F["a"])
    assert model.feature_names_in_.tolist() == ["a", "b", "c"] and model.n_features_in_ == 3
    with pytest.raises(ValueError, match="feature names should match"):
        model.predict(F[F.columns[::-1]])
    X, y = _sets(20)
    frame = pd.DataFrame({"v1 sets": X})
    sets_model = AtomSetsRegressor(max_epochs=2, validation_fraction=None).fit(frame, y)
    assert sets_model.feature_names_in_.tolist() == ["v1 sets"] and sets_model.n_features_in_ == 4
    with pytest.raises(ValueError, match="feature names should match"):
        sets_model.predict(frame.rename(columns={"v1 sets": "other"}))
    assert not hasattr(AtomSetsRegressor(max_epochs=1).fit(X, y), "feature_names_in_")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_cuda_on_a_cpu_only_torch_fails_in_fit_naming_device():
    with pytest.raises(ValueError, match="device='cuda' cannot be used"):
        AtomSetsRegressor(device="cuda").fit(np.ones((4, 2)), np.arange(4.0))


def test_all_nan_row_gives_the_handle_missing_message():
    F = np.random.default_rng(0).normal(size=(10, 3))
    F[4] = np.nan
    with pytest.raises(ValueError, match="Sample 4 has no set .*all NaN.*handle_missing='ignore'"):
        MLPfRegressor(max_epochs=1).fit(F, np.arange(10.0))
