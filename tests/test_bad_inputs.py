"""Bad input never loses a batch, hangs, or returns a wrong value (issue 11).

The contract, checked for every defect and general rule: each item either gives correct
features or is that item's error (a message that names the row and the real problem);
nothing else in the batch changes (good rows are bit-identical to a good-only batch); no
wrong value is ever reported as a success.
"""

from __future__ import annotations

import faulthandler
import math
import os
import pickle
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, IStructure, Lattice, Molecule, Structure
from pymatgen.core.periodic_table import DummySpecies
from sklearn.utils._param_validation import InvalidParameterError

import sklearn_atomsets._featurizers as featurizers_module
import sklearn_atomsets.parents._structures as graph_module
from sklearn_atomsets import (
    AtomicNumberSetFeaturizer,
    AtomSetsRegressor,
    MEGNetCompositionFeaturizer,
    MEGNetElementSetFeaturizer,
    MEGNetSiteSetFeaturizer,
    MEGNetStructureFeaturizer,
    ParentModelCorruptError,
    WeightedSet,
    load_parent,
    set_feature_cache_limit,
)
from sklearn_atomsets import PARENT_MODELS
from sklearn_atomsets._sets import pack_sets

from .conftest import REPO, SHARED_MODELS, assert_float32_close, needs_shared_models

CSCL = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
NACL = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
CU = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]])
GOOD_STRUCTURES = [CSCL, NACL, CU]
GOOD_COMPOSITIONS = ["Fe2O3", Composition("NaCl"), "Fe0.01Ni0.99"]


def structure_featurizers():
    # cache=False: every batch goes through the encoder, so equality is not the cache's doing
    return [
        MEGNetStructureFeaturizer(layers=("f", "V1"), stats=("mean", "std"), cache=False),
        MEGNetSiteSetFeaturizer("V1", cache=False),
        AtomicNumberSetFeaturizer(),
    ]


def composition_featurizers():
    return [MEGNetCompositionFeaturizer(), MEGNetElementSetFeaturizer(), AtomicNumberSetFeaturizer()]


pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_feature_cache")


def _cells(frame, labels):
    return [list(row) for row in frame[labels].itertuples(index=False)]


def _same(a, b):
    """Bit-identical rows: WeightedSet equality is exact, floats compared as arrays."""
    if isinstance(a[0], WeightedSet):
        return a[0] == b[0]
    return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float))


def assert_row_contract(featurizer, good, bad, expected):
    """Interleave ``good`` and ``bad`` items, featurize them as matminer users do, and check
    that each bad row is exactly its own error (matching ``expected``), every good row is
    bit-identical to a good-only batch, and nothing else changed."""
    assert len(bad) == len(expected)
    items, where_bad = [], {}
    for k in range(max(len(good), len(bad))):
        if k < len(bad):
            where_bad[len(items)] = expected[k]
            items.append(bad[k])
        if k < len(good):
            items.append(good[k])
    labels = featurizer.feature_labels()
    column = f"{type(featurizer).__name__} Exceptions"
    mixed = featurizer.featurize_dataframe(
        pd.DataFrame({"x": pd.Series(items, dtype=object)}), "x", ignore_errors=True, return_errors=True, pbar=False
    )
    alone = featurizer.featurize_dataframe(
        pd.DataFrame({"x": pd.Series(list(good), dtype=object)}), "x", ignore_errors=True, return_errors=True,
        pbar=False,
    )
    assert len(mixed) == len(items) and alone[column].isna().all()
    rows, good_rows = _cells(mixed, labels), iter(_cells(alone, labels))
    for i, row in enumerate(rows):
        message = mixed[column].iloc[i]
        if i in where_bad:
            assert isinstance(message, str) and message.startswith(f"row {i}: "), (i, message)
            assert pd.Series([message]).str.contains(where_bad[i], regex=True).all(), (i, message)
            assert all(isinstance(v, float) and math.isnan(v) for v in row), (i, row)
        else:
            assert not isinstance(message, str), (i, message)
            assert _same(row, next(good_rows)), i
    return mixed


