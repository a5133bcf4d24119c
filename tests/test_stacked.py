"""Many nets in one pass (sklearn_atomsets/_stacked.py): a stacked member is the net trained alone."""

from __future__ import annotations

import contextlib
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor
from skorch.callbacks import PrintLog

from sklearn_atomsets import (AtomSetsClassifier, AtomSetsEnsembleClassifier, AtomSetsEnsembleRegressor,
                              AtomSetsRegressor, MLPfRegressor, WeightedSet)
from sklearn_atomsets._atomsets import AtomSetsModule
from sklearn_atomsets._estimators import _PackedDataset
from sklearn_atomsets._sets import pack_sets
from sklearn_atomsets._stacked import StackedAtomSetsModule, _DeviceSets, fit_stacked, unsupported

from .conftest import TRAINED_RTOL, assert_float32_close

SMALL = dict(n_neurons=(16, 16), n_neurons_final=(16,), batch_size=32)


def _feature_sets(n=200, n_features=6, seed=0):
    """Sets of 1-5 weighted feature rows, all rows distinct (phi runs on the batch's rows)."""
    rng = np.random.default_rng(seed)
    X = [WeightedSet(rng.normal(size=(r, n_features)).astype(np.float32), rng.random(r) + 0.1)
         for r in rng.integers(1, 6, size=n)]
    return X, np.array([float(np.average(x.features[:, 0], weights=x.weights)) + 0.1 * len(x) for x in X])


def _element_sets(n=200, seed=0, atomic_numbers=False):
    """Compositions of 12 'elements' (a small table of distinct rows, as V0: phi runs on the table)."""
    rng = np.random.default_rng(seed)
    elements = rng.normal(size=(13, 5)).astype(np.float32)
    X, y = [], []
    for r in rng.integers(1, 4, size=n):
        z = rng.choice(np.arange(1, 13), size=r, replace=False)
        w = rng.integers(1, 4, size=r).astype(float)
        X.append(WeightedSet(z, w) if atomic_numbers else WeightedSet(elements[z], w))
        y.append(float(np.average(elements[z, 0], weights=w)))
    return X, np.array(y)


def _alone(estimator, X, y, **fit):
    return clone(estimator).fit(X, y, **fit)


def _assert_member_is_alone(member, alone, X):
    assert member.best_epoch_ == alone.best_epoch_
    assert len(member.net_.history) == len(alone.net_.history)
    if alone.validation_indices_ is None:
        assert member.validation_indices_ is None
    else:
        np.testing.assert_array_equal(member.validation_indices_, alone.validation_indices_)
        assert member.best_validation_score_ == pytest.approx(alone.best_validation_score_, rel=TRAINED_RTOL)
    out = (lambda e: e.predict_proba(X) if hasattr(e, "predict_proba") else e.predict(X))  # noqa: E731
    assert_float32_close(out(member), out(alone), TRAINED_RTOL)


# lr high enough that the members stop at different epochs; on the rows data lr=1e-2 makes one
# seed's training chaotic (alone, a 3e-6 difference in epoch 9 grows to 1e-3 by epoch 10), so 5e-3
@pytest.mark.parametrize("data, lr", [("rows", 5e-3), ("table", 1e-2), ("atomic_numbers", 1e-2)])
def test_each_stacked_member_is_the_net_trained_alone_with_its_seed(data, lr):
    """Own initialisation, batch order, inner split and early stopping: member k of a stack
    equals AtomSetsRegressor(random_state=seed_k).fit on the same data (patience 3 makes the
    members stop at different epochs)."""
    X, y = _feature_sets() if data == "rows" else _element_sets(atomic_numbers=data == "atomic_numbers")
    base = AtomSetsRegressor(max_epochs=25, patience=3, lr=lr, standardize_features=data != "atomic_numbers", **SMALL)
    members = fit_stacked([clone(base).set_params(random_state=s) for s in (0, 1, 2, 3)], X, y)
    for member, seed in zip(members, (0, 1, 2, 3)):
        _assert_member_is_alone(member, _alone(base.set_params(random_state=seed), X, y), X)
    assert len({len(m.net_.history) for m in members}) > 1  # they stopped at different epochs


def test_the_stacks_table_and_rows_paths_compute_the_members_modules():
    """The stacked forward pass (phi on a shared table of distinct rows, or on each member's
    own rows) is each member's AtomSetsModule on its own batch."""
    for X, _ in (_element_sets(60), _feature_sets(60)):
        dataset = _PackedDataset(pack_sets(X), np.zeros((len(X), 2), np.float32))
        torch.manual_seed(0)
        modules = [AtomSetsModule(X[0].features.shape[1], 2, (8, 8), (8,)) for _ in range(3)]
        stack = StackedAtomSetsModule(modules)
        sets = np.stack([np.random.default_rng(k).permutation(len(X))[:20] for k in range(3)])
        for rows in (1e9, 0):  # table when it fits in a batch, else rows
            data = _DeviceSets(dataset, torch.device("cpu"), rows_per_batch=rows)
            with torch.no_grad():
                out = stack(**data.batch(torch.as_tensor(sets), data.row_counts(sets, 20)[:, 0]))
                for k, module in enumerate(modules):
                    assert_float32_close(out[k].numpy(), module(**dataset.batch(sets[k]).X).numpy())


