"""MutualInfoSelector: NMI relevance against sklearn's own NMI, redundancy, the sklearn contract."""

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import normalized_mutual_info_score
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_atomsets import MutualInfoSelector
from sklearn_atomsets._selection import _bins


@parametrize_with_checks([MutualInfoSelector(n_features=2)])
def test_sklearn_contract(estimator, check):
    check(estimator)


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 2))
    X = np.hstack([signal, signal[:, :1] + 1e-3 * rng.normal(size=(n, 1)), rng.normal(size=(n, 5))])
    y = np.sin(2 * signal[:, 0]) + 0.5 * signal[:, 1] + 0.05 * rng.normal(size=n)
    return X, y


def test_relevance_is_sklearns_nmi_of_the_binned_columns():
    X, y = _data()
    selector = MutualInfoSelector(n_features=3, n_bins=8).fit(X, y)
    binned, target = _bins(X, 8), _bins(y[:, None], 8)[:, 0]
    expected = [normalized_mutual_info_score(binned[:, j], target, average_method="geometric") for j in range(X.shape[1])]
    np.testing.assert_allclose(selector.relevance_, expected, rtol=1e-10, atol=1e-12)


def test_a_copy_of_a_chosen_feature_is_not_chosen_again():
    X, y = _data()
    selector = MutualInfoSelector(n_features=2).fit(X, y)
    assert selector.relevance_[2] > selector.relevance_[1]  # the copy is more relevant than the 2nd signal
    # but redundant with the first signal: one of the pair, then the second signal
    assert selector.ranking_[0] in (0, 2) and selector.ranking_[1] == 1
    assert selector.transform(X).shape == (len(X), 2)
    assert MutualInfoSelector(n_features=100).fit(X, y).transform(X).shape == X.shape  # all, if fewer


def test_missing_values_are_a_bin_of_their_own_and_class_targets_work():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=400)
    informative = np.where(y == 2, np.nan, rng.normal(size=400))  # missing exactly for class 2
    X = np.column_stack([rng.normal(size=400), informative, rng.normal(size=400)])
    selector = MutualInfoSelector(n_features=1).fit(X, np.array(["a", "b", "c"])[y])
    assert selector.ranking_.tolist() == [1]


def test_feature_names_follow_the_selection():
    pd = pytest.importorskip("pandas")
    X, y = _data()
    frame = pd.DataFrame(X, columns=[f"d{j}" for j in range(X.shape[1])])
    selector = MutualInfoSelector(n_features=2).fit(frame, y)
    assert selector.get_feature_names_out().tolist() == [f"d{j}" for j in sorted(selector.ranking_)]
    assert sorted(selector.get_feature_names_out()) in (["d0", "d1"], ["d1", "d2"])
    with pytest.raises(ValueError, match="feature names"):
        selector.transform(frame[frame.columns[::-1]])


def test_size_chosen_by_grid_search_on_inner_folds_only():
    X, y = _data(n=300)
    pipe = make_pipeline(MutualInfoSelector(), RandomForestRegressor(n_estimators=20, random_state=0))
    search = GridSearchCV(pipe, {"mutualinfoselector__n_features": [1, 2, 6]}, cv=KFold(3), scoring="neg_mean_absolute_error")
    search.fit(X[:240], y[:240])
    assert search.best_params_["mutualinfoselector__n_features"] in (2, 6)  # the two signals beat one
    # the refit selector saw the training rows alone: poisoning the held-out targets changes nothing
    fitted = search.best_estimator_.named_steps["mutualinfoselector"]
    again = MutualInfoSelector(n_features=fitted.n_features).fit(X[:240], y[:240])
    assert fitted.ranking_.tolist() == again.ranking_.tolist()


def test_bad_targets_are_named():
    X, y = _data(n=50)
    y = y.copy()
    y[3] = np.nan
    with pytest.raises(ValueError):
        MutualInfoSelector().fit(X, y)
