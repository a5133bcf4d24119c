"""Distinct-row sets: merging equal rows of a set (weights summed) and running phi once per
distinct row leave both AtomSets readouts unchanged, on synthetic and on real MatBench sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sklearn_atomsets import AtomSetsClassifier, AtomSetsModule, AtomSetsRegressor, WeightedSet
from sklearn_atomsets import _estimators
from sklearn_atomsets._sets import ROW_RTOL, _leaders, merge_equal_rows, pack_sets, row_table

from .conftest import SHARED_MATBENCH, assert_float32_close, needs_matbench, needs_shared_models


def _sets_with_repeats(n=60, width=6, seed=0):
    """Sets whose rows repeat (like a crystal's equivalent sites), with random weights."""
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(n):
        distinct = rng.normal(size=(rng.integers(1, 5), width)).astype(np.float32)
        rows = distinct[rng.integers(0, len(distinct), size=rng.integers(1, 12))]
        sets.append(WeightedSet(rows, rng.uniform(0.1, 2.0, size=len(rows))))
    return sets


def test_merge_sums_weights_of_equal_rows_within_a_set_only():
    a, b = [1.0, 2.0], [3.0, 4.0]
    packed = pack_sets([WeightedSet([a, b, a], [1.0, 2.0, 0.5]), WeightedSet([a, b]), WeightedSet([b, b, b])])
    merged = merge_equal_rows(packed)
    assert merged.offsets.tolist() == [0, 2, 4, 5]  # no row moves to another set
    assert merged.features.tolist() == [a, b, a, b, b]
    assert merged.weights.tolist() == [1.5, 2.0, 1.0, 1.0, 3.0]


def test_merge_tolerance_merges_float32_noise_and_nothing_coarser():
    base = np.array([[0.5, -1.25, 3.0]], np.float32)
    tolerance = ROW_RTOL * 3.0  # relative to the largest absolute feature
    noisy = base + np.float32(tolerance / 4)
    apart = base + np.float32(tolerance * 20)
    merged = merge_equal_rows(pack_sets([WeightedSet(np.vstack([base, noisy, apart, noisy]))]))
    assert merged.weights.tolist() == [3.0, 1.0]
    np.testing.assert_array_equal(merged.features, np.vstack([base, apart]))
    exact = merge_equal_rows(pack_sets([WeightedSet(np.vstack([base, noisy, base]))]), rtol=0)
    assert exact.weights.tolist() == [2.0, 1.0]


def test_merge_handles_every_set_size_in_blocks(monkeypatch):
    from sklearn_atomsets import _sets

    sets = _sets_with_repeats(200, seed=3)
    whole = merge_equal_rows(pack_sets(sets))
    monkeypatch.setattr(_sets, "_PAIR_BLOCK", 7)  # one set per block
    blocks = merge_equal_rows(pack_sets(sets))
    for a, b in [(whole.features, blocks.features), (whole.weights, blocks.weights), (whole.offsets, blocks.offsets)]:
        np.testing.assert_array_equal(a, b)
    # every set keeps its distinct rows, and its total weight
    for i, s in enumerate(sets):
        rows = whole.features[whole.offsets[i] : whole.offsets[i + 1]]
        assert len(rows) == len(np.unique(s.features, axis=0))
        assert_float32_close(whole.weights[whole.offsets[i] : whole.offsets[i + 1]].sum(), s.weights.sum())


def test_row_table_gathers_back_every_row():
    sets = _sets_with_repeats()
    features = pack_sets(sets).features
    table, index = row_table(features)
    assert len(table) < len(features)
    np.testing.assert_array_equal(table[index], features)
    z = np.array([8, 26, 8, 1, 26])
    table, index = row_table(z)
    assert table.tolist() == [8, 26, 1] and table[index].tolist() == z.tolist()


@pytest.mark.parametrize("readout", ["mean", "set2set", ("mean", "set2set")])
def test_readouts_are_exact_under_merging_and_tables(readout):
    """The weighted mean (eq. 4) and set2set attention w_i exp(e_i) (eqs. 5-9) see a merged
    row of weight w_i + w_j exactly as the two rows."""
    sets = _sets_with_repeats()
    torch.manual_seed(0)
    module = AtomSetsModule(n_features=6, readout=readout).eval()

    def run(packed, index=None, features=None):
        segment = np.repeat(np.arange(packed.n_sets), packed.lengths)
        feats = packed.features if features is None else features
        with torch.no_grad():
            return module(torch.from_numpy(feats), torch.from_numpy(packed.weights), torch.from_numpy(segment),
                          None if index is None else torch.from_numpy(index)).numpy()

    packed = pack_sets(sets)
    merged = merge_equal_rows(packed)
    assert len(merged.weights) < len(packed.weights)
    table, index = row_table(merged.features)
    reference = run(packed)
    # exact in arithmetic; in float32 the merged sums are regrouped (tests/conftest.py)
    assert_float32_close(run(merged), reference)
    assert_float32_close(run(merged, index, table), reference)


def _relative_gap(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _snapped(sets):
    """The sets with every row replaced by the row it merges into (tolerance merging moves
    rows by <= ROW_RTOL * max|x|; training amplifies such moves like any perturbation)."""
    packed = pack_sets(sets)
    tolerance = ROW_RTOL * float(np.abs(packed.features).max()) if packed.features.ndim == 2 else 0.0
    rows = packed.features[_leaders(packed.features, packed.offsets, tolerance)]
    return [WeightedSet(rows[a:b], s.weights) for a, b, s in zip(packed.offsets[:-1], packed.offsets[1:], sets)]


def _predictions(model_cls, X, y, monkeypatch, **params):
    """Fit with merging on; predict with it on and off; fit with it off on the same rows
    (snapped to the rows kept by merging) and predict."""
    model = model_cls(random_state=0, **params).fit(X, y)
    out = model.predict_proba if model_cls is AtomSetsClassifier else model.predict
    merged = out(X)
    monkeypatch.setattr(_estimators, "_MERGE_ROWS", False)
    unmerged_same_model = out(X)
    plain = model_cls(random_state=0, **params).fit(_snapped(X), y)
    plain_out = plain.predict_proba if model_cls is AtomSetsClassifier else plain.predict
    monkeypatch.setattr(_estimators, "_MERGE_ROWS", True)
    return merged, unmerged_same_model, plain_out(X)


def _atomic_number_sets(n=120, seed=0):
    """Sets of atomic numbers (elements repeat within and across sets), random weights."""
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(n):
        z = rng.integers(1, 20, size=rng.integers(1, 12))
        sets.append(WeightedSet(z, rng.uniform(0.1, 2.0, size=len(z))))
    return sets


@pytest.mark.parametrize("kind", ["features", "atomic_numbers"])
@pytest.mark.parametrize("readout", ["mean", "set2set"])
@pytest.mark.parametrize("model_cls", [AtomSetsRegressor, AtomSetsClassifier])
def test_estimators_predict_the_same_with_and_without_merging(model_cls, readout, kind, monkeypatch):
    sets = _sets_with_repeats(120) if kind == "features" else _atomic_number_sets()
    if kind == "atomic_numbers":  # a table of distinct elements, phi once per element
        merged = merge_equal_rows(pack_sets(sets))
        assert len(row_table(merged.features)[0]) <= _estimators._TABLE_FRACTION * len(merged.weights)
    target = np.array([np.average(s.features[:, 0] if s.features.ndim == 2 else s.features, weights=s.weights)
                       for s in sets])
    y = target if model_cls is AtomSetsRegressor else target > np.median(target)
    # regressors on squared error: merged rows change the float32 sums by rounding, which a smooth loss
    # keeps at rounding over the 5 epochs (L1's sign gradient flips on near-zero residuals and amplifies it)
    loss = {"loss": "mse"} if model_cls is AtomSetsRegressor else {}
    merged, same_model, retrained = _predictions(model_cls, sets, y, monkeypatch, readout=readout, max_epochs=5,
                                                 batch_size=16, **loss)
    assert _relative_gap(same_model, merged) < 1e-5
    assert _relative_gap(retrained, merged) < 1e-5  # the whole training is the same computation


def _matbench(task, n):
    from matminer.datasets import load_dataset

    df = load_dataset(task, data_home=str(SHARED_MATBENCH))
    return df.iloc[:n]


@needs_matbench
@pytest.mark.slow
@pytest.mark.parametrize("readout", ["mean", "set2set"])
@pytest.mark.parametrize("task", ["matbench_expt_gap", "matbench_expt_is_metal"])
def test_composition_sets_on_matbench_agree_within_1e5(task, readout, monkeypatch):
    """Atomic-number sets: phi (here the embedding and its MLP) runs once per element."""
    df = _matbench(task, 600)
    X = [WeightedSet.from_composition(c) for c in df["composition"]]
    y = df.iloc[:, 1].to_numpy()
    model_cls = AtomSetsClassifier if y.dtype == bool else AtomSetsRegressor
    merged, same_model, retrained = _predictions(model_cls, X, y, monkeypatch, readout=readout, max_epochs=10,
                                                 validation_fraction=0.2)
    assert _relative_gap(same_model, merged) < 1e-5
    assert _relative_gap(retrained, merged) < 1e-5


@pytest.fixture(scope="module")
def dielectric_site_sets():
    from sklearn_atomsets import MEGNetSiteSetFeaturizer

    df = _matbench("matbench_dielectric", 200)
    out = {}
    for layer in ("V0", "V1"):
        out[layer] = [row[0] for row in MEGNetSiteSetFeaturizer(layer).featurize_many(df["structure"], pbar=False)]
    return out, df["n"].to_numpy()


@needs_matbench
@needs_shared_models
@pytest.mark.slow
@pytest.mark.parametrize("readout", ["mean", "set2set"])
@pytest.mark.parametrize("layer", ["V0", "V1"])
@pytest.mark.parametrize("model_cls", [AtomSetsRegressor, AtomSetsClassifier])
def test_site_sets_on_matbench_dielectric_agree_within_1e5(dielectric_site_sets, layer, readout, model_cls,
                                                           monkeypatch):
    """V1: equivalent sites merge into one row; V0: one row per element of a structure."""
    sets, n = dielectric_site_sets
    X = sets[layer]
    rows = sum(len(s) for s in X)
    assert len(merge_equal_rows(pack_sets(X)).weights) < 0.6 * rows  # real repetition to remove
    y = n if model_cls is AtomSetsRegressor else n > np.median(n)
    merged, same_model, retrained = _predictions(model_cls, X, y, monkeypatch, readout=readout, max_epochs=10,
                                                 validation_fraction=0.2)
    assert _relative_gap(same_model, merged) < 1e-5
    assert _relative_gap(retrained, merged) < 1e-5