def test_sample_weights_and_a_classifier_with_class_weight_train_stacked_as_alone():
    X, y = _element_sets(240)
    weights = np.random.default_rng(1).integers(0, 3, size=len(y)).astype(float)
    base = AtomSetsRegressor(max_epochs=15, patience=4, **SMALL)
    members = fit_stacked([clone(base).set_params(random_state=s) for s in (5, 6)], X, y, sample_weight=weights)
    for member, seed in zip(members, (5, 6)):
        _assert_member_is_alone(member, _alone(base.set_params(random_state=seed), X, y, sample_weight=weights), X)
    labels = np.where(y > np.quantile(y, 0.7), "high", "low")
    clf = AtomSetsClassifier(max_epochs=15, patience=4, class_weight="balanced", **SMALL)
    members = fit_stacked([clone(clf).set_params(random_state=s) for s in (5, 6)], X, labels)
    for member, seed in zip(members, (5, 6)):
        _assert_member_is_alone(member, _alone(clf.set_params(random_state=seed), X, labels), X)
        assert member.classes_.tolist() == ["high", "low"]


def test_selection_candidates_differing_in_loss_lr_and_weight_decay_share_a_stack():
    X, y = _feature_sets(160)
    base = AtomSetsRegressor(max_epochs=12, patience=5, random_state=4, **SMALL)
    candidates = [clone(base), clone(base).set_params(lr=3e-3), clone(base).set_params(loss="mae"),
                  clone(base).set_params(loss="huber", weight_decay=1e-2),
                  clone(base).set_params(optimizer=torch.optim.AdamW, weight_decay=0.1, lr=2e-3)]
    members = fit_stacked([clone(c) for c in candidates], X, y)
    for member, candidate in zip(members, candidates):
        _assert_member_is_alone(member, _alone(candidate, X, y), X)
    with pytest.raises(ValueError, match="must share batch_size"):
        fit_stacked([clone(base), clone(base).set_params(batch_size=64)], X, y)


def test_a_stopped_member_is_frozen_at_its_best_epoch():
    """A member that stops early (patience 1) keeps its best epoch's weights while the other
    trains on: they are the weights of the same net trained alone for best_epoch_ epochs."""
    X, y = _feature_sets(160)
    base = AtomSetsRegressor(max_epochs=30, random_state=9, **SMALL)
    quick, slow = fit_stacked([clone(base).set_params(patience=1, lr=3e-2), clone(base).set_params(patience=30)], X, y)
    assert len(quick.net_.history) < len(slow.net_.history) == 30
    assert quick.best_epoch_ == len(quick.net_.history) - 1  # the epoch after the best did not improve
    short = _alone(base.set_params(patience=1, lr=3e-2, max_epochs=quick.best_epoch_), X, y)
    assert_float32_close(quick.predict(X), short.predict(X), TRAINED_RTOL)
    scores = quick.net_.history[:, "valid_mae_in_y_units"]
    assert quick.best_validation_score_ == min(scores) and scores[-1] >= min(scores)


def test_the_restored_epoch_is_the_best_one_of_each_member():
    X, y = _element_sets(200)
    base = AtomSetsRegressor(max_epochs=20, patience=20, lr=2e-2, **SMALL)
    members = fit_stacked([clone(base).set_params(random_state=s) for s in (0, 1, 2)], X, y)
    for member in members:
        scores = member.net_.history[:, "valid_mae_in_y_units"]
        assert member.best_epoch_ == int(np.argmin(scores)) + 1
        assert member.best_validation_score_ == pytest.approx(min(scores))
        assert member.net_.history[-1, "epoch"] == 20
    assert len({m.best_epoch_ for m in members}) > 1  # each its own best epoch
    ends = [clone(base).set_params(random_state=s, max_epochs=m.best_epoch_).fit(X, y)
            for s, m in zip((0, 1, 2), members)]
    for member, end in zip(members, ends):
        assert_float32_close(member.predict(X), end.predict(X), TRAINED_RTOL)


@pytest.mark.parametrize("cls, base", [(AtomSetsEnsembleRegressor, AtomSetsRegressor),
                                       (AtomSetsEnsembleClassifier, AtomSetsClassifier)])