# -- defect 1: non-finite coordinates, zero volume ----------------------------------------------
@pytest.mark.parametrize("featurizer", structure_featurizers()[:2], ids=lambda f: type(f).__name__)
def test_1_non_finite_coordinates_and_zero_volume_are_their_rows_errors(featurizer):
    bad = [
        Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [np.inf, 0.5, 0.5]]),
        Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [np.nan, 0.5, 0.5]]),
        Structure(Lattice([[4, 0, 0], [8, 0, 0], [0, 0, 4]]), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(Lattice([[np.inf, 0, 0], [0, 4, 0], [0, 0, 4]]), ["Cs"], [[0, 0, 0]]),
    ]
    assert_row_contract(featurizer, GOOD_STRUCTURES, bad, [
        r"site\(s\) \[1\] have non-finite \(NaN or infinite\) coordinates",
        r"site\(s\) \[1\] have non-finite \(NaN or infinite\) coordinates",
        r"cell volume is 0 A\^3",
        r"lattice has non-finite entries",
    ])


def test_1_any_failure_inside_one_structure_is_that_structures_error(monkeypatch):
    from sklearn_atomsets import build_graphs

    original = graph_module.find_points_in_spheres

    one_site = Structure(Lattice.cubic(2.6), ["Cu"], [[0, 0, 0]])

    def broken_for_one_site(cart, *args, **kwargs):
        if len(cart) == 1:  # only one_site has one site (CsCl 2, NaCl 8)
            raise ZeroDivisionError("deep inside the neighbour search")
        return original(cart, *args, **kwargs)

    monkeypatch.setattr(graph_module, "find_points_in_spheres", broken_for_one_site)
    graphs, ok, errors = build_graphs([CSCL, one_site, NACL], 5.0, on_error="nan")
    assert ok.tolist() == [True, False, True]
    assert errors == {1: "structure 1 (Cu): ZeroDivisionError: deep inside the neighbour search"}
    assert_row_contract(MEGNetSiteSetFeaturizer("V1", cache=False), [CSCL, NACL], [one_site],
                        ["ZeroDivisionError: deep inside the neighbour search"])


# -- defect 2: nearly flat lattices, unbounded work -------------------------------------------
def test_2_flat_and_thin_cells_are_refused_before_the_neighbour_search():
    flat = Structure(Lattice([[4, 0, 0], [4, 1e-4, 0], [0, 0, 4]]), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    # a normal volume per atom, but one cell dimension 0.1 A: every atom next to its own image
    thin = Structure(Lattice([[100, 0, 0], [0, 100, 0], [0, 0, 0.1]]), ["H"], [[0, 0, 0]])
    start = time.perf_counter()
    assert_row_contract(MEGNetStructureFeaturizer(cache=False), GOOD_STRUCTURES, [flat, thin], [
        r"0\.0008 A\^3 per atom; below 1\.0 A\^3 per atom",
        r"the cell is 0\.1 A thin",
    ])
    assert time.perf_counter() - start < 30


def test_2_a_skewed_but_legal_cell_is_reduced_not_refused():
    skewed = Structure(Lattice([[4.12, 0, 0], [41.2, 4.12, 0], [0, 0, 4.12]]), ["Cs", "Cl"],
                       [[0, 0, 0], [0.5, 0.5, 0.5]])
    # the same crystal as CsCl (b - 10 a is the cubic b), in a cell 0.4 A "thin"
    f = MEGNetStructureFeaturizer(cache=False)
    assert_float32_close(f.featurize(skewed), f.featurize(Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [
        [0, 0, 0], skewed.lattice.get_cartesian_coords([0.5, 0.5, 0.5]) / 4.12 % 1])))


def test_2_far_coordinates_are_wrapped_or_refused_and_bonds_are_bounded(monkeypatch):
    far = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [1e5 + 0.5, -3e4 + 0.5, 0.5]])
    f = MEGNetStructureFeaturizer(cache=False)
    assert_float32_close(f.featurize(far), f.featurize(CSCL))
    lost = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [1e9, 0.5, 0.5]])
    monkeypatch.setattr(graph_module, "MAX_BONDS", 50)  # CsCl has 28 bonds, NaCl's 8-site cell more
    assert_row_contract(f, [CSCL], [lost, NACL], [r"1e\+09 cells from the origin", r"more than the bound of 50"])


