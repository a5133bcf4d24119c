"""Sets plus descriptor vectors (issue 33 item 1): a set column beside matminer descriptor
columns, joined after the readout, standardised on the training rows, missing values as
``handle_missing`` says, column names checked at predict time."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_predict, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from sklearn_atomsets import AtomicNumberSetFeaturizer, AtomSetsClassifier, AtomSetsModule, AtomSetsRegressor

FAST = dict(max_epochs=40, batch_size=16, validation_fraction=None, random_state=0, n_neurons=(16,), n_neurons_final=(16,))
FORMULAS = ["NaCl", "KCl", "MgO", "CaO", "LiF", "NaF", "Fe2O3", "SiO2", "Al2O3", "TiO2", "ZnS", "GaAs"]


@pytest.fixture(scope="module")
def frame():
    """``featurize_dataframe`` output: an atomic-number set column (the set cannot tell two
    rows of one formula apart) and matminer's Stoichiometry plus a per-row "density"; the
    target depends on the density, so only a model that reads the descriptors can fit it."""
    from matminer.featurizers.composition import Stoichiometry
    from pymatgen.core import Composition

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"composition": [Composition(f) for f in FORMULAS * 8]})
    df = AtomicNumberSetFeaturizer().featurize_dataframe(df, "composition", pbar=False)
    df = Stoichiometry(p_list=(2, 3)).featurize_dataframe(df, "composition", pbar=False)
    df["density"] = rng.uniform(1.0, 8.0, size=len(df))
    y = 2.0 * df["density"].to_numpy() + np.array([len(c) for c in df["composition"]])
    return df.drop(columns="composition"), y


def test_a_set_column_beside_descriptor_columns_fits_and_the_descriptors_are_used(frame):
    X, y = frame
    assert list(X.columns) == ["atomic number set", "2-norm", "3-norm", "density"]
    model = AtomSetsRegressor(**FAST).fit(X, y)
    assert model.n_descriptors_in_ == 3 and list(model.feature_names_in_) == list(X.columns)
    assert model.module_.rho[0].in_features == 16 + 3  # readout, then the descriptors
    sets_only = AtomSetsRegressor(**FAST).fit(X[["atomic number set"]], y)
    assert sets_only.n_descriptors_in_ == 0
    mae = np.abs(model.predict(X) - y).mean()
    mae_sets_only = np.abs(sets_only.predict(X[["atomic number set"]]) - y).mean()
    assert mae < 0.5 * mae_sets_only, (mae, mae_sets_only)


def test_descriptors_are_standardised_on_the_training_rows(frame):
    X, y = frame
    model = AtomSetsRegressor(**FAST).fit(X, y)
    descriptors = X.iloc[:, 1:].to_numpy()
    np.testing.assert_allclose(model.descriptor_mean_, descriptors.mean(axis=0))
    np.testing.assert_allclose(model.descriptor_scale_, descriptors.std(axis=0))
    buffers = dict(model.module_.named_buffers())
    np.testing.assert_allclose(buffers["descriptor_mean"].numpy(), descriptors.mean(axis=0), rtol=1e-6)


def test_a_sample_far_outside_a_nearly_constant_training_column_is_clipped_to_the_training_range(frame):
    """As matminer's "MagpieData minimum GSmagmom" on expt_gap: below 2.3e-5 in every training row,
    1.55 for one test composition (2.9e6 std out, which once gave a band gap of 7221 eV)."""
    X, y = frame
    X = X.assign(gsmagmom=np.linspace(0.0, 2e-5, len(X)))
    model = AtomSetsRegressor(**FAST).fit(X, y)
    np.testing.assert_array_equal(model.descriptor_max_, X.iloc[:, 1:].max().to_numpy())
    far, edge = X.iloc[:3].assign(gsmagmom=1.55), X.iloc[:3].assign(gsmagmom=2e-5)
    np.testing.assert_allclose(model.predict(far), model.predict(edge), rtol=1e-6)
    assert np.all(np.abs(model.predict(far)) < 10 * np.abs(y).max())
    inside = X.iloc[:3].assign(gsmagmom=1e-5)  # values inside the range are not touched
    assert not np.allclose(model.predict(inside), model.predict(edge))


def test_descriptors_never_see_the_test_rows_and_poisoned_test_targets_change_nothing(frame):
    X, y = frame
    folds = KFold(4, shuffle=True, random_state=0)
    model = AtomSetsRegressor(**FAST)
    fitted = cross_validate(model, X, y, cv=folds, return_estimator=True, return_indices=True)
    for estimator, train in zip(fitted["estimator"], fitted["indices"]["train"]):
        np.testing.assert_allclose(estimator.descriptor_mean_, X.iloc[train, 1:].to_numpy().mean(axis=0))
    clean = cross_val_predict(model, X, y, cv=folds)
    test = next(folds.split(X))[1]
    poisoned = y.copy()
    poisoned[test] = 1e6  # the first fold's test targets
    dirty = cross_val_predict(model, X, poisoned, cv=folds)
    # the first fold's test predictions come from a model that never read those targets
    np.testing.assert_array_equal(dirty[test], clean[test])
    assert not np.allclose(np.delete(dirty, test), np.delete(clean, test))  # the other folds trained on them


def test_pipeline_grid_search_clone_and_pickle_round_trip_a_frame_of_sets_and_descriptors(frame):
    X, y = frame
    pipe = Pipeline([("same", FunctionTransformer()), ("model", AtomSetsRegressor(**FAST))]).fit(X, y)
    expected = pipe.predict(X)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(pipe)).predict(X), expected)
    np.testing.assert_array_equal(clone(pipe).fit(X, y).predict(X), expected)
    search = GridSearchCV(AtomSetsRegressor(**FAST), {"n_neurons_final": [(8,), (16,)]}, cv=2).fit(X, y)
    assert search.best_estimator_.n_descriptors_in_ == 3
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(search)).predict(X), search.predict(X))


def test_reordered_or_missing_descriptor_columns_raise_scikit_learns_error(frame):
    X, y = frame
    model = AtomSetsRegressor(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="Feature names must be in the same order as they were in fit"):
        model.predict(X[["atomic number set", "density", "2-norm", "3-norm"]])
    with pytest.raises(ValueError, match="Feature names seen at fit time, yet now missing"):
        model.predict(X[["atomic number set", "2-norm", "3-norm"]])
    with pytest.raises(ValueError, match="X has 0 descriptor columns beside its sets, but AtomSetsRegressor was fitted with 3"):
        model.predict(list(X["atomic number set"]))


def test_the_tuple_form_is_the_same_model_as_the_frame(frame):
    X, y = frame
    sets, descriptors = list(X["atomic number set"]), X.iloc[:, 1:].to_numpy()
    from_frame = AtomSetsRegressor(**FAST).fit(X, y)
    from_tuple = AtomSetsRegressor(**FAST).fit((sets, descriptors), y)
    assert not hasattr(from_tuple, "feature_names_in_")
    np.testing.assert_array_equal(from_tuple.predict((sets, descriptors)), from_frame.predict(X))
    with pytest.raises(ValueError, match="has 96 sets but 95 rows of descriptors"):
        from_tuple.predict((sets, descriptors[:-1]))


def test_nan_descriptors_are_missing_values_as_handle_missing_says(frame):
    X, y = frame
    X = X.copy()
    X.loc[5, "density"] = np.nan
    with pytest.raises(ValueError, match=r"Sample 5 of X has missing descriptor values \(NaN in 'density'\)"):
        AtomSetsRegressor(**FAST).fit(X, y)
    model = AtomSetsRegressor(**FAST, handle_missing="ignore")
    with pytest.warns(UserWarning, match="1 of 96 samples have no set or NaN descriptors .* at positions 5; fit skips"):
        model.fit(X, y)
    np.testing.assert_allclose(model.descriptor_mean_, np.delete(X.iloc[:, 1:].to_numpy(), 5, axis=0).mean(axis=0))
    with pytest.warns(UserWarning, match="their prediction is the training prior"):
        predicted = model.predict(X)
    assert predicted[5] == pytest.approx(np.delete(y, 5).mean())
    X.loc[6, "2-norm"] = np.inf
    with pytest.raises(ValueError, match=r"infinite descriptor value \(sample 6, '2-norm'\)"):
        AtomSetsRegressor(**FAST, handle_missing="ignore").fit(X, y)


def test_a_failed_set_row_with_nan_descriptors_names_the_featurizers_reason_first(frame):
    from sklearn_atomsets import FailedSet

    X, y = frame
    X = X.copy()
    X.loc[2, "atomic number set"] = FailedSet("row 2: ValueError: not an element")
    X.loc[2, "density"] = np.nan
    with pytest.raises(ValueError, match="Sample 2 of X has no set: the featurizer could not featurize it .*not an element"):
        AtomSetsRegressor(**FAST).fit(X, y)


def test_frames_the_estimators_cannot_read_are_refused_with_the_fix(frame):
    X, y = frame
    with pytest.raises(ValueError, match=r"columns that are neither sets nor numbers: \['formula'\]"):
        AtomSetsRegressor(**FAST).fit(X.assign(formula=FORMULAS * 8), y)
    with pytest.raises(ValueError, match="X has 2 columns of sets"):
        AtomSetsRegressor(**FAST).fit(X.assign(again=X["atomic number set"]), y)


def test_classifier_and_warm_start_keep_the_descriptors(frame):
    X, y = frame
    labels = y > np.median(y)
    clf = AtomSetsClassifier(**FAST).fit(X, labels)
    assert clf.n_descriptors_in_ == 3 and clf.predict_proba(X).shape == (96, 2)
    model = AtomSetsRegressor(**{**FAST, "max_epochs": 5}, warm_start=True).fit(X, y)
    mean = model.descriptor_mean_
    model.fit(X.assign(density=X["density"] + 100.0), y)  # continues with the first fit's scaling
    np.testing.assert_array_equal(model.descriptor_mean_, mean)
    with pytest.raises(ValueError, match="n_descriptors_in_"):
        model.fit((list(X["atomic number set"]), X.iloc[:, 1:3].to_numpy()), y)


def test_module_concatenates_standardised_descriptors_after_the_readout():
    module = AtomSetsModule(n_features=4, n_neurons=(3,), n_neurons_final=(), n_descriptors=2,
                            descriptor_mean=[1.0, 2.0], descriptor_scale=[2.0, 4.0]).eval()
    features, weights = torch.randn(5, 4), torch.ones(5)
    segment = torch.tensor([0, 0, 1, 1, 1])
    descriptors = torch.tensor([[3.0, 6.0], [1.0, 2.0]])
    out = module(features, weights, segment, descriptors=descriptors)
    pooled = module.readouts[0](module.phi(features), weights, segment, 2)
    expected = module.output(torch.cat([pooled, torch.tensor([[1.0, 1.0], [0.0, 0.0]])], dim=-1))
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="takes 2 descriptors per set; got none"):
        module(features, weights, segment)


def test_an_ensemble_on_sets_and_descriptors_fits_its_members_one_by_one(frame):
    """The stacked path has no descriptor input: with descriptor columns the ensemble fits each
    member alone ("auto"), and stacked=True says why it cannot."""
    from sklearn_atomsets import AtomSetsEnsembleRegressor

    X, y = frame
    ensemble = AtomSetsEnsembleRegressor(AtomSetsRegressor(**dict(FAST, max_epochs=5)), n_estimators=2,
                                         random_state=0).fit(X, y)
    assert not ensemble.stacked_ and all(m.n_descriptors_in_ == 3 for m in ensemble.estimators_)
    alone = clone(ensemble.estimators_[1]).fit(X, y)
    np.testing.assert_array_equal(ensemble.estimators_[1].predict(X), alone.predict(X))
    with pytest.raises(ValueError, match="descriptor columns"):
        AtomSetsEnsembleRegressor(AtomSetsRegressor(**dict(FAST, max_epochs=5)), n_estimators=2, stacked=True).fit(X, y)
    assert AtomSetsEnsembleRegressor(AtomSetsRegressor(**dict(FAST, max_epochs=5)), n_estimators=2,
                                     random_state=0).fit(X[["atomic number set"]], y).stacked_


def test_a_descriptor_selector_inside_the_estimator_is_the_selection_in_front_of_it(frame):
    """descriptor_selector: fitted on the training samples, it keeps the same columns as the same
    selector fitted in front of the net, and the net trained on them is the same model; its size is
    an ordinary parameter (GridSearchCV, clone, pickle), and predict reads the full table."""
    from sklearn_atomsets import MutualInfoSelector

    X, y = frame
    inside = AtomSetsRegressor(**FAST, descriptor_selector=MutualInfoSelector(n_features=1)).fit(X, y)
    selector = MutualInfoSelector(n_features=1).fit(X.iloc[:, 1:].to_numpy(), y)
    assert list(inside.descriptor_selector_.get_support()) == list(selector.get_support()) == [False, False, True]
    assert inside.n_descriptors_in_ == 3 and inside.module_.rho[0].in_features == 16 + 1  # the density only
    kept = X.iloc[:, [0, 1 + int(np.flatnonzero(selector.get_support())[0])]]
    in_front = AtomSetsRegressor(**FAST).fit(kept, y)
    np.testing.assert_allclose(inside.predict(X), in_front.predict(kept), rtol=1e-6)
    assert inside.descriptor_selector.n_features == 1 and not hasattr(inside.descriptor_selector, "ranking_")
    again = pickle.loads(pickle.dumps(inside))
    np.testing.assert_array_equal(again.predict(X), inside.predict(X))
    search = GridSearchCV(AtomSetsRegressor(**FAST, descriptor_selector=MutualInfoSelector()),
                          {"descriptor_selector__n_features": [1, 3]}, cv=KFold(2), scoring="neg_mean_absolute_error")
    assert search.fit(X, y).best_estimator_.descriptor_selector_.n_features in (1, 3)
    with pytest.raises(ValueError, match="feature names should match"):
        inside.predict(kept)  # the table it was fitted on, not the selected columns
