"""What scikit-learn, skorch and matminer users expect: unfeaturizable rows in a Pipeline,
progress that shows for long work only, validation scores in the target's units."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline

import sklearn_atomsets._featurizers as featurizers_module
from sklearn_atomsets import (
    AtomSetsClassifier,
    AtomSetsRegressor,
    FailedSet,
    MEGNetSiteSetFeaturizer,
    MEGNetStructureFeaturizer,
    MLPfRegressor,
    WeightedSet,
)

from .conftest import assert_float32_close

LONELY_H = Structure(Lattice.cubic(20.0), ["H"], [[0, 0, 0]])  # no neighbour within the 5 A cutoff
CSCL = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
NACL = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
CU = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]])
FAST = dict(max_epochs=3, validation_fraction=None, random_state=0)


pytestmark = pytest.mark.usefixtures("fresh_feature_cache")


@pytest.fixture(scope="module")
def crystals(pymatgen_structures):
    """Real crystals with a learnable-looking target, and the lonely H atom put in twice."""
    good = [s for s in pymatgen_structures if len(s) <= 16][:13] + [CSCL, NACL, CU]
    X = list(good)
    X.insert(3, LONELY_H)
    X.insert(11, LONELY_H.copy())
    y = np.array([s.density for s in X])
    return X, y


# -- 1. unfeaturizable rows -----------------------------------------------------------------
def test_failed_set_is_nan_that_keeps_its_reason():
    missing = FailedSet("row 3: no neighbour")
    assert np.isnan(missing) and pd.isna(missing) and missing != missing
    again = pickle.loads(pickle.dumps(missing))
    assert isinstance(again, FailedSet) and again.reason == "row 3: no neighbour"


def test_transform_marks_failed_rows_but_featurize_dataframe_keeps_matminers_nan():
    f = MEGNetSiteSetFeaturizer("V1")
    [[failed], [ok]] = f.transform([LONELY_H, CSCL])
    assert isinstance(failed, FailedSet) and "no neighbour within the cutoff" in failed.reason
    assert isinstance(ok, WeightedSet)
    frame = f.featurize_dataframe(pd.DataFrame({"s": [LONELY_H, CSCL]}), "s", ignore_errors=True,
                                  return_errors=True, pbar=False)
    cell = frame[f.feature_labels()[0]].iloc[0]
    assert type(cell) is float and np.isnan(cell)
    assert "no neighbour" in frame[f"{type(f).__name__} Exceptions"].iloc[0]
    fixed = MEGNetStructureFeaturizer().transform([LONELY_H, CSCL])
    assert all(isinstance(v, FailedSet) for v in fixed[0]) and np.isfinite(fixed[1]).all()


@pytest.mark.parametrize("first", [True, False])
def test_pipeline_names_the_row_that_failed_and_why(first):
    """Issue 11, defect 4: a failed first row used to give "float() argument must be ... not
    'WeightedSet'"; a failed later row lost the featurizer's reason."""
    X = [LONELY_H, CSCL, NACL, CU] if first else [CSCL, NACL, LONELY_H, CU]
    pipe = Pipeline([("f", MEGNetSiteSetFeaturizer("V1")), ("m", AtomSetsRegressor(**FAST))])
    position = 0 if first else 2
    with pytest.raises(ValueError, match=rf"Sample {position} of X has no set: .*row {position}: "
                                         r"GraphConstructionError: .*no neighbour within the cutoff"):
        pipe.fit(X, [1.0, 2.0, 3.0, 4.0])