# -- defect 3: parameters validated at first use ----------------------------------------------
BAD_PARAMETERS = [
    (MEGNetStructureFeaturizer, {"batch_size": -1}, "batch_size"),
    (MEGNetStructureFeaturizer, {"batch_size": 2.5}, "batch_size"),
    (MEGNetStructureFeaturizer, {"layers": 3}, "layers"),
    (MEGNetStructureFeaturizer, {"stats": "mean"}, "stats"),
    (MEGNetStructureFeaturizer, {"structure_only": "yes"}, "structure_only"),
    (MEGNetStructureFeaturizer, {"cache": 1}, "cache"),
    (MEGNetStructureFeaturizer, {"parent": 42}, "parent"),
    (MEGNetSiteSetFeaturizer, {"batch_size": 0}, "batch_size"),
    (MEGNetSiteSetFeaturizer, {"layer": None}, "layer"),
    (MEGNetCompositionFeaturizer, {"batch_size": -1}, "batch_size"),
    (MEGNetCompositionFeaturizer, {"stats": None}, "stats"),
    (MEGNetElementSetFeaturizer, {"batch_size": -1}, "batch_size"),
    (MEGNetElementSetFeaturizer, {"parent": 1.5}, "parent"),
    (AtomicNumberSetFeaturizer, {"use_composition": "no"}, "use_composition"),
]


@pytest.mark.parametrize("cls, params, name", BAD_PARAMETERS, ids=lambda v: str(v)[:40])
def test_3_every_parameter_is_validated_at_first_use_naming_it(cls, params, name):
    featurizer = cls(**params)  # constructing stores, as in scikit-learn
    item = CSCL if cls in (MEGNetStructureFeaturizer, MEGNetSiteSetFeaturizer) else "NaCl"
    frame = pd.DataFrame({"x": [item]})
    for use in (lambda: featurizer.featurize(item), lambda: featurizer.featurize_many([item], pbar=False),
                lambda: featurizer.transform([item]), featurizer.feature_labels,
                lambda: featurizer.featurize_dataframe(frame, "x", ignore_errors=True, pbar=False)):
        with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of {cls.__name__}"):
            use()


# -- defects 5, 6, 7: amounts ----------------------------------------------------------------
@pytest.mark.parametrize("featurizer", composition_featurizers(), ids=lambda f: type(f).__name__)
def test_5_6_7_negative_zero_sum_and_nan_amounts_are_their_rows_errors(featurizer):
    bad = [
        Composition({"Fe": 2, "O": -1}, allow_negative=True),  # 5: negative
        Composition({"Fe": 1, "O": -1}, allow_negative=True),  # 6: zero sum
        {"Fe": 2, "O": -2, "Na": 0.0},  # 6: zero sum, as a dict
        {"Fe": float("nan"), "O": 1.0},  # 7: NaN used to drop Fe silently
        {"Fe": float("inf"), "O": 1.0},
        {"Fe": "two", "O": 1.0},
    ]
    assert_row_contract(featurizer, GOOD_COMPOSITIONS, bad, [
        r"ValueError: amounts must be finite and positive, got O=-1\.0\.",
        r"ValueError: amounts must be finite and positive, got O=-1\.0\.",
        r"ValueError: amounts must be finite and positive, got Na=0\.0, O=-2\.",
        r"ValueError: amounts must be finite and positive, got Fe=nan\.",
        r"ValueError: amounts must be finite and positive, got Fe=inf\.",
        r"ValueError: amounts must be finite and positive, got Fe='two'\.",
    ])


def test_7_no_element_is_ever_dropped():
    f = MEGNetElementSetFeaturizer()
    [s] = f.featurize({"Fe": 1.0, "O": 1.0})
    assert len(s) == 2 and s.weights.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="Fe=nan") as info:
        f.featurize({"Fe": float("nan"), "O": 1.0})
    assert not str(info.value).startswith("row 0")  # 16.6: a single featurize has no rows


