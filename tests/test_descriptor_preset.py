"""The descriptor preset (issue 33, item 2): matminer's descriptors of the strong baselines and
the parents' readouts, several parents side by side, as one matminer featurizer with the
per-row error contract and matminer's parallel path."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Lattice, Structure
from sklearn.utils._param_validation import InvalidParameterError

import sklearn_atomsets
from sklearn_atomsets import (
    CompositionFeaturizer,
    DescriptorPreset,
    StructureFeaturizer,
    default_matminer_featurizers,
    descriptor_preset,
)
from sklearn_atomsets._baseline import _is_composition_featurizer
from sklearn_atomsets.parents import GraphConstructionError

from .conftest import PYMATGEN_STRUCTURES, REPO, assert_float32_close

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STRUCTURES = [Structure.from_file(PYMATGEN_STRUCTURES / f"{name}.json") for name in ("CsCl", "Si", "Li2O", "SrTiO3")]
NACL = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
STRUCTURES.append(NACL)
COMPOSITIONS = ["SiO2", "Fe2O3", Composition("NaCl"), "Fe0.01Ni0.99", STRUCTURES[3]]

# What the preset promises per family, written here independently of its code: the readout
# vector f, and MEGNet's state vectors.
READOUT = {"megnet": ("f", "u1", "u2", "u3"), "chgnet": ("f",), "sevennet": ("f",)}
FAMILY = {"Eform_MP_2019": "megnet", "CHGNet-0.3.0": "chgnet", "SevenNet-0": "sevennet"}
NEEDS = {"chgnet": "chgnet", "sevennet": "sevenn"}


def _needs(parents):
    for parent in parents:
        if FAMILY[parent] in NEEDS:
            pytest.importorskip(NEEDS[FAMILY[parent]])


def _parent_featurizer(kind, parent):
    if kind == "structure":
        return StructureFeaturizer(layers=READOUT[FAMILY[parent]], parent=parent)
    return CompositionFeaturizer(parent=parent)


def _matminer_reference(kind, entries):
    """matminer's featurizers run on their own, row by row (NaN where one fails)."""
    rows = []
    for x in entries:
        row = []
        for f in default_matminer_featurizers(kind):
            if _is_composition_featurizer(f):
                y = x.composition if isinstance(x, Structure) else Composition(x)
            else:
                y = x
            row += [float(v) for v in f.featurize_wrapper([y], ignore_errors=True)]
        rows.append(row)
    return np.array(rows, dtype=np.float64)


def _reference(kind, parents, entries):
    """The preset's table as the concatenation of its components' tables: (labels, matminer
    part, one part per parent)."""
    labels = [label for f in default_matminer_featurizers(kind) for label in f.feature_labels()]
    parts = []
    for parent in parents:
        f = _parent_featurizer(kind, parent)
        labels += [f"{parent} {label}" for label in f.feature_labels()]
        parts.append(np.array(f.featurize_many(entries, ignore_errors=True, pbar=False), dtype=np.float64))
    return labels, _matminer_reference(kind, entries), parts


def _check_table(table, kind, parents, entries):
    labels, matminer, parts = _reference(kind, parents, entries)
    assert list(table.columns) == labels
    values = table.to_numpy(dtype=np.float64)
    n = matminer.shape[1]
    np.testing.assert_array_equal(values[:, :n], matminer)  # the same code on the same input: exact
    for parent, part in zip(parents, parts):
        # the same parent in other batches: float32 sums in another order
        assert_float32_close(values[:, n : n + part.shape[1]], part, err_msg=parent)
        n += part.shape[1]
    assert n == values.shape[1]


@pytest.mark.parametrize(("kind", "entries", "n_matminer", "n_parent"),
                         [("structure", STRUCTURES, 189, 192), ("composition", COMPOSITIONS, 150, 64)])
def test_columns_are_matminers_then_the_parents_and_rows_their_concatenation(kind, entries, n_matminer, n_parent):
    preset = descriptor_preset(kind, parents=("Eform_MP_2019",))
    labels = preset.feature_labels()
    assert len(labels) == len(set(labels)) == n_matminer + n_parent
    assert labels[n_matminer].startswith("Eform_MP_2019 MEGNet ")
    out = preset.featurize_dataframe(pd.DataFrame({"x": entries}), "x", pbar=False)
    assert list(out.columns) == ["x", *labels]
    assert (out.dtypes[labels] == np.float64).all()  # matminer's booleans too: a numeric table
    _check_table(out.drop(columns="x"), kind, ("Eform_MP_2019",), entries)
    # one entry on its own: the same row
    assert_float32_close(preset.featurize(entries[1]), out[labels].to_numpy()[1], axis=0)


@pytest.mark.parametrize("parents", [("Eform_MP_2019", "CHGNet-0.3.0"),
                                     pytest.param(("Eform_MP_2019", "CHGNet-0.3.0", "SevenNet-0"), id="three")])