def test_pipeline_with_handle_missing_ignore_fits_skipping_rows_and_predicts_the_prior():
    X, y = [LONELY_H, CSCL, NACL, CU, LONELY_H], np.array([9.0, 1.0, 2.0, 3.0, 9.0])
    pipe = Pipeline([("f", MEGNetSiteSetFeaturizer("V1")), ("m", AtomSetsRegressor(handle_missing="ignore", **FAST))])
    with pytest.warns(UserWarning, match=r"2 of 5 samples have no set .* at positions 0, 4; fit skips them"):
        pipe.fit(X, y)
    model = pipe.named_steps["m"]
    assert model.target_mean_[0] == pytest.approx(2.0)  # mean of the three featurized rows only
    with pytest.warns(UserWarning, match=r"1 of 3 samples .* positions 1; their prediction is the training prior"):
        pred = pipe.predict([CSCL, LONELY_H, NACL])
    assert pred[1] == pytest.approx(2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(pred[[0, 2]], pipe.predict([CSCL, NACL]))


def test_classifier_gives_missing_rows_the_class_frequencies():
    X = [WeightedSet(np.full((2, 3), float(i))) for i in range(12)] + [np.nan]
    y = ["a"] * 9 + ["b"] * 3 + ["a"]
    clf = AtomSetsClassifier(handle_missing="ignore", **FAST)
    with pytest.warns(UserWarning, match="1 of 13"):
        clf.fit(X, y)
    assert_float32_close(clf.class_prior_, [0.75, 0.25])
    with pytest.warns(UserWarning, match="positions 0"):
        proba = clf.predict_proba([FailedSet("row 0: broken"), X[0]])
    assert_float32_close(proba[0], [0.75, 0.25])
    with pytest.warns(UserWarning):
        assert clf.predict([np.nan])[0] == "a"


def test_handle_missing_on_tables_and_its_validation():
    F = np.random.default_rng(0).normal(size=(20, 4))
    F[[2, 7]] = np.nan  # what a fixed-length featurizer leaves for a failed row
    with pytest.raises(ValueError, match="NaN"):
        MLPfRegressor(**FAST).fit(F, F[:, 0])
    with pytest.warns(UserWarning, match=r"2 of 20 samples .* positions 2, 7"):
        model = MLPfRegressor(handle_missing="ignore", **FAST).fit(F, np.arange(20.0))
    assert model.predict(F[:3]).shape == (3,)
    with pytest.raises(ValueError, match="None of the 2 samples"):
        MLPfRegressor(handle_missing="ignore", **FAST).fit(F[[2, 7]], [1.0, 2.0])
    with pytest.raises(ValueError, match="handle_missing"):
        AtomSetsRegressor(handle_missing="drop").fit(np.ones((4, 2)), np.arange(4.0))
    assert clone(AtomSetsRegressor(handle_missing="ignore")).handle_missing == "ignore"


@pytest.mark.slow
def test_cross_val_score_and_grid_search_on_data_with_unfeaturizable_structures(crystals):
    X, y = crystals
    pipe = Pipeline([("f", MEGNetSiteSetFeaturizer("V1")),
                     ("m", AtomSetsRegressor(max_epochs=5, validation_fraction=None, random_state=0))])
    # the default names the problem (error_score="raise" so that it is not hidden as NaN)
    with pytest.raises(ValueError, match="no neighbour within the cutoff"):
        cross_val_score(pipe, X, y, cv=KFold(3), scoring="neg_mean_absolute_error", error_score="raise")
    pipe.set_params(m__handle_missing="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scores = cross_val_score(pipe, X, y, cv=KFold(3), scoring="neg_mean_absolute_error", error_score="raise")
        assert scores.shape == (3,) and np.isfinite(scores).all()
        grid = GridSearchCV(pipe, {"m__n_neurons": [(8,), (16,)]}, cv=KFold(2), error_score="raise").fit(X, y)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()


# -- 3. progress ----------------------------------------------------------------------------
def test_progress_bar_counts_structures_and_shows_for_long_work_only(pymatgen_structures, capsys, monkeypatch):
    structures = [s for s in pymatgen_structures if len(s) <= 16]
    n = len(structures)
    # short work (well under the delay): quiet, also through transform, as in a Pipeline; the
    # delay is raised so that "short" holds on a loaded machine too (the default is 2 s)
    monkeypatch.setattr(featurizers_module, "_PBAR_DELAY", 600.0)
    MEGNetStructureFeaturizer(batch_size=4, cache=False).featurize_many(structures, pbar=True)
    MEGNetStructureFeaturizer(batch_size=4, cache=False).transform(structures)
    assert "MEGNetStructureFeaturizer" not in capsys.readouterr().err
    # long work: every call outlasts a zero delay; the bar counts structures, not batches
    monkeypatch.setattr(featurizers_module, "_PBAR_DELAY", 0.0)
    MEGNetStructureFeaturizer(batch_size=4, cache=False).transform(structures)
    err = capsys.readouterr().err
    assert "MEGNetStructureFeaturizer" in err and f"{n}/{n}" in err and "structure" in err
    MEGNetStructureFeaturizer(batch_size=4, cache=False).featurize_many(structures, pbar=False)
    assert "MEGNetStructureFeaturizer" not in capsys.readouterr().err


# -- 3, 4. estimator verbosity, validation scores in the target's units -------------------------
def _sets_with_scaled_target(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = [WeightedSet(rng.normal(size=(rng.integers(1, 6), 4))) for _ in range(n)]
    y = np.array([s.features[:, 0].mean() for s in X]) * 40.0 + 300.0  # target_scale_ far from 1
    return X, y


def test_validation_mae_is_in_the_units_of_y():
    X, y = _sets_with_scaled_target()
    model = AtomSetsRegressor(max_epochs=12, patience=4, random_state=0).fit(X, y)
    assert model.target_scale_[0] > 10
    history = model.net_.history
    # the kept epoch is EarlyStopping's, and the score recorded for it is the best one
    assert history[model.best_epoch_ - 1, "valid_mae_in_y_units_best"]
    assert model.best_validation_score_ == min(history[:, "valid_mae_in_y_units"])
    # recomputed from predictions in y's units on the validation split skorch drew, with
    # the kept (restored) weights
    _, valid = model.net_.train_split(np.arange(len(X)))
    rows = np.asarray(valid.indices)
    mae = np.abs(model.predict([X[i] for i in rows]) - y[rows]).mean()
    assert model.best_validation_score_ == pytest.approx(mae, rel=1e-4)
    assert model.best_validation_score_ > 2 * history[model.best_epoch_ - 1, "valid_loss"] ** 0.5


def test_verbose_1_prints_one_line_per_fit_and_2_the_skorch_table(capsys):
    X, y = _sets_with_scaled_target(60)
    AtomSetsRegressor(max_epochs=6, patience=2, random_state=0, verbose=1).fit(X, y)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("AtomSetsRegressor: ") and "epochs, best epoch" in out[0]
    assert "valid_mae_in_y_units" in out[0] and out[0].endswith(" s")
    AtomSetsRegressor(max_epochs=6, patience=2, random_state=0, verbose=2).fit(X, y)
    table = capsys.readouterr().out
    assert "valid_mae_in_y_units" in table and "train_loss" in table and len(table.splitlines()) >= 6
    AtomSetsRegressor(max_epochs=6, patience=2, random_state=0).fit(X, y)
    assert capsys.readouterr().out == ""


# -- issue 34, items 7 and 9: ColumnTransformer, a bare Structure, messages, estimator checks ----
def test_column_transformer_works_with_set_output_pandas():
    """matminer's transform returns a list of lists, which ColumnTransformer refuses; the
    documented recipe (docs/featurizers.rst) is set_output(transform="pandas")."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sklearn_atomsets import MEGNetCompositionFeaturizer

    frame = pd.DataFrame({"composition": ["SiO2", "Fe2O3", "NaCl", "MgO"], "T": [300.0, 400, 500, 600]})
    columns = ColumnTransformer([("comp", MEGNetCompositionFeaturizer(stats=("mean",)), "composition"),
                                 ("T", StandardScaler(), ["T"])])
    with pytest.raises(ValueError, match="should be 2D"):
        clone(columns).fit_transform(frame)
    out = columns.set_output(transform="pandas").fit_transform(frame)
    assert out.shape == (4, 17) and out.columns[0] == "comp__MEGNet V0 mean 0"
    np.testing.assert_array_equal(out.iloc[:, :16].to_numpy(),
                                  MEGNetCompositionFeaturizer(stats=("mean",)).featurize_many(frame["composition"]))
    pipe = make_pipeline(columns, Ridge()).fit(frame, np.arange(4.0))
    assert pipe.predict(frame).shape == (4,)


def test_a_bare_structure_is_refused_with_the_fix_not_iterated_over_sites():
    pipe = Pipeline([("f", MEGNetStructureFeaturizer()), ("m", MLPfRegressor(**FAST))]).fit([CSCL, NACL, CU] * 3, np.arange(9.0))
    for call in (pipe.predict, pipe[0].transform, pipe[0].featurize_many):
        with pytest.raises(TypeError, match=r"got one Structure: pass \[x\]"):
            call(NACL)
    assert pipe.predict([NACL]).shape == (1,)
    from sklearn_atomsets import MEGNetCompositionFeaturizer

    with pytest.raises(TypeError, match="got one str"):  # not the characters of the formula
        MEGNetCompositionFeaturizer().transform("SiO2")


def test_single_featurize_errors_name_their_type_once_and_point_to_the_right_featurizer():
    from pymatgen.core import Composition

    with pytest.raises(TypeError) as info:
        MEGNetStructureFeaturizer().featurize(Composition("SiO2"))
    message = str(info.value)
    assert not message.startswith("TypeError") and message.startswith("Expected a pymatgen Structure")
    assert "use CompositionFeaturizer or ElementSetFeaturizer" in message


def test_implementors_name_the_project_not_a_placeholder():
    from sklearn_atomsets import AtomicNumberSetFeaturizer, MEGNetCompositionFeaturizer

    for featurizer in (MEGNetStructureFeaturizer(), MEGNetCompositionFeaturizer(), AtomicNumberSetFeaturizer()):
        assert featurizer.implementors() == ["sklearn-atomsets maintainers"]


@pytest.mark.parametrize("name", ["MEGNetStructureFeaturizer", "MEGNetSiteSetFeaturizer",
                                  "MEGNetCompositionFeaturizer", "MEGNetElementSetFeaturizer",
                                  "AtomicNumberSetFeaturizer"])
def test_featurizers_pass_scikit_learns_checks_that_apply_to_them(name):
    """check_estimator runs (no "transformer_tags not set"); its numeric checks are skipped by
    scikit-learn itself because the tags say the input is structures/compositions, not a 2-D
    array; the API checks that do not feed numbers are run here one by one."""
    import sklearn_atomsets
    from sklearn.utils import estimator_checks as checks

    featurizer = getattr(sklearn_atomsets, name)()
    tags = featurizer.__sklearn_tags__()
    assert tags.transformer_tags is not None and not tags.input_tags.two_d_array and not tags.requires_fit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = checks.check_estimator(featurizer, on_fail=None)
    assert results and all(r["status"] != "failed" for r in results)
    assert any("Can't test estimator" in str(w.message) for w in caught)  # the skip is said, not hidden
    for check in (checks.check_get_params_invariance, checks.check_set_params, checks.check_no_attributes_set_in_init,
                  checks.check_parameters_default_constructible, checks.check_estimator_repr,
                  checks.check_estimator_cloneable):
        check(name, featurizer)


# -- issue 34, item 8: a progress parameter; quiet in workers ---------------------------------------
def test_progress_parameter_turns_the_bar_off_and_auto_keeps_workers_quiet(pymatgen_structures, capsys, monkeypatch):
    import threading

    structures = [s for s in pymatgen_structures if len(s) <= 16][:6]
    n = len(structures)
    monkeypatch.setattr(featurizers_module, "_PBAR_DELAY", 0.0)  # every call counts as long work
    MEGNetStructureFeaturizer(cache=False, progress=False).transform(structures)
    assert "MEGNetStructureFeaturizer" not in capsys.readouterr().err  # off, also inside transform
    MEGNetSiteSetFeaturizer(cache=False, progress={"desc": "V1 sets"}).featurize_many(structures)
    err = capsys.readouterr().err
    assert "V1 sets: 100%" in err and f"{n}/{n}" in err
    # "auto" in a worker thread: quiet; the same call with progress=True shows its bar
    for progress, shown in (("auto", False), (True, True)):
        worker = threading.Thread(target=MEGNetStructureFeaturizer(cache=False, progress=progress).transform,
                                  args=(structures,))
        worker.start()
        worker.join()
        assert ("MEGNetStructureFeaturizer" in capsys.readouterr().err) is shown
    # "auto" in a worker process (GridSearchCV(n_jobs=2) runs in loky's "LokyProcess-1", ...)
    monkeypatch.setattr(featurizers_module.multiprocessing, "current_process",
                        lambda: type("Process", (), {"name": "LokyProcess-1", "daemon": False})())
    MEGNetStructureFeaturizer(cache=False).transform(structures)
    assert "MEGNetStructureFeaturizer" not in capsys.readouterr().err
    assert MEGNetStructureFeaturizer(progress="auto").get_params()["progress"] == "auto"
    with pytest.raises(Exception, match="progress"):
        MEGNetStructureFeaturizer(progress="sometimes").featurize(CSCL)


def test_progress_bar_moves_per_structure_within_a_batch_also_in_the_worker_pool(pymatgen_structures, monkeypatch):
    import io

    import tqdm.auto

    structures = [s for s in pymatgen_structures if len(s) <= 16][:6]
    steps = []
    update = tqdm.auto.tqdm.update
    monkeypatch.setattr(tqdm.auto.tqdm, "update", lambda self, n=1: steps.append(n) or update(self, n))
    quiet = {"delay": 0, "file": io.StringIO()}
    # one batch of 6 (batch_size=256): six steps, not one of 6 (the bar went 0 -> 100% per batch);
    # a structure given twice is encoded once (the cache): one step of its two rows
    MEGNetStructureFeaturizer(progress=quiet).featurize_many(structures + structures[:1])
    assert steps == [2, 1, 1, 1, 1, 1]
    # n_jobs=2: two workers of 3 structures each report every structure, not their span of 3
    steps.clear()
    monkeypatch.setattr(featurizers_module, "_MIN_STRUCTURES_PER_WORKER", 3)
    MEGNetStructureFeaturizer(cache=False, n_jobs=2, progress=quiet).featurize_many(structures)
    assert steps == [1] * 6