# -- defects 8, 9: WeightedSet --------------------------------------------------------------
def test_8_a_set_without_features_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"at least one feature, got shape \(3, 0\)"):
        WeightedSet(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="at least one row"):
        WeightedSet(np.zeros((0, 4)))


def test_9_a_set_cannot_be_changed_after_construction():
    rows, weights = np.ones((2, 3), np.float32), np.ones(2, np.float32)
    s = WeightedSet(rows, weights)
    rows[0, 0], weights[0] = np.nan, 0  # the caller's arrays stay theirs (and writable)
    assert np.isfinite(s.features).all() and (s.weights == 1).all()
    with pytest.raises(ValueError, match="read-only"):
        s.weights[:] = 0
    with pytest.raises(ValueError, match="read-only"):
        s.features[0, 0] = np.nan
    with pytest.raises(AttributeError, match="immutable"):
        s.features = np.full((2, 3), np.nan)
    for copy in (pickle.loads(pickle.dumps(s)), __import__("copy").deepcopy(s)):
        assert copy == s and not copy.features.flags.writeable and not copy.weights.flags.writeable
    # packing checks again, whatever was done to a set behind its back
    object.__setattr__(s, "_weights", np.array([1, 0], np.float32))
    with pytest.raises(ValueError, match="Sample 1 holds"):
        pack_sets([WeightedSet(rows[1:]), s])


def test_9_a_diverging_fit_stops_with_an_error_instead_of_a_nan_model():
    rng = np.random.default_rng(0)
    X = [WeightedSet(rng.normal(size=(3, 4))) for _ in range(24)]
    y = rng.normal(size=24)
    # squared error: its gradient grows with the residuals, so lr=1e10 overflows within 5 epochs (L1's
    # gradient is bounded: the same lr only makes the weights huge, not the loss infinite, in 5 epochs)
    model = AtomSetsRegressor(max_epochs=5, lr=1e10, n_neurons=(8,), n_neurons_final=(8,), validation_fraction=None,
                              loss="mse")
    with pytest.raises(FloatingPointError, match=r"training loss became (nan|inf).*lr=1"):
        model.fit(X, y)
    ok = AtomSetsRegressor(max_epochs=2, n_neurons=(8,), n_neurons_final=(8,), validation_fraction=None).fit(X, y)
    assert np.isfinite(ok.predict(X)).all()


# -- defect 10: the cache is keyed by the model's content --------------------------------------
def _two_models(tmp_path):
    out = []
    for name, source in (("a", "formation_energy"), ("b", "efermi")):
        folder = tmp_path / name
        folder.mkdir()
        for suffix in ("", ".json"):
            shutil.copy(SHARED_MODELS / "mp-2019.4.1" / f"{source}.hdf5{suffix}", folder / f"model.hdf5{suffix}")
        out.append(folder)
    return out


@needs_shared_models
def test_10_a_relative_path_from_two_working_directories_gives_each_models_features(tmp_path, monkeypatch):
    a, b = _two_models(tmp_path)
    truth = {k: MEGNetStructureFeaturizer(parent=str(d / "model.hdf5"), cache=False).featurize(NACL)
             for k, d in (("a", a), ("b", b))}
    assert not np.allclose(truth["a"], truth["b"])
    same_featurizer = MEGNetStructureFeaturizer(parent="model.hdf5")
    for folder, key in ((a, "a"), (b, "b"), (a, "a")):
        monkeypatch.chdir(folder)
        assert MEGNetStructureFeaturizer(parent="model.hdf5").featurize(NACL) == truth[key]
        assert same_featurizer.featurize(NACL) == truth[key]


@needs_shared_models
def test_10_a_model_file_overwritten_in_the_same_process_gives_the_new_features(tmp_path):
    a, b = _two_models(tmp_path)
    path = a / "model.hdf5"
    featurizer = MEGNetStructureFeaturizer(parent=str(path))
    before = featurizer.featurize(NACL)
    expected = MEGNetStructureFeaturizer(parent=str(b / "model.hdf5"), cache=False).featurize(NACL)
    for suffix in ("", ".json"):
        shutil.copy(b / f"model.hdf5{suffix}", a / f"model.hdf5{suffix}")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # even on coarse-mtime filesystems
    assert MEGNetStructureFeaturizer(parent=str(path)).featurize(NACL) == expected
    assert featurizer.featurize(NACL) == expected != before