@pytest.mark.parametrize("kind", ["structure", "composition"])
def test_several_parents_side_by_side(kind, parents):
    _needs(parents)
    entries = STRUCTURES[:3] if kind == "structure" else COMPOSITIONS
    preset = descriptor_preset(kind, parents=parents)
    labels = preset.feature_labels()
    assert len(set(labels)) == len(labels)
    for parent in parents:
        assert any(label.startswith(f"{parent} ") for label in labels)
    _check_table(preset.featurize_dataframe(pd.DataFrame({"x": entries}), "x", pbar=False).drop(columns="x"),
                 kind, parents, entries)


def test_matminer_only_and_parents_only():
    only = descriptor_preset("structure", parents=())
    assert only.feature_labels() == [label for f in default_matminer_featurizers("structure")
                                     for label in f.feature_labels()]
    parents = descriptor_preset("structure", matminer=False)
    assert parents.feature_labels() == [f"Eform_MP_2019 {label}" for label in
                                        StructureFeaturizer(layers=READOUT["megnet"]).feature_labels()]
    with pytest.raises(ValueError, match="empty"):
        descriptor_preset("structure", parents=(), matminer=False).feature_labels()


def _disordered():
    structure = NACL.copy()
    structure.replace_species({"Na": {"Na": 0.5, "K": 0.5}})
    return structure


def test_a_bad_structure_is_nan_in_the_failing_components_columns_of_its_row_only():
    preset = descriptor_preset("structure", parents=("Eform_MP_2019",))
    labels = preset.feature_labels()
    parent = [k for k, label in enumerate(labels) if label.startswith("Eform_MP_2019 ")]
    good = STRUCTURES[:2]
    entries = [good[0], _disordered(), good[1], "not a structure"]
    out = preset.featurize_dataframe(pd.DataFrame({"s": entries}), "s", ignore_errors=True, return_errors=True,
                                     pbar=False)
    values, errors = out[labels].to_numpy(), out["DescriptorPreset Exceptions"]
    # the good rows are what they are without the bad ones
    alone = np.array(preset.featurize_many(good, pbar=False), dtype=np.float64)
    assert_float32_close(values[[0, 2]], alone, axis=0)
    assert errors.isna()[[0, 2]].all()
    # the disordered row: no parent features; matminer's featurizers give what they give alone
    assert np.isnan(values[1, parent]).all()
    np.testing.assert_array_equal(values[1, : parent[0]], _matminer_reference("structure", [entries[1]])[0])
    assert not np.isnan(values[1, : parent[0]]).all()  # Magpie and friends still work on it
    assert "row 1 (Eform_MP_2019 StructureFeaturizer): GraphConstructionError" in errors[1]
    assert "disordered" in errors[1]
    # no structure at all: every column NaN, said once for the row
    assert np.isnan(values[3]).all()
    assert errors[3].startswith("row 3 (input): TypeError: Expected a pymatgen Structure")
    assert errors[3].count("\n") == 0


def test_without_ignore_errors_the_error_names_the_row_and_component():
    preset = descriptor_preset("structure", parents=("Eform_MP_2019",))
    lonely = Structure(Lattice.cubic(20.0), ["H"], [[0, 0, 0]])  # no neighbour within MEGNet's 5 A
    with pytest.raises(GraphConstructionError, match=r"row 1 \(Eform_MP_2019 StructureFeaturizer\).*no neighbour"):
        preset.featurize_dataframe(pd.DataFrame({"s": [NACL, lonely]}), "s", pbar=False)
    with pytest.raises(TypeError, match=r"^input: TypeError: Expected a pymatgen Structure"):
        preset.featurize("NaCl")
    with pytest.raises(ValueError, match="ignore_errors to True"):
        preset.featurize_many([NACL], return_errors=True)


def test_an_element_outside_the_parent_is_nan_in_the_parents_columns_only():
    preset = descriptor_preset("composition", parents=("Eform_MP_2019",))
    labels = preset.feature_labels()
    n = 150
    out = preset.featurize_dataframe(pd.DataFrame({"c": ["SiO2", "AmO2", "NaCl"]}), "c", ignore_errors=True,
                                     return_errors=True, pbar=False)
    values, errors = out[labels].to_numpy(), out["DescriptorPreset Exceptions"]
    assert np.isnan(values[1, n:]).all() and not np.isnan(values[[0, 2]]).any()
    np.testing.assert_array_equal(values[1, :n], _matminer_reference("composition", ["AmO2"])[0])
    assert errors[1] == ("row 1 (Eform_MP_2019 CompositionFeaturizer): ValueError: ['Am'] lie beyond the "
                         "parent's element embedding (Z <= 94).")
    assert errors.isna()[[0, 2]].all()


def test_parameters_are_checked_naming_them():
    with pytest.raises(InvalidParameterError, match="input_kind"):
        descriptor_preset("molecule").feature_labels()
    with pytest.raises(InvalidParameterError, match="parents"):
        descriptor_preset("structure", parents="Eform_MP_2019").feature_labels()
    with pytest.raises(ValueError, match="no_such_parent"):
        descriptor_preset("structure", parents=("no_such_parent",)).feature_labels()
    with pytest.raises(ValueError, match=r"distinct names.*'Eform_MP_2019'"):
        descriptor_preset("composition", parents=("Eform_MP_2019", "Eform_MP_2019")).feature_labels()


