"""matminer featurizers over the frozen MEGNet, on real MatBench rows and broken ones."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from matminer.featurizers.base import BaseFeaturizer, MultipleFeaturizer
from matminer.featurizers.composition import ElementProperty
from pymatgen.core import Lattice, Structure
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import sklearn_atomsets._featurizers as featurizers_module
from sklearn_atomsets import (
    AtomSetsRegressor,
    MEGNetCompositionFeaturizer,
    MEGNetElementSetFeaturizer,
    MEGNetEncoder,
    MEGNetSiteSetFeaturizer,
    MEGNetStructureFeaturizer,
    WeightedSet,
    clear_feature_cache,
)

from .conftest import SHARED_MATBENCH, needs_matbench

STRUCTURE_FEATURIZERS = [
    MEGNetStructureFeaturizer(),
    MEGNetStructureFeaturizer(layers=("u1", "u3", "set2set_atom", "set2set_bond", "V0", "V3")),
    MEGNetStructureFeaturizer.from_preset("site_stats", structure_only=True),
    MEGNetSiteSetFeaturizer("V0"),
    MEGNetSiteSetFeaturizer("V1"),
]
COMPOSITION_FEATURIZERS = [MEGNetCompositionFeaturizer(), MEGNetElementSetFeaturizer()]


def matbench(name, n):
    from matminer.datasets import load_dataset

    return load_dataset(name, data_home=str(SHARED_MATBENCH)).iloc[:n].reset_index(drop=True)


def broken_structures(good):
    return [
        Structure(Lattice.cubic(20.0), ["H"], [[0, 0, 0]]),  # isolated atom
        Structure(Lattice.cubic(3.5), ["Es"], [[0, 0, 0]]),  # Z=99, beyond the embedding
        Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]]),  # disordered
        None,
        "not a structure",
        good.as_dict(),  # a dict from Structure.as_dict() is a valid input
    ]


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_feature_cache()
    yield
    clear_feature_cache()


def test_they_are_matminer_featurizers_with_citations_and_implementors():
    for f in STRUCTURE_FEATURIZERS + COMPOSITION_FEATURIZERS:
        assert isinstance(f, BaseFeaturizer)
        assert any("AtomSets" in c for c in f.citations()) and any("Graph Networks" in c for c in f.citations())
        assert f.implementors()


@needs_matbench
@pytest.mark.parametrize("featurizer", STRUCTURE_FEATURIZERS, ids=lambda f: repr(f)[:60])
def test_structure_featurizers_on_dielectric_with_broken_rows(featurizer):
    df = matbench("matbench_dielectric", 40)
    broken = broken_structures(df["structure"][0])
    frame = pd.DataFrame({"structure": list(df["structure"]) + broken})
    out = featurizer.featurize_dataframe(frame, "structure", ignore_errors=True, return_errors=True, pbar=False)
    labels = featurizer.feature_labels()
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
    # good rows keep exactly the values they get alone, the as_dict row equals its Structure
    alone = featurizer.featurize_many(list(df["structure"][:3]), pbar=False)
    for k in range(3):
        assert _same(out.loc[k, labels].tolist(), alone[k])
    assert _same(out.loc[45, labels].tolist(), out.loc[0, labels].tolist())


def _same(a, b):
    if isinstance(a[0], WeightedSet):
        return a == b
    return np.allclose(a, b, rtol=0, atol=0)


@needs_matbench
@pytest.mark.parametrize("featurizer", COMPOSITION_FEATURIZERS, ids=lambda f: type(f).__name__)
@pytest.mark.parametrize("task", ["matbench_steels", "matbench_expt_gap"])
def test_composition_featurizers_on_matbench_with_broken_rows(featurizer, task):
    df = matbench(task, 60)
    frame = pd.DataFrame({"composition": list(df["composition"]) + ["Xx2O", None, 3.5, "Es2O3"]})
    out = featurizer.featurize_dataframe(frame, "composition", ignore_errors=True, return_errors=True, pbar=False)
    labels = featurizer.feature_labels()
    errors = out[type(featurizer).__name__ + " Exceptions"]
    assert errors[:60].isna().all() and not out.loc[:59, labels].isna().any().any()
    assert out.loc[60:, labels].isna().all().all()
    assert "Xx" in errors[60] and "NoneType" in errors[61] and "float" in errors[62] and "Es" in errors[63]


def test_composition_v0_set_is_weighted_by_atom_fraction():
    table = MEGNetEncoder().element_embedding()
    [s] = MEGNetElementSetFeaturizer().featurize("Fe0.01Ni0.99")
    np.testing.assert_array_equal(s.features, table[[26, 28]])
    np.testing.assert_allclose(s.weights, [0.01, 0.99], rtol=1e-6)
    mean = MEGNetCompositionFeaturizer(stats=("mean",)).featurize("Fe0.01Ni0.99")
    np.testing.assert_allclose(mean, 0.01 * table[26] + 0.99 * table[28], rtol=1e-5)
    oxidised = MEGNetCompositionFeaturizer().featurize(_oxidised_fe2o3())
    np.testing.assert_allclose(oxidised, MEGNetCompositionFeaturizer().featurize("Fe2O3"))


def _oxidised_fe2o3():
    from pymatgen.core import Composition

    return Composition({"Fe3+": 2, "O2-": 3})


def test_structure_featurizer_equals_the_encoder_and_the_hydrogen_variant_differs(pymatgen_structures):
    structures = pymatgen_structures[:6]
    out = MEGNetEncoder().encode(structures)
    feats = MEGNetStructureFeaturizer(layers=("f", "V1"), stats=("mean", "max")).featurize_many(structures, pbar=False)
    for k in range(6):
        np.testing.assert_allclose(feats[k][:96], out["f"][k], rtol=1e-6)
        np.testing.assert_allclose(feats[k][96:128], out["V1"][k].mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(feats[k][128:], out["V1"][k].max(axis=0), rtol=1e-6)
    hydrogen = MEGNetStructureFeaturizer(structure_only=True).featurize_many(structures, pbar=False)
    assert not np.allclose(hydrogen[0], feats[0][:96])
    only_h = [Structure(s.lattice, ["H"] * len(s), s.frac_coords) for s in structures]
    np.testing.assert_allclose(hydrogen, MEGNetEncoder().encode(only_h)["f"], rtol=1e-6)


def test_oxidation_decorated_structures_work(pymatgen_structures):
    s = next(x for x in pymatgen_structures if x.composition.reduced_formula == "Li2O")
    decorated = s.copy()
    decorated.add_oxidation_state_by_element({"Li": 1, "O": -2})
    f = MEGNetSiteSetFeaturizer("V2")
    assert f.featurize(decorated) == f.featurize(s)


def test_single_featurize_raises_with_matminers_hint():
    with pytest.raises(ValueError, match="(?s)no neighbour.*ignore_errors=True"):
        MEGNetStructureFeaturizer().featurize(Structure(Lattice.cubic(20.0), ["H"], [[0, 0, 0]]))


def test_pickles_are_small_and_features_bit_identical(pymatgen_structures):
    for f in (MEGNetStructureFeaturizer(layers=("f", "V2")), MEGNetSiteSetFeaturizer("V3"), MEGNetCompositionFeaturizer()):
        items = pymatgen_structures[:4] if not isinstance(f, MEGNetCompositionFeaturizer) else ["SiO2", "NaCl"]
        before = f.featurize_many(items, pbar=False)
        blob = pickle.dumps(f)
        assert len(blob) < 4000, len(blob)
        clear_feature_cache()
        after = pickle.loads(blob).featurize_many(items, pbar=False)
        for a, b in zip(before, after):
            assert a == b


def test_multiple_featurizer_with_magpie():
    combined = MultipleFeaturizer([ElementProperty.from_preset("magpie"), MEGNetCompositionFeaturizer(stats=("mean",))])
    from pymatgen.core import Composition

    frame = pd.DataFrame({"composition": [Composition(f) for f in ["SiO2", "Fe2O3", "NaCl"]]})
    out = combined.featurize_dataframe(frame, "composition", pbar=False)
    assert "MEGNet V0 mean 0" in out.columns and "MagpieData mean Number" in out.columns
    assert not out.drop(columns="composition").isna().any().any()
    combined.iterate_over_entries = False  # batched path through our featurize_many
    again = combined.featurize_dataframe(frame, "composition", pbar=False)
    pd.testing.assert_frame_equal(out, again)


def test_fit_transform_and_set_features_feed_the_estimator(pymatgen_structures):
    f = MEGNetSiteSetFeaturizer("V1")
    X = f.fit_transform(pymatgen_structures)
    model = AtomSetsRegressor(max_epochs=3, validation_fraction=None, random_state=0).fit(X, np.arange(len(X), dtype=float))
    assert model.n_features_in_ == 32


def test_grid_search_featurizes_each_structure_once(pymatgen_structures, monkeypatch):
    calls = []
    original = MEGNetEncoder.encode

    def counting(self, structures, *args, **kwargs):
        structures = list(structures)
        calls.append(len(structures))
        return original(self, structures, *args, **kwargs)

    monkeypatch.setattr(MEGNetEncoder, "encode", counting)
    X = pymatgen_structures * 2  # every structure twice
    y = np.arange(len(X), dtype=float)
    pipe = Pipeline([("megnet", MEGNetStructureFeaturizer(layers=("f",))), ("ridge", Ridge())])
    GridSearchCV(pipe, {"ridge__alpha": [0.1, 1.0]}, cv=3).fit(X, y)
    assert sum(calls) == len(pymatgen_structures)  # 2 candidates x 3 folds + refit, each structure encoded once
    calls.clear()
    no_cache = Pipeline([("megnet", MEGNetStructureFeaturizer(layers=("f",), cache=False)), ("ridge", Ridge())])
    GridSearchCV(no_cache, {"ridge__alpha": [0.1, 1.0]}, cv=3).fit(X, y)
    assert sum(calls) > 6 * len(pymatgen_structures)


def test_batching_sends_hundreds_of_structures_per_forward_pass(pymatgen_structures, monkeypatch):
    calls = []
    original = MEGNetEncoder.encode
    monkeypatch.setattr(MEGNetEncoder, "encode", lambda self, s, *a, **k: calls.append(len(s)) or original(self, s, *a, **k))
    many = [s.copy() for s in pymatgen_structures for _ in range(1)]
    for k, s in enumerate(many):
        s.perturb(0.01 * (k + 1) / len(many))  # distinct structures, no cache hits
    MEGNetStructureFeaturizer(batch_size=8).featurize_many(many, pbar=False)
    assert calls == [8, 8, len(many) - 16]


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="layers must be chosen"):
        MEGNetStructureFeaturizer(layers=("V7",)).feature_labels()
    with pytest.raises(ValueError, match="layer must be one of"):
        MEGNetSiteSetFeaturizer("f").featurize_many([Structure(Lattice.cubic(3), ["Si"], [[0, 0, 0]])])
    with pytest.raises(ValueError, match="Unknown preset"):
        MEGNetStructureFeaturizer.from_preset("everything")