# -- general rules -----------------------------------------------------------------------------
@pytest.mark.parametrize("featurizer", structure_featurizers(), ids=lambda f: type(f).__name__)
def test_structure_types_work_and_every_other_object_is_a_type_error(featurizer):
    good = [CSCL, IStructure.from_sites(CSCL), CSCL.as_dict()]
    rows = featurizer.featurize_many(good, pbar=False)
    assert all(_same(row, rows[0]) for row in rows)
    bad = [None, 3, 2.5, Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]]), [CSCL], {"not": "a structure"}]
    names = ["NoneType", "int", "float", "Molecule", "list", "dict"]
    if isinstance(featurizer, AtomicNumberSetFeaturizer):
        bad, names = bad[:4], names[:4]  # lists and dicts of amounts are compositions there
    assert_row_contract(featurizer, GOOD_STRUCTURES, bad, [f"TypeError: .*got {name}" for name in names])


@needs_shared_models
def test_invalid_model_files_fail_at_load_parent_naming_the_file(tmp_path):
    real = SHARED_MODELS / "mp-2019.4.1" / "log10K.hdf5"
    for kind, content in (("text", b"this is not a model\n"), ("truncated", real.read_bytes()[:5000]),
                          ("corrupt", b"\x89HDF\r\n\x1a\n" + os.urandom(4000))):
        path = tmp_path / f"{kind}.hdf5"
        path.write_bytes(content)
        shutil.copy(str(real) + ".json", str(path) + ".json")
        with pytest.raises(ValueError, match=rf"{kind}\.hdf5 is not a valid MEGNet \.hdf5 model file"):
            load_parent(path)
    path = tmp_path / "json_broken.hdf5"
    shutil.copy(real, path)
    (tmp_path / "json_broken.hdf5.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"json_broken\.hdf5\.json is not a megnet converter file"):
        load_parent(path)


@needs_shared_models
def test_a_corrupt_file_in_the_model_cache_is_reported_as_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("SKLEARN_ATOMSETS_MODEL_DIR", str(tmp_path))
    target = tmp_path / "mp-2019.4.1"
    target.mkdir()
    shutil.copy(SHARED_MODELS / "mp-2019.4.1" / "log10K.hdf5.json", target)
    data = bytearray((SHARED_MODELS / "mp-2019.4.1" / "log10K.hdf5").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    (target / "log10K.hdf5").write_bytes(bytes(data))
    with pytest.raises(ParentModelCorruptError, match=r"log10K\.hdf5 is corrupt: its sha256 is [0-9a-f]{64}") as info:
        load_parent("logK_MP_2019", download=False)
    assert PARENT_MODELS["logK_MP_2019"].sha256 in str(info.value) and "not found" not in str(info.value)


HASHSEED_SCRIPT = """
import json
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.core.periodic_table import DummySpecies
from sklearn_atomsets import AtomicNumberSetFeaturizer, MEGNetCompositionFeaturizer, MEGNetSiteSetFeaturizer
structures = [
    Structure(Lattice.cubic(3.0), [DummySpecies("X"), DummySpecies("Q"), "Cs"], [[0, 0, 0], [.5, .5, .5], [0, .5, .5]]),
    Structure(Lattice.cubic(3.0), ["Es", "Cf", "Am", "Cs"], [[0, 0, 0], [.5, .5, .5], [0, .5, .5], [.5, 0, 0]]),
]
compositions = ["XO", Composition({DummySpecies("Q"): 1, DummySpecies("X"): 1, "O": 1}), "EsCfAmO4"]
messages = []
for f, items in ((MEGNetSiteSetFeaturizer(cache=False), structures), (AtomicNumberSetFeaturizer(), structures),
                 (MEGNetCompositionFeaturizer(), compositions)):
    messages += [row[-1] for row in f.featurize_many(items, ignore_errors=True, return_errors=True, pbar=False)]
print(json.dumps(messages))
"""


@pytest.mark.slow
def test_dummy_species_and_elements_outside_the_embedding_errors_are_the_same_whatever_the_hashseed():
    outputs = []
    for seed in ("1", "2024"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-c", HASHSEED_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=300, check=True)
        outputs.append(done.stdout.strip().splitlines()[-1])
    assert outputs[0] == outputs[1]
    messages = __import__("json").loads(outputs[0])
    assert "dummy species Q0+, X0+" in messages[0] and "dummy species Q0+, X0+" in messages[2]
    assert "contains Am, Cf, Es, outside the parent model's element embedding" in messages[1]
    assert "dummy species X0+" in messages[4] and "dummy species Q0+, X0+" in messages[5]
    assert "['Am', 'Cf', 'Es'] lie beyond the parent's element embedding" in messages[6]


@pytest.mark.parametrize("featurizer", structure_featurizers()[:2], ids=lambda f: type(f).__name__)
def test_atoms_closer_than_half_an_angstrom_are_refused_by_documented_policy(featurizer):
    assert graph_module.MIN_DISTANCE == 0.5 and "0.5 A" in featurizers_module.__doc__
    close = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.05, 0, 0]], validate_proximity=False)
    duplicated = Structure(Lattice.cubic(4.12), ["Cs", "Cl", "Cl"], [[0, 0, 0], [0.5] * 3, [0.5] * 3],
                           validate_proximity=False)
    h2_like = Structure(Lattice.cubic(4.0), ["H", "H"], [[0, 0, 0], [0.74 / 4, 0, 0]])  # 0.74 A is fine
    mixed = assert_row_contract(featurizer, [h2_like] + GOOD_STRUCTURES, [close, duplicated], [
        r"sites 0 and 1 are 0\.206 A apart, closer than 0\.5 A",
        r"sites 1 and 2 are 0 A apart, closer than 0\.5 A",
    ])
    assert len(mixed) == 6


