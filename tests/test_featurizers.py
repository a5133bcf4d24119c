"""matminer featurizers over the frozen MEGNet, on real MatBench rows and broken ones."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from matminer.featurizers.base import BaseFeaturizer, MultipleFeaturizer
from matminer.featurizers.composition import ElementProperty
from pymatgen.core import Composition, Lattice, Structure
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline

import sklearn_atomsets._featurizers as featurizers_module
from sklearn_atomsets import (
    AtomicNumberSetFeaturizer,
    AtomSetsRegressor,
    MEGNetCompositionFeaturizer,
    MEGNetElementSetFeaturizer,
    MEGNetEncoder,
    MEGNetSiteSetFeaturizer,
    MEGNetStructureFeaturizer,
    WeightedSet,
    clear_feature_cache,
)

from .conftest import SHARED_MATBENCH, assert_float32_close, needs_matbench

STRUCTURE_FEATURIZERS = [
    MEGNetStructureFeaturizer(),
    MEGNetStructureFeaturizer(layers=("u1", "u2", "u3", "set2set_atom", "set2set_bond", "V0", "V3")),
    MEGNetStructureFeaturizer.from_preset("site_stats", structure_only=True),
    MEGNetSiteSetFeaturizer("V0"),
    MEGNetSiteSetFeaturizer("V1"),
    MEGNetSiteSetFeaturizer(("V2", "V3")),
]
COMPOSITION_FEATURIZERS = [MEGNetCompositionFeaturizer(), MEGNetElementSetFeaturizer(), AtomicNumberSetFeaturizer()]


@functools.lru_cache(maxsize=None)
def _load(name):
    from matminer.datasets import load_dataset

    return load_dataset(name, data_home=str(SHARED_MATBENCH))


def matbench(name, n):
    return _load(name).iloc[:n].reset_index(drop=True)


def broken_structures(good):
    return [
        Structure(Lattice.cubic(20.0), ["H"], [[0, 0, 0]]),  # isolated atom
        Structure(Lattice.cubic(3.5), ["Es"], [[0, 0, 0]]),  # Z=99, beyond the embedding
        Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]]),  # disordered
        None,
        "not a structure",
        good.as_dict(),  # a dict from Structure.as_dict() is a valid input
    ]


def small_structures(structures, n_sites=16):
    return [s for s in structures if len(s) <= n_sites]


pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_feature_cache")


def _close(a, b):
    """Same features up to float32 rounding of each feature's scale (batch composition orders the
    sums; tests/conftest.py)."""
    try:
        if isinstance(a[0], WeightedSet):
            assert_float32_close(a[0].features, b[0].features)
            return np.array_equal(a[0].weights, b[0].weights)
        assert_float32_close(a, b)
    except AssertionError:
        return False
    return True


def test_they_are_matminer_featurizers_with_citations_and_implementors():
    for f in STRUCTURE_FEATURIZERS + COMPOSITION_FEATURIZERS:
        assert isinstance(f, BaseFeaturizer)
        assert any("AtomSets" in c for c in f.citations()) and any("Graph Networks" in c for c in f.citations())
        assert f.implementors()
        assert list(f.get_feature_names_out()) == f.feature_labels()
        assert len(set(f.feature_labels())) == len(f.feature_labels())


@needs_matbench
@pytest.mark.parametrize("featurizer", STRUCTURE_FEATURIZERS, ids=lambda f: repr(f)[:70])
def test_structure_featurizers_on_dielectric_with_broken_rows(featurizer):
    df = matbench("matbench_dielectric", 40)
    broken = broken_structures(df["structure"][0])
    frame = pd.DataFrame({"structure": list(df["structure"]) + broken})
    out = featurizer.featurize_dataframe(frame, "structure", ignore_errors=True, return_errors=True, pbar=False)
    labels = featurizer.feature_labels()
    assert list(out.columns) == ["structure", *labels, type(featurizer).__name__ + " Exceptions"]
    errors = out[type(featurizer).__name__ + " Exceptions"]
    expected = {40: "no neighbour", 41: "Es", 42: "disordered", 43: "NoneType", 44: "str"}
    if featurizer.structure_only:
        del expected[41]  # Es becomes H: the structure-only variant ignores chemistry
    good = [k for k in range(46) if k not in expected]
    assert errors[good].isna().all()
    assert not out.loc[good, labels].isna().any().any()
    for row, words in expected.items():
        assert out.loc[row, labels].isna().all()
        assert words in errors[row] and f"row {row}" in errors[row]
    # good rows keep the values they get alone, without the cache that the frame just filled
    alone = clone(featurizer).set_params(cache=False).featurize_many(list(df["structure"][:3]), pbar=False)
    for k in range(3):
        assert _close(out.loc[k, labels].tolist(), alone[k])
    assert _close(out.loc[45, labels].tolist(), out.loc[0, labels].tolist())  # as_dict == its Structure


@needs_matbench
@pytest.mark.parametrize("featurizer", COMPOSITION_FEATURIZERS, ids=lambda f: type(f).__name__)
@pytest.mark.parametrize("task", ["matbench_steels", "matbench_expt_gap"])
def test_composition_featurizers_on_matbench_with_broken_rows(featurizer, task):
    df = matbench(task, 60)
    frame = pd.DataFrame({"composition": list(df["composition"]) + ["Xx2O", None, 3.5, "Es2O3"]})
    out = featurizer.featurize_dataframe(frame, "composition", ignore_errors=True, return_errors=True, pbar=False)
    labels = featurizer.feature_labels()
    errors = out[type(featurizer).__name__ + " Exceptions"]
    expected = {60: "Xx", 61: "NoneType", 62: "float", 63: "Es"}
    if isinstance(featurizer, AtomicNumberSetFeaturizer):
        del expected[63]  # an atomic number needs no embedding row
    good = [k for k in range(64) if k not in expected]
    assert errors[good].isna().all() and not out.loc[good, labels].isna().any().any()
    for row, words in expected.items():
        assert out.loc[row, labels].isna().all()
        assert words in errors[row] and f"row {row}" in errors[row]
    # the same compositions as pymatgen objects give the same features
    again = featurizer.featurize_many([Composition(c) for c in df["composition"][:5]], pbar=False)
    for k in range(5):
        assert _close(out.loc[k, labels].tolist(), again[k])


def test_composition_v0_set_is_weighted_by_atom_fraction():
    table = MEGNetEncoder().element_embedding()
    [s] = MEGNetElementSetFeaturizer().featurize("Fe0.01Ni0.99")
    np.testing.assert_array_equal(s.features, table[[26, 28]])
    assert_float32_close(s.weights, [0.01, 0.99])
    mean = MEGNetCompositionFeaturizer(stats=("mean",)).featurize("Fe0.01Ni0.99")
    assert_float32_close(mean, 0.01 * table[26] + 0.99 * table[28])
    std = MEGNetCompositionFeaturizer(stats=("std",)).featurize("Fe0.01Ni0.99")
    assert_float32_close(std, np.sqrt(0.01 * 0.99) * np.abs(table[26] - table[28]))
    oxidised = MEGNetCompositionFeaturizer().featurize(Composition({"Fe3+": 2, "O2-": 3}))
    assert_float32_close(oxidised, MEGNetCompositionFeaturizer().featurize("Fe2O3"))


def test_composition_featurizers_read_structures_and_their_dicts(pymatgen_structures):
    s = next(x for x in pymatgen_structures if x.composition.reduced_formula == "SrTiO3")
    f = MEGNetElementSetFeaturizer()
    assert f.featurize(s) == f.featurize(s.as_dict()) == f.featurize("SrTiO3")


def test_structure_featurizer_equals_the_encoder_and_the_hydrogen_variant_differs(pymatgen_structures):
    structures = pymatgen_structures[:6]
    out = MEGNetEncoder().encode(structures)
    feats = MEGNetStructureFeaturizer(layers=("f", "V1"), stats=("mean", "max")).featurize_many(structures, pbar=False)
    for k in range(6):
        assert_float32_close(feats[k][:96], out["f"][k])
        assert_float32_close(feats[k][96:128], out["V1"][k].mean(axis=0))
        assert_float32_close(feats[k][128:], out["V1"][k].max(axis=0))
    sets = MEGNetSiteSetFeaturizer(("V0", "V2")).featurize_many(structures, pbar=False)
    for k in range(6):
        assert_float32_close(sets[k][0].features, np.hstack([out["V0"][k], out["V2"][k]]))
        np.testing.assert_array_equal(sets[k][0].weights, np.ones(len(structures[k])))
    # structure-level layers are appended to every site's row (richer sets: V0 + V1 + f + u3)
    richer = MEGNetSiteSetFeaturizer(("V0", "V1", "f", "u3")).featurize_many(structures, pbar=False)
    for k in range(6):
        n = len(structures[k])
        expected = np.hstack([out["V0"][k], out["V1"][k], np.tile(out["f"][k], (n, 1)), np.tile(out["u3"][k], (n, 1))])
        assert_float32_close(richer[k][0].features, expected)
    hydrogen = MEGNetStructureFeaturizer(structure_only=True).featurize_many(structures, pbar=False)
    assert not np.allclose(hydrogen[0], feats[0][:96])
    only_h = [Structure(s.lattice, ["H"] * len(s), s.frac_coords) for s in structures]
    assert_float32_close(hydrogen, MEGNetEncoder().encode(only_h)["f"])


def test_parent_option_picks_the_parent_and_the_cache_keeps_parents_apart(pymatgen_structures, shared_model_dir):
    structures = small_structures(pymatgen_structures)[:5]
    default = MEGNetStructureFeaturizer().featurize_many(structures, pbar=False)
    logk = MEGNetStructureFeaturizer(parent="logK_MP_2019").featurize_many(structures, pbar=False)
    assert_float32_close(logk, MEGNetEncoder("logK_MP_2019").encode(structures)["f"])
    assert not np.allclose(logk, default)
    table = MEGNetEncoder("Eform_MP_2018").element_embedding()
    [s] = MEGNetElementSetFeaturizer(parent="Eform_MP_2018").featurize("NaCl")
    np.testing.assert_array_equal(s.features, table[[11, 17]])
    assert not np.allclose(s.features, MEGNetElementSetFeaturizer().featurize("NaCl")[0].features)
    # set_params after use switches the parent too (no stale weights kept from the first call)
    switched = MEGNetStructureFeaturizer()
    switched.featurize_many(structures, pbar=False)
    np.testing.assert_array_equal(switched.set_params(parent="logK_MP_2019").featurize_many(structures, pbar=False), logk)
    composition = MEGNetElementSetFeaturizer()
    composition.featurize("NaCl")
    assert composition.set_params(parent="Eform_MP_2018").featurize("NaCl") == [s]


def test_oxidation_decorated_structures_work(pymatgen_structures):
    s = next(x for x in pymatgen_structures if x.composition.reduced_formula == "Li2O")
    decorated = s.copy()
    decorated.add_oxidation_state_by_element({"Li": 1, "O": -2})
    f = MEGNetSiteSetFeaturizer("V2")
    assert f.featurize(decorated) == f.featurize(s)
    assert f.featurize(decorated.as_dict()) == f.featurize(s)


def test_single_featurize_raises_with_matminers_hint():
    with pytest.raises(ValueError, match="(?s)no neighbour.*ignore_errors=True"):
        MEGNetStructureFeaturizer().featurize(Structure(Lattice.cubic(20.0), ["H"], [[0, 0, 0]]))
    with pytest.raises(ValueError, match="Xx"):
        MEGNetCompositionFeaturizer().featurize("Xx2O")


def test_pickles_are_small_and_features_bit_identical(pymatgen_structures):
    featurizers = (MEGNetStructureFeaturizer(layers=("f", "V2")), MEGNetSiteSetFeaturizer("V3"),
                   MEGNetCompositionFeaturizer(), MEGNetElementSetFeaturizer())
    for f in featurizers:
        structural = isinstance(f, (MEGNetStructureFeaturizer, MEGNetSiteSetFeaturizer))
        items = pymatgen_structures[:4] if structural else ["SiO2", "NaCl", "Fe0.01Ni0.99"]
        before = f.featurize_many(items, pbar=False)
        blob = pickle.dumps(f)  # after use: the loaded weights must not travel
        assert len(blob) < 4000, len(blob)
        assert b"kernel" not in blob and b"embeddings" not in blob
        clear_feature_cache()
        after = pickle.loads(blob).featurize_many(items, pbar=False)
        for a, b in zip(before, after):
            assert a == b


def test_set_column_survives_pickle_and_cv_indexing_into_the_estimator(pymatgen_structures):
    frame = pd.DataFrame({"structure": small_structures(pymatgen_structures) + [None]})
    f = MEGNetSiteSetFeaturizer("V1")
    out = f.featurize_dataframe(frame, "structure", ignore_errors=True, pbar=False)
    [label] = f.feature_labels()
    assert np.isnan(out[label].iloc[-1])  # the failed row is NaN, not a set
    out = pickle.loads(pickle.dumps(out.dropna(subset=[label])))
    assert all(isinstance(s, WeightedSet) for s in out[label])
    y = np.array([s.features.mean() for s in out[label]], dtype=float)
    model = AtomSetsRegressor(max_epochs=2, validation_fraction=None, random_state=0)
    scores = cross_val_score(model, out[[label]], y, cv=KFold(3), scoring="neg_mean_absolute_error")
    assert np.isfinite(scores).all()


def test_multiple_featurizer_with_magpie():
    frame = pd.DataFrame({"composition": [Composition(f) for f in ["SiO2", "Fe2O3", "NaCl", "Fe0.01Ni0.99"]]})
    megnet = MEGNetCompositionFeaturizer(stats=("mean",))
    combined = MultipleFeaturizer([ElementProperty.from_preset("magpie"), megnet])
    combined.set_n_jobs(1)
    out = combined.featurize_dataframe(frame, "composition", pbar=False)
    assert "MEGNet V0 mean 0" in out.columns and "MagpieData mean Number" in out.columns
    assert not out.drop(columns="composition").isna().any().any()
    assert_float32_close(out[megnet.feature_labels()].to_numpy(dtype=float), megnet.featurize_many(frame["composition"], pbar=False))
    combined.iterate_over_entries = False  # the column goes whole to our batched featurize_many
    again = combined.featurize_dataframe(frame, "composition", pbar=False)
    pd.testing.assert_frame_equal(out, again)


def test_fit_transform_and_set_features_feed_the_estimator(pymatgen_structures):
    f = MEGNetSiteSetFeaturizer("V1")
    X = f.fit_transform(pymatgen_structures)
    model = AtomSetsRegressor(max_epochs=3, validation_fraction=None, random_state=0).fit(X, np.arange(len(X), dtype=float))
    assert model.n_features_in_ == 32


def _count_encoder_calls(monkeypatch):
    calls = []
    original = MEGNetEncoder.encode

    def counting(self, structures, *args, **kwargs):
        structures = list(structures)
        calls.append(len(structures))
        return original(self, structures, *args, **kwargs)

    monkeypatch.setattr(MEGNetEncoder, "encode", counting)
    return calls


def test_grid_search_encodes_each_structure_once(pymatgen_structures, monkeypatch):
    calls = _count_encoder_calls(monkeypatch)
    distinct = small_structures(pymatgen_structures)
    X = distinct * 2  # every structure twice
    y = np.arange(len(X), dtype=float)
    # n_jobs=1: in this process, which clone() keeps for every candidate
    pipe = Pipeline([("megnet", MEGNetStructureFeaturizer(n_jobs=1)), ("ridge", Ridge())])
    search = GridSearchCV(pipe, {"ridge__alpha": [0.1, 1.0]}, cv=3).fit(X, y)
    # 2 candidates x 3 folds + refit = 13 featurizations, yet each structure is encoded once
    assert sum(calls) == len(distinct)
    assert search.best_estimator_.named_steps["megnet"].n_jobs == 1
    calls.clear()
    no_cache = Pipeline([("megnet", MEGNetStructureFeaturizer(cache=False, n_jobs=1)), ("ridge", Ridge())])
    GridSearchCV(no_cache, {"ridge__alpha": [0.1, 1.0]}, cv=3).fit(X, y)
    assert sum(calls) == (6 + 1) * len(X)  # every fit and score re-encodes its rows


def test_every_layer_of_a_structure_is_encoded_once(pymatgen_structures, monkeypatch):
    """Issue 34, item 4: the first pass keeps every layer, so V1 after f (or CHGNet V1 after
    V4) needs no second forward pass."""
    calls = _count_encoder_calls(monkeypatch)
    structures = small_structures(pymatgen_structures)[:6]
    f = MEGNetStructureFeaturizer(layers=("f",)).featurize_many(structures, pbar=False)
    v1 = MEGNetSiteSetFeaturizer("V1").featurize_many(structures, pbar=False)
    MEGNetSiteSetFeaturizer(("V0", "V3")).featurize_many(structures, pbar=False)
    assert calls == [6]  # V1, V0 and V3 came with the first pass
    both = MEGNetStructureFeaturizer(layers=("f", "V1"), stats=("mean",)).featurize_many(structures, pbar=False)
    assert calls == [6]
    for k in range(6):
        assert both[k][:96] == f[k]
        np.testing.assert_array_equal(both[k][96:], v1[k][0].features.astype(np.float64).mean(axis=0))
    uncached = MEGNetSiteSetFeaturizer("V1", cache=False).featurize_many(structures, pbar=False)
    assert all(_close(a, b) for a, b in zip(uncached, v1))


def test_cache_is_bounded_in_memory(pymatgen_structures, monkeypatch):
    structures = small_structures(pymatgen_structures)[:6]
    sizes = []
    for s in structures:  # what one structure's entry (every layer) takes
        clear_feature_cache()
        MEGNetStructureFeaturizer().featurize_many([s], pbar=False)
        sizes.append(featurizers_module._CACHE.nbytes)
    clear_feature_cache()
    bound = sum(sizes[-3:])
    monkeypatch.setattr(featurizers_module._CACHE, "max_bytes", bound)  # the last three entries
    calls = _count_encoder_calls(monkeypatch)
    MEGNetStructureFeaturizer().featurize_many(structures, pbar=False)
    assert len(featurizers_module._CACHE) == 3 and featurizers_module._CACHE.nbytes <= bound
    MEGNetStructureFeaturizer().featurize_many(structures[-3:], pbar=False)
    assert calls == [6]  # the three most recent are still there
    MEGNetStructureFeaturizer().featurize_many(structures[:1], pbar=False)
    assert calls == [6, 1]  # the oldest was dropped


def test_batching_sends_many_structures_per_forward_pass(pymatgen_structures, monkeypatch):
    calls = _count_encoder_calls(monkeypatch)
    many = [s.copy() for s in small_structures(pymatgen_structures)]
    for k, s in enumerate(many):
        s.perturb(0.01 * (k + 1) / len(many))  # distinct structures, no cache hits
    MEGNetStructureFeaturizer(batch_size=4).featurize_many(many, pbar=False)
    n = len(many)
    assert n > 8 and calls == [4] * (n // 4) + ([n % 4] if n % 4 else [])
    calls.clear()
    frame = pd.DataFrame({"structure": many})
    MEGNetStructureFeaturizer(layers=("u3",), cache=False).featurize_dataframe(frame, "structure", pbar=False)
    assert calls == [len(many)]


def test_torch_threads_set_for_the_forward_pass_only(pymatgen_structures, monkeypatch):
    seen = []
    original = MEGNetEncoder.encode
    monkeypatch.setattr(MEGNetEncoder, "encode", lambda self, s, *a, **k: seen.append(torch.get_num_threads())
                        or original(self, s, *a, **k))
    torch.set_num_threads(3)
    structures = small_structures(pymatgen_structures)[:4]
    one = MEGNetStructureFeaturizer(torch_threads=1, cache=False).featurize_many(structures, pbar=False)
    two = MEGNetStructureFeaturizer(torch_threads=2, cache=False).featurize_many(structures, pbar=False)
    f = MEGNetStructureFeaturizer(cache=False)
    f.set_n_jobs(2)  # matminer's way (MultipleFeaturizer.set_n_jobs): processes, not threads
    default = f.featurize_many(structures, pbar=False)  # 4 structures: too few for a pool
    assert seen == [1, 2, 1] and torch.get_num_threads() == 3
    torch.set_num_threads(1)
    assert f.get_params()["n_jobs"] == 2 and f.get_params()["torch_threads"] is None
    assert_float32_close(one, two)
    assert_float32_close(one, default)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="layers must be chosen"):
        MEGNetStructureFeaturizer(layers=("V7",)).feature_labels()
    with pytest.raises(ValueError, match="stats must be a tuple"):
        MEGNetStructureFeaturizer(layers=("V1",), stats=("median",)).feature_labels()
    with pytest.raises(ValueError, match="layer must be one of"):
        MEGNetSiteSetFeaturizer("f").featurize_many([Structure(Lattice.cubic(3), ["Si"], [[0, 0, 0]])])
    with pytest.raises(ValueError, match="at least|site layers"):  # only structure-level layers: no rows
        MEGNetSiteSetFeaturizer(("f", "u3")).featurize_many([Structure(Lattice.cubic(3), ["Si"], [[0, 0, 0]])])
    with pytest.raises(ValueError, match="layer must be one of"):
        MEGNetSiteSetFeaturizer(("V1", "g")).featurize_many([Structure(Lattice.cubic(3), ["Si"], [[0, 0, 0]])])
    with pytest.raises(ValueError, match="Unknown preset"):
        MEGNetStructureFeaturizer.from_preset("everything")
