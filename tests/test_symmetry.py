"""Symmetry-reduced encoding (issue: exact work reduction, item 2).

Claims tested: colour refinement puts every spglib orbit in one class and never merges
sites of different elements or structures; the encoder run once per class (multiplicities
in every mean and in set2set's softmax, results copied back to every site and bond) gives
the outputs of the full run within float32 noise (REGROUPED_RTOL of each output's scale) on real
MatBench crystals and on pymatgen's; low-symmetry structures are left unreduced; and a hash
collision in the refinement cannot corrupt outputs (the exact check sends the batch down the
full path).
"""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

import sklearn_atomsets.parents.megnet._symmetry as symmetry
from sklearn_atomsets import MEGNetEncoder, build_graphs
from sklearn_atomsets.parents.megnet._symmetry import equivalence_classes, reduce_graphs

from .conftest import REGROUPED_RTOL
from .test_encoder_parity import assert_outputs_match

NACL = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def assert_same_outputs(full, reduced):
    """Float32 noise: sums over a graph's bonds run in another order (and set2set's softmax
    over fewer, weighted rows); measured up to 1.1e-5 of the scale (set2set_bond, logK)."""
    assert full.names == reduced.names
    assert_outputs_match(reduced, full, rel_tol=REGROUPED_RTOL)


def test_rock_salt_has_one_class_per_element():
    graphs, _, _ = build_graphs([NACL], 5.0)
    classes = equivalence_classes(graphs)
    assert len(np.unique(classes)) == 2
    for z in (11, 17):
        assert len(np.unique(classes[graphs.atomic_numbers == z])) == 1
    reduced = reduce_graphs(graphs)
    assert reduced.graphs.n_atoms.tolist() == [2]
    assert sorted(reduced.atom_weight.tolist()) == [4.0, 4.0]
    # each bond's twin has its length, and the reduced bonds are the representatives' own
    np.testing.assert_array_equal(reduced.graphs.distances[reduced.bond_index], graphs.distances)
    assert reduced.bond_weight.sum() == len(graphs.distances)


SYMMETRIC = [
    NACL,
    Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]),
    Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"],
                              [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]]),
    Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.9), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0]]),
    Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.46), ["Ca", "F"], [[0, 0, 0], [0.25] * 3]),
]


def _orbits_split(structures, classes, symprec):
    start, split, total = 0, 0, 0
    for s in structures:
        mine = classes[start : start + len(s)]
        orbits = SpacegroupAnalyzer(s, symprec=symprec).get_symmetry_dataset().equivalent_atoms
        for orbit in np.unique(orbits):
            total += 1
            split += len(np.unique(mine[orbits == orbit])) > 1
        start += len(s)
    return split, total


def test_symmetry_equivalent_sites_share_a_class():
    graphs, _, _ = build_graphs(SYMMETRIC, 5.0)
    classes = equivalence_classes(graphs)
    split, total = _orbits_split(SYMMETRIC, classes, 1e-5)
    assert (split, total) == (0, 11)  # Na Cl | Ti O | Zn O | Sr Ti O | Ca F
    assert len(np.unique(classes)) == 11
    assert sum(len(s) for s in SYMMETRIC) == 8 + 6 + 4 + 5 + 12


def test_classes_follow_spglib_orbits_on_real_crystals_and_respect_labels(dielectric_structures):
    """Relaxed crystals are symmetric to ~1e-6 A only: a few spglib orbits (at 1e-5 A) hold
    sites whose bond lengths differ by more than the 1e-6 A the classes allow (19 of 864 on
    these 200 crystals when measured); classes never mix elements or structures."""
    graphs, ok, _ = build_graphs(dielectric_structures, 5.0, on_error="nan")
    classes = equivalence_classes(graphs)
    kept = [s for s, good in zip(dielectric_structures, ok) if good]
    split, total = _orbits_split(kept, classes, 1e-5)
    assert split <= 0.05 * total
    assert len(np.unique(classes)) < 0.45 * len(classes)  # MatBench crystals are mostly symmetric
    for label in (graphs.atomic_numbers, graphs.atom_graph):
        assert all(len(np.unique(label[classes == c])) == 1 for c in np.unique(classes))


def test_structure_without_symmetry_is_left_unreduced():
    rng = np.random.default_rng(0)
    supercell = NACL * (2, 1, 1)
    shaken = Structure(supercell.lattice, supercell.species, supercell.cart_coords + rng.normal(0, 0.05, (16, 3)),
                       coords_are_cartesian=True)
    graphs, _, _ = build_graphs([shaken], 5.0)
    assert len(np.unique(equivalence_classes(graphs))) == 16
    assert reduce_graphs(graphs) is None


@pytest.mark.parametrize("parent", ["Eform_MP_2019", "logK_MP_2019", "Bandgap_classifier_MP_2018"])
def test_reduced_encoding_equals_the_full_run_on_dielectric(parent, shared_model_dir, dielectric_structures):
    full = MEGNetEncoder(parent, batch_size=64, symmetry_reduction=False).encode(dielectric_structures, on_error="nan")
    reduced = MEGNetEncoder(parent, batch_size=64).encode(dielectric_structures, on_error="nan")
    assert reduced.ok.sum() >= 195
    assert_same_outputs(full, reduced)


def test_reduced_encoding_equals_the_full_run_on_pymatgen_structures(pymatgen_structures):
    full = MEGNetEncoder(symmetry_reduction=False).encode(pymatgen_structures)
    assert_same_outputs(full, MEGNetEncoder().encode(pymatgen_structures))


def test_reduction_removes_most_of_the_work_on_symmetric_crystals(dielectric_structures):
    graphs, _, _ = build_graphs(dielectric_structures, 5.0, on_error="nan")
    reduced = reduce_graphs(graphs)
    assert len(reduced.graphs.index1) < 0.6 * len(graphs.index1)
    assert reduced.atom_weight.sum() == len(graphs.atomic_numbers)
    assert reduced.bond_weight.sum() == len(graphs.index1)


def test_a_hash_collision_cannot_corrupt_outputs(monkeypatch, pymatgen_structures):
    """With a hash that maps everything to one value, refinement stops at (structure,
    element, degree) classes, which are not stable for most crystals: the exact check must
    catch it, and the encoder must then run those batches in full."""
    full = MEGNetEncoder(symmetry_reduction=False).encode(pymatgen_structures)
    monkeypatch.setattr(symmetry, "_splitmix64", lambda x: np.zeros_like(x, dtype=np.uint64))
    graphs, _, _ = build_graphs(pymatgen_structures, 5.0)
    assert equivalence_classes(graphs) is None
    assert reduce_graphs(graphs) is None
    assert_same_outputs(full, MEGNetEncoder().encode(pymatgen_structures))


def test_refinement_that_does_not_settle_falls_back(monkeypatch, pymatgen_structures):
    monkeypatch.setattr(symmetry, "MAX_ROUNDS", 0)
    graphs, _, _ = build_graphs(pymatgen_structures, 5.0)
    assert reduce_graphs(graphs) is None