# -- issue 16.6: small things -------------------------------------------------------------------
def test_no_formula_label_and_no_pauling_warning_for_structures_that_succeed():
    helium = Structure(Lattice.cubic(3.0), ["He"], [[0, 0, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MEGNetStructureFeaturizer(cache=False).featurize(helium)
    with pytest.raises(ValueError) as info:
        MEGNetStructureFeaturizer(cache=False).featurize(Structure(Lattice.cubic(20.0), ["He"], [[0, 0, 0]]))
    assert "(He)" in str(info.value) and not str(info.value).startswith("row 0")


def test_feature_cache_limit_is_settable_and_implementors_are_named():
    f = MEGNetStructureFeaturizer()
    previous = set_feature_cache_limit(0)
    try:
        f.featurize_many([CSCL, NACL], pbar=False)
        assert len(featurizers_module._CACHE) == 0
        set_feature_cache_limit(96 * 4)  # one f vector
        f.featurize_many([CSCL, NACL], pbar=False)
        assert len(featurizers_module._CACHE) == 1
        with pytest.raises(ValueError, match="nbytes must be an integer >= 0"):
            set_feature_cache_limit(-1)
    finally:
        assert set_feature_cache_limit(previous) == 96 * 4
    assert previous == 2 << 30
    setup_cfg = (REPO / "setup.cfg").read_text()
    author = next(line.split("=", 1)[1].strip() for line in setup_cfg.splitlines() if line.startswith("author ="))
    assert f.implementors() == [name.strip() for name in author.split(",")]


# -- fuzz ----------------------------------------------------------------------------------------
def _random_lattice(rng):
    kind = rng.integers(10)
    if kind < 6:
        return Lattice.from_parameters(*rng.uniform(2.0, 8.0, 3), *rng.uniform(60, 120, 3))
    a, b, c = rng.uniform(2, 8, (3, 3))
    eps = 10.0 ** rng.uniform(-12, 0)
    return Lattice([
        [a, b, a + eps * c],  # nearly flat
        [np.zeros(3), b, c],  # a zero vector
        [a * 1e4, b, c],  # one huge length
        [a * 0.05, b * 0.05, c * 0.05],  # tiny
    ][kind - 6]) if kind < 10 else None


def _random_structure(rng):
    n = int(rng.integers(1, 7))
    lattice = _random_lattice(rng)
    z = rng.integers(1, 104, n)
    species = [int(v) for v in z]
    if rng.random() < 0.05:
        species[0] = DummySpecies("X")
    if rng.random() < 0.05:
        species[0] = {"Fe": 0.5, "Ni": 0.5}
    frac = rng.random((n, 3))
    r = rng.random()
    if r < 0.04:
        frac[0, 0] = np.nan
    elif r < 0.08:
        frac[-1, 1] = np.inf
    elif r < 0.14:
        frac *= 10.0 ** rng.uniform(1, 12)
    elif r < 0.18:
        frac[-1] = frac[0] + 1e-4
    if rng.random() < 0.03:
        return Structure(lattice, [], [])
    try:
        structure = Structure(lattice, species, frac, validate_proximity=False)
    except Exception:  # noqa: BLE001 - pymatgen refused to build it; that is not our input then
        return rng.choice(["a string", 7, None])
    return structure.as_dict() if rng.random() < 0.1 else structure


def _random_composition(rng):
    r = rng.random()
    if r < 0.15:
        return str(rng.choice(["Fe2O3", "Xx2O", "", "H0", "NaCl", "Fe1e400", "Og", "(SiO2", "Li0.000001Fe"]))
    elements = rng.choice(["H", "O", "Fe", "Ni", "Es", "Og", "Cs", "U", "Pu"], size=int(rng.integers(1, 4)),
                          replace=False)
    values = [1.0, 2.0, 0.5, 1e-12, 1e12, -1.0, 0.0, np.nan, np.inf, 3]
    amounts = {str(el): values[int(rng.integers(len(values)))] for el in elements}
    if r < 0.6:
        return amounts
    try:
        return Composition(amounts, allow_negative=True)
    except Exception:  # noqa: BLE001 - pymatgen refused it; pass the dict instead
        return amounts


def _check_rows(featurizer, rows, n):
    assert len(rows) == n
    for row in rows:
        message, values = row[-1], row[:-1]
        if isinstance(message, str):
            assert message.startswith("row ") and all(isinstance(v, float) and math.isnan(v) for v in values)
        else:
            assert isinstance(message, float) and math.isnan(message)
            if isinstance(values[0], WeightedSet):
                assert len(values) == 1 and np.isfinite(values[0].features).all()
                assert np.isfinite(values[0].weights).all() and (values[0].weights > 0).all()
            else:
                assert len(values) == len(featurizer.feature_labels()) and np.isfinite(values).all()


@pytest.mark.slow
def test_fuzz_no_exception_escapes_no_batch_hangs_every_row_is_features_or_an_error():
    rng = np.random.default_rng(11)
    with np.errstate(invalid="ignore", divide="ignore"):  # pymatgen's angles of a zero vector
        structures = [_random_structure(rng) for _ in range(500)] + [CSCL, NACL, CU] * 5
    compositions = [_random_composition(rng) for _ in range(300)] + GOOD_COMPOSITIONS * 5
    rng.shuffle(structures)
    rng.shuffle(compositions)
    limit_s, batch = 20.0, 64
    jobs = [(f, structures) for f in structure_featurizers()[:2]] + [(f, compositions) for f in composition_featurizers()]
    jobs.append((AtomicNumberSetFeaturizer(), structures))
    n_ok = n_error = 0
    faulthandler.dump_traceback_later(10 * limit_s, exit=True)  # a real hang ends the run, visibly
    try:
        for featurizer, items in jobs:
            for start in range(0, len(items), batch):
                chunk = items[start : start + batch]
                begin = time.perf_counter()
                rows = featurizer.featurize_many(chunk, ignore_errors=True, return_errors=True, pbar=False)
                took = time.perf_counter() - begin
                assert took < limit_s, f"{type(featurizer).__name__} batch at {start} took {took:.1f} s"
                _check_rows(featurizer, rows, len(chunk))
                n_error += sum(isinstance(row[-1], str) for row in rows)
                n_ok += sum(not isinstance(row[-1], str) for row in rows)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert n_ok > 300 and n_error > 300  # both outcomes are exercised