def test_a_parent_without_element_embedding_is_refused_for_compositions(monkeypatch):
    class NoElements:  # an encoder of a family without an element table
        pass

    monkeypatch.setattr(CompositionFeaturizer, "_encoder", lambda self: NoElements())
    with pytest.raises(ValueError, match="parent 'Eform_MP_2019' has no element embedding"):
        descriptor_preset("composition").feature_labels()


def test_it_pickles_without_state_and_set_params_rebuilds_it():
    preset = descriptor_preset("composition")
    before = pickle.dumps(preset)
    row = preset.featurize("SiO2")
    assert pickle.dumps(preset) == before  # a first use leaves the pickle as it was: no model, no components
    assert pickle.loads(before).featurize("SiO2") == row
    assert len(preset.set_params(parents=()).featurize("SiO2")) == 150
    assert len(preset.set_params(parents=("Eform_MP_2019",), matminer=False).featurize("SiO2")) == 64


_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, pickle, sys
    import pandas as pd
    from matminer.featurizers.base import MultipleFeaturizer
    from sklearn_atomsets import descriptor_preset

    with open(sys.argv[1], "rb") as f:
        frame = pickle.load(f)
    pools, real = [], multiprocessing.Pool

    def counting(processes, *args, **kwargs):
        pools.append(processes)
        return real(processes, *args, **kwargs)

    multiprocessing.Pool = counting  # matminer's own Pool is imported by name: not counted
    out = {}
    for n_jobs in (1, 2):
        preset = descriptor_preset("structure", parents=("Eform_MP_2019",))
        preset.set_n_jobs(n_jobs)
        out[n_jobs] = preset.featurize_dataframe(frame, "s", ignore_errors=True, return_errors=True, pbar=False)
    out["pools"] = list(pools)
    # matminer's own pool over entries pickles the preset into its (daemonic) workers
    nested = MultipleFeaturizer([descriptor_preset("structure", parents=("Eform_MP_2019",))])
    nested.set_n_jobs(2)
    out["matminer"] = nested.featurize_dataframe(frame, "s", ignore_errors=True, pbar=False)
    with open(sys.argv[2], "wb") as f:
        pickle.dump(out, f)
    """
)


def test_two_processes_give_the_same_table_as_one(tmp_path):
    # in a subprocess with a timeout (as tests/test_parallel.py): a deadlocked pool fails the test
    entries = [*STRUCTURES[:3], _disordered(), NACL]
    (tmp_path / "run.py").write_text(_PARALLEL_SCRIPT)
    with open(tmp_path / "in.pkl", "wb") as f:
        pickle.dump(pd.DataFrame({"s": entries}), f)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    try:
        subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "in.pkl"), str(tmp_path / "out.pkl")],
                       env=env, check=True, timeout=150, capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the preset's worker pool did not finish in 150 s: deadlock")
    with open(tmp_path / "out.pkl", "rb") as f:
        out = pickle.load(f)
    assert out["pools"] == [2]  # n_jobs=1 starts none; n_jobs=2 two processes
    one, two = out[1].drop(columns="s"), out[2].drop(columns="s")
    pd.testing.assert_frame_equal(one, two)
    assert one["DescriptorPreset Exceptions"].notna().tolist() == [False, False, False, True, False]
    # matminer's pool calls featurize per entry, whose error makes its whole row NaN (matminer's
    # featurize_wrapper): the disordered row; the others are the same
    nested = out["matminer"].drop(columns="s")
    assert nested.iloc[3].isna().all()
    pd.testing.assert_frame_equal(nested.drop(index=3), one.drop(index=3, columns="DescriptorPreset Exceptions"))


def test_the_table_beside_a_set_column_is_what_atomsets_regressor_takes():
    from sklearn_atomsets import AtomSetsRegressor, ElementSetFeaturizer

    frame = pd.DataFrame({"composition": ["SiO2", "Fe2O3", "NaCl", "MgO", "Al2O3", "TiO2"]})
    frame = descriptor_preset("composition").featurize_dataframe(frame, "composition", pbar=False)
    frame = ElementSetFeaturizer().featurize_dataframe(frame, "composition", pbar=False)
    X = frame.drop(columns="composition")
    model = AtomSetsRegressor(max_epochs=2, validation_fraction=None, random_state=0).fit(X, np.arange(6.0))
    assert model.predict(X).shape == (6,)
    assert model.n_descriptors_in_ == 150 + 64


def test_public_and_in_the_api_reference():
    api = (REPO / "docs" / "api.rst").read_text()
    for name in ("descriptor_preset", "DescriptorPreset"):
        assert name in sklearn_atomsets.__all__ and f"   {name}\n" in api
    assert isinstance(descriptor_preset(), DescriptorPreset)