def test_an_ensemble_trained_stacked_equals_the_one_trained_member_by_member(cls, base):
    X, y = _element_sets(200)
    if cls is AtomSetsEnsembleClassifier:
        y = y > np.median(y)
    model = cls(base(max_epochs=10, patience=3, **SMALL), n_estimators=4, random_state=2)
    stacked, separate = clone(model).fit(X, y), clone(model).set_params(stacked=False).fit(X, y)
    assert stacked.stacked_ and not separate.stacked_ and stacked.seeds_ == separate.seeds_
    assert model.get_params()["stacked"] == "auto"
    for a, b in zip(stacked.estimators_, separate.estimators_):
        _assert_member_is_alone(a, b, X)
    if cls is AtomSetsEnsembleRegressor:
        mean, std = stacked.predict(X, return_std=True)
        expected = separate.predict(X, return_std=True)
        assert_float32_close(mean, expected[0], TRAINED_RTOL)
        assert_float32_close(std, expected[1], TRAINED_RTOL, scale=np.abs(expected[0]).max())
    else:
        assert_float32_close(stacked.predict_proba(X), separate.predict_proba(X), TRAINED_RTOL)
    again = pickle.loads(pickle.dumps(stacked))
    out = (lambda e: e.predict_proba(X) if hasattr(e, "predict_proba") else e.predict(X))  # noqa: E731
    np.testing.assert_array_equal(out(again), out(stacked))
    assert stacked.best_validation_scores_ == [e.best_validation_score_ for e in stacked.estimators_]
    # fit_from stacks the members it adds
    grown = clone(model).fit_from(stacked.estimators_[0], X, y)
    assert grown.stacked_ and grown.estimators_[0] is stacked.estimators_[0]
    for a, b in zip(grown.estimators_[1:], stacked.estimators_[1:]):
        assert_float32_close(out(a), out(b), TRAINED_RTOL)


def test_mlpf_members_stack_too():
    f = np.random.default_rng(3).normal(size=(150, 7))
    y = f[:, 0] - 2 * f[:, 1] ** 2
    base = MLPfRegressor(max_epochs=15, patience=4, n_neurons=(16,), batch_size=32)
    assert unsupported(base) is None
    members = fit_stacked([clone(base).set_params(random_state=s) for s in (1, 2)], f, y)
    for member, seed in zip(members, (1, 2)):
        _assert_member_is_alone(member, _alone(base.set_params(random_state=seed), f, y), f)


@pytest.mark.parametrize("base, reason", [
    (AtomSetsRegressor(readout="set2set"), "readout"),
    (AtomSetsRegressor(readout=("mean", "set2set")), "readout"),
    (AtomSetsRegressor(dropout=0.1), "dropout"),
    (AtomSetsRegressor(lr_schedule="plateau"), "lr_schedule"),
    (AtomSetsRegressor(optimizer=torch.optim.SGD), "optimizer"),
    (AtomSetsRegressor(optimizer__betas=(0.8, 0.99)), "optimizer__betas"),
    (AtomSetsRegressor(callbacks=[("log", PrintLog())]), "callbacks"),
    (MLPRegressor(), "not one of"),
])
def test_unsupported_settings_fall_back_to_one_fit_per_member(base, reason):
    assert reason in unsupported(base)
    X, y = _feature_sets(40)
    if isinstance(base, AtomSetsRegressor):
        base.set_params(max_epochs=2, validation_fraction=None, **SMALL)
    else:
        X = np.stack([x.features[0] for x in X])
        base.set_params(max_iter=5)
    model = AtomSetsEnsembleRegressor(base, n_estimators=2, random_state=0)
    with pytest.warns(ConvergenceWarning) if isinstance(base, MLPRegressor) else contextlib.nullcontext():
        fitted = clone(model).fit(X, y)
    assert not fitted.stacked_ and len(fitted.estimators_) == 2
    with pytest.raises(ValueError, match="stacked=True"):
        clone(model).set_params(stacked=True).fit(X, y)


def test_a_diverging_stack_raises_and_bad_stacked_values_are_named():
    X, y = _feature_sets(60)
    with pytest.raises(FloatingPointError, match="diverged"):
        fit_stacked([AtomSetsRegressor(lr=1e12, max_epochs=30, random_state=s, **SMALL) for s in (0, 1)], X, y * 1e6)
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="stacked"):
        AtomSetsEnsembleRegressor(stacked="always").fit(X, y)


def test_the_runners_selection_stacks_the_candidates_that_share_an_architecture():
    """select_protocol: candidates differing in loss and lr train in one stack, set2set ones
    alone; every record is what the candidate's own fit gives."""
    from sklearn_atomsets.matbench import MATBENCH_TASKS, TrainingSettings, select_protocol
    from sklearn_atomsets.matbench.selection import _fit_config

    steels = MATBENCH_TASKS["matbench_steels"]
    X, y = _element_sets(120, atomic_numbers=True)
    settings = TrainingSettings(max_epochs=6, patience=3, batch_size=32, lr=3e-3)
    grid = {"readout": ("mean", "set2set"), "loss": ("mse", "mae", "huber")}
    model, chosen, records = select_protocol("AtomSets", steels, X, y, grid, settings, seed=1)
    assert [r.get("stack") for r in records] == [3 if r["config"]["readout"] == "mean" else None for r in records]
    assert sum(r["fit_s"] for r in records if "stack" in r) == pytest.approx(records[0]["stack_fit_s"])
    for record in records:
        _, alone = _fit_config("AtomSets", steels, X, y, record["config"], settings, 1)
        assert record["best_epoch"] == alone["best_epoch"] and record["epochs_run"] == alone["epochs_run"]
        assert record["validation_score"] == pytest.approx(alone["validation_score"], rel=TRAINED_RTOL)
    best = min(records, key=lambda r: r["validation_score"])
    assert chosen == best["config"] and model.loss == chosen["loss"]
