"""Behaviour of the PyTorch encoder and the crystal graphs on good and bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from sklearn_atomsets import GraphConstructionError, MEGNetEncoder, build_graphs

from .conftest import assert_float32_close


@pytest.fixture(scope="module")
def encoder():
    return MEGNetEncoder()


def nacl():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def isolated_h():
    return Structure(Lattice.cubic(20.0), ["H"], [[0, 0, 0]])


def disordered():
    return Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])


def unknown_element():
    return Structure(Lattice.cubic(3.5), ["Cm"], [[0, 0, 0]])  # Z=96, beyond the 95-row embedding


def test_parent_predicts_formation_energies_of_known_crystals(encoder, pymatgen_structures):
    """Eform_MP_2019 is a formation-energy model: ionic crystals are strongly negative,
    elemental crystals sit near zero (eV/atom)."""
    by_formula = {s.composition.reduced_formula: s for s in pymatgen_structures}
    out = encoder.encode([by_formula[f] for f in ("SrTiO3", "Li2O", "Si", "Sn")])
    ef = out["prediction"][:, 0]
    assert ef[0] < -3.0 and ef[1] < -1.5
    assert abs(ef[2]) < 0.1 and abs(ef[3]) < 0.1


def test_output_shapes_follow_the_hierarchy(encoder, pymatgen_structures):
    out = encoder.encode(pymatgen_structures)
    n = len(pymatgen_structures)
    assert [v.shape for v in out["V0"]] == [(len(s), 16) for s in pymatgen_structures]
    for level in (1, 2, 3):
        assert [v.shape for v in out[f"V{level}"]] == [(len(s), 32) for s in pymatgen_structures]
        assert [e.shape[0] for e in out[f"E{level}"]] == list(out.n_bonds)
        assert out[f"u{level}"].shape == (n, 32)
    assert out["set2set_atom"].shape == out["set2set_bond"].shape == (n, 32)
    assert out["f"].shape == (n, 96)
    # f is the concatenation [set2set_atom, set2set_bond, state after the last skip connection]
    np.testing.assert_array_equal(out["f"][:, :32], out["set2set_atom"])
    np.testing.assert_array_equal(out["f"][:, 32:64], out["set2set_bond"])


def test_v0_is_the_element_embedding(encoder):
    out = encoder.encode([nacl()])
    table = encoder.element_embedding()
    assert table.shape == (95, 16)
    z = np.array([site.specie.Z for site in nacl()])
    np.testing.assert_array_equal(out["V0"][0], table[z])


BATCH_OUTPUTS = ("V1", "V3", "E2", "u3", "f", "prediction")


def assert_same_encoding(one, many):
    """Batching must preserve every output up to float32 error of its scale (KERNEL_RTOL)."""
    for name in BATCH_OUTPUTS:
        values = (lambda out: out.packed(name)) if name[0] in "VE" else (lambda out: out[name])
        assert_float32_close(values(many), values(one), err_msg=name)


def test_batching_does_not_change_results(pymatgen_structures):
    one = MEGNetEncoder(batch_size=1).encode(pymatgen_structures)
    many = MEGNetEncoder(batch_size=7).encode(pymatgen_structures)
    assert_same_encoding(one, many)


def test_the_batching_check_sees_one_structure_encoded_differently(pymatgen_structures):
    """The tolerance above is float32 error, not blindness: one structure of the batch strained by
    0.1% (its graph built from other distances, as another cutoff or a leak would do) fails it."""
    one = MEGNetEncoder(batch_size=1).encode(pymatgen_structures)
    changed = list(pymatgen_structures)
    changed[3] = changed[3].copy()
    changed[3].scale_lattice(changed[3].volume * 1.001 ** 3)
    with pytest.raises(AssertionError):
        assert_same_encoding(one, MEGNetEncoder(batch_size=7).encode(changed))


def test_oxidation_state_decorated_structures_encode_like_plain_ones(encoder):
    plain = nacl()
    decorated = nacl()
    decorated.add_oxidation_state_by_element({"Na": 1, "Cl": -1})
    out = encoder.encode([plain, decorated])
    np.testing.assert_array_equal(out["f"][0], out["f"][1])
    np.testing.assert_array_equal(out["V2"][0], out["V2"][1])


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (isolated_h, "no neighbour within the cutoff"),
        (disordered, "disordered"),
        (unknown_element, "Cm"),
        (lambda: Structure(Lattice.cubic(3.0), [], []), "empty"),
        (lambda: "NaCl", "expected a pymatgen Structure"),
    ],
)
def test_bad_structures_raise_an_error_naming_them(encoder, make, words):
    with pytest.raises(GraphConstructionError, match=words) as info:
        encoder.encode([nacl(), make()])
    assert "1" in str(info.value).split(":")[0]  # the position of the bad item


def test_nan_policy_keeps_good_rows_and_reports_bad_ones(encoder):
    items = [nacl(), isolated_h(), disordered(), nacl(), None, unknown_element()]
    out = encoder.encode(items, on_error="nan")
    assert list(out.ok) == [True, False, False, True, False, False]
    assert sorted(out.errors) == [1, 2, 4, 5]
    assert "disordered" in out.errors[2] and "NoneType" in out.errors[4]
    assert np.isnan(out["f"][[1, 2, 4, 5]]).all()
    assert out["V1"][1] is None and out["V1"][3].shape == (8, 32)
    alone = encoder.encode([nacl()])
    # the bad rows leave the good ones as they are alone, up to float32 error (the batch shape
    # orders the sums); a leak would be O(0.1)
    assert_float32_close(out["f"][0], alone["f"][0])
    assert_float32_close(out["f"][3], alone["f"][0])


def test_all_bad_batch_with_nan_policy(encoder):
    out = encoder.encode([isolated_h()], on_error="nan")
    assert not out.ok.any() and np.isnan(out["f"]).all() and out["V1"] == [None]


def test_invalid_settings_are_named():
    with pytest.raises(ValueError, match="on_error"):
        MEGNetEncoder().encode([nacl()], on_error="skip")
    with pytest.raises(ValueError, match="backend"):
        MEGNetEncoder(backend="jax").encode([nacl()])
    with pytest.raises(ValueError, match="batch_size"):
        MEGNetEncoder(batch_size=0).encode([nacl()])
    with pytest.raises(KeyError, match="available"):
        MEGNetEncoder().encode([nacl()])["V7"]


def test_pickle_keeps_the_parent_location_not_the_weights(encoder):
    before = encoder.encode([nacl()])
    blob = pickle.dumps(encoder)
    assert len(blob) < 2000
    after = pickle.loads(blob).encode([nacl()])
    np.testing.assert_array_equal(before["f"], after["f"])


def test_graph_batch_layout_is_vectorised_and_sorted(pymatgen_structures):
    graphs, ok, errors = build_graphs(pymatgen_structures[:5], cutoff=5.0)
    assert ok.all() and not errors
    assert np.all(np.diff(graphs.atom_graph) >= 0) and np.all(np.diff(graphs.bond_graph) >= 0)
    assert graphs.index1.max() < graphs.atomic_numbers.size
    # every bond joins two atoms of its own graph, in both directions
    assert np.array_equal(graphs.atom_graph[graphs.index1], graphs.bond_graph)
    assert np.array_equal(graphs.atom_graph[graphs.index2], graphs.bond_graph)
    assert graphs.distances.dtype == np.float32 and (graphs.distances > 0).all()


def test_requested_outputs_only_equal_the_full_run(encoder, pymatgen_structures):
    full = encoder.encode(pymatgen_structures)
    v1 = encoder.encode(pymatgen_structures, outputs=["V1"])
    assert v1.names == ["V1"]
    np.testing.assert_array_equal(v1.packed("V1"), full.packed("V1"))
    some = encoder.encode(pymatgen_structures, outputs=["f", "prediction", "E3"])
    np.testing.assert_array_equal(some["f"], full["f"])
    np.testing.assert_array_equal(some["prediction"], full["prediction"])
    np.testing.assert_array_equal(some.packed("E3"), full.packed("E3"))
    with pytest.raises(KeyError, match="not encoder outputs"):
        encoder.encode(pymatgen_structures, outputs=["V9"])


def test_progress_hook_counts_each_structure_as_its_graph_is_built():
    # batch_size=2: the count runs on over batches; a structure that cannot be encoded counts too
    done = []
    MEGNetEncoder(batch_size=2).encode([nacl(), isolated_h(), nacl()], on_error="nan", progress=done.append)
    assert done == [1, 2, 3]
