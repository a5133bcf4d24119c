"""Seed ensembles of AtomSets nets (sklearn_atomsets/_ensemble.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_atomsets import AtomSetsClassifier, AtomSetsRegressor
from sklearn_atomsets import AtomSetsEnsembleClassifier, AtomSetsEnsembleRegressor

from .conftest import assert_float32_close


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = [rng.integers(1, 40, size=rng.integers(1, 5)) for _ in range(n)]
    return X, np.array([float(x.mean()) for x in X])


def test_regressor_mean_and_std_are_those_of_its_members():
    X, y = _data()
    model = AtomSetsEnsembleRegressor(AtomSetsRegressor(max_epochs=4, patience=4), n_estimators=3,
                                      random_state=1).fit(X, y)
    assert len(model.estimators_) == 3 and len(set(model.seeds_)) == 3
    assert [e.random_state for e in model.estimators_] == model.seeds_
    members = np.stack([e.predict(X) for e in model.estimators_])
    mean, std = model.predict(X, return_std=True)
    assert_float32_close(mean, members.mean(axis=0))
    assert_float32_close(std, members.std(axis=0))
    assert (std > 0).all()  # the members really differ
    np.testing.assert_array_equal(model.predict(X), mean)
    assert len(model.best_validation_scores_) == 3 and all(s > 0 for s in model.best_validation_scores_)
    # the same random_state gives the same members and predictions
    again = clone(model).fit(X, y)
    assert again.seeds_ == model.seeds_
    assert_float32_close(again.predict(X), mean)


def test_one_member_has_zero_spread_and_bad_parameters_are_named():
    X, y = _data()
    one = AtomSetsEnsembleRegressor(AtomSetsRegressor(max_epochs=2, validation_fraction=None), n_estimators=1,
                                    random_state=0).fit(X, y)
    mean, std = one.predict(X[:5], return_std=True)
    np.testing.assert_array_equal(std, 0.0)
    assert_float32_close(mean, one.estimators_[0].predict(X[:5]))
    with pytest.raises(InvalidParameterError, match="n_estimators"):
        AtomSetsEnsembleRegressor(n_estimators=0).fit(X, y)
    with pytest.raises(NotFittedError):
        AtomSetsEnsembleRegressor().predict(X)
    with pytest.raises(ValueError, match="no random_state"):
        from sklearn.linear_model import LinearRegression

        AtomSetsEnsembleRegressor(LinearRegression(), n_estimators=2).fit(np.ones((4, 1)), np.arange(4.0))
    assert isinstance(AtomSetsEnsembleRegressor()._default(), AtomSetsRegressor)


def test_classifier_averages_probabilities():
    X, y = _data(80)
    labels = y > np.median(y)
    clf = AtomSetsEnsembleClassifier(AtomSetsClassifier(max_epochs=4, patience=4), n_estimators=3,
                                     random_state=0).fit(X, labels)
    members = np.stack([e.predict_proba(X) for e in clf.estimators_])
    proba, std = clf.predict_proba(X, return_std=True)
    assert_float32_close(proba, members.mean(axis=0))
    assert_float32_close(std, members.std(axis=0))
    assert_float32_close(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    assert clf.classes_.tolist() == [False, True] and clf.score(X, labels) > 0


@pytest.mark.parametrize("cls, base", [(AtomSetsEnsembleRegressor, AtomSetsRegressor),
                                       (AtomSetsEnsembleClassifier, AtomSetsClassifier)])
def test_fit_from_keeps_the_fitted_net_and_trains_the_members_fit_would(cls, base):
    """``fit_from(fitted, X, y)``: the fitted net is the first member, untouched; the others are
    the members ``fit`` trains with the same random_state (same seeds, same predictions)."""
    X, y = _data(80)
    if cls is AtomSetsEnsembleClassifier:
        y = y > np.median(y)
    first = base(max_epochs=4, patience=4, random_state=11).fit(X, y)
    before = first.predict(X[:10])
    grown = cls(n_estimators=3, random_state=5).fit_from(first, X, y)
    full = cls(base(max_epochs=4, patience=4), n_estimators=3, random_state=5).fit(X, y)
    assert grown.estimators_[0] is first and grown.seeds_[0] == 11 and grown.seeds_[1:] == full.seeds_[1:]
    np.testing.assert_array_equal(first.predict(X[:10]), before)  # not refitted
    for a, b in zip(grown.estimators_[1:], full.estimators_[1:]):
        out = (lambda e: e.predict_proba(X) if hasattr(e, "predict_proba") else e.predict(X))  # noqa: E731
        assert_float32_close(out(a), out(b))
    if cls is AtomSetsEnsembleClassifier:
        assert grown.classes_.tolist() == [False, True]
    with pytest.raises(NotFittedError):
        cls(n_estimators=2).fit_from(base(), X, y)
    with pytest.raises(ValueError, match="integer random_state"):
        cls(n_estimators=2).fit_from(base(max_epochs=2, random_state=None).fit(X, y), X, y)
    with pytest.raises(InvalidParameterError, match="n_estimators"):
        cls(n_estimators=0).fit_from(first, X, y)
