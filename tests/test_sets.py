"""The set representation: what a featurizer produces and an AtomSets estimator consumes."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition
from sklearn.model_selection import KFold
from sklearn.utils import _safe_indexing

from sklearn_atomsets import WeightedSet, as_sets
from sklearn_atomsets._sets import as_packed_sets, pack_sets

from .conftest import assert_float32_close


def test_composition_becomes_atomic_numbers_weighted_by_atom_fraction():
    s = WeightedSet.from_composition("Fe0.01Ni0.99")
    np.testing.assert_array_equal(s.features, [26, 28])
    assert_float32_close(s.weights, [0.01, 0.99])
    oxidised = WeightedSet.from_composition(Composition({"Fe3+": 2, "O2-": 3}))
    assert oxidised == WeightedSet.from_composition("Fe2O3")
    assert_float32_close(oxidised.weights, [0.6, 0.4])  # O (Z=8) first
    assert repr(s) == "WeightedSet(2 rows, atomic numbers)" and len(s) == 2


@pytest.mark.parametrize(
    ("features", "weights", "match"),
    [
        (np.zeros((0, 3)), None, "empty"),
        ([[1.0, np.nan]], None, "NaN"),
        ([0.5, 1.5], None, "integer atomic numbers"),
        ([[1.0], [2.0]], [1.0], "weights must have shape"),
        ([[1.0], [2.0]], [1.0, 0.0], "positive"),
        (np.zeros((2, 2, 2)), None, "1-D"),
        ([0, 8], None, ">= 1"),
    ],
)
def test_invalid_sets_are_refused_with_the_reason(features, weights, match):
    with pytest.raises(ValueError, match=match):
        WeightedSet(features, weights)


def test_sets_survive_pandas_cv_indexing_and_pickle():
    sets = [WeightedSet(np.random.default_rng(i).random((i + 1, 4))) for i in range(6)]
    frame = pd.DataFrame({"V1": sets, "y": np.arange(6.0)})
    for train, test in KFold(3).split(frame):
        for container in (sets, np.array(sets + [None], dtype=object)[:-1], frame["V1"], frame[["V1"]]):
            picked = as_sets(_safe_indexing(container, test))
            assert picked == [sets[i] for i in test]
    restored = pickle.loads(pickle.dumps(frame))
    assert list(restored["V1"]) == sets


def test_x_forms_and_their_errors():
    assert len(as_sets(np.ones((5, 3)))) == 5  # a table: one-row sets
    assert as_sets([np.array([3, 8])])[0].is_atomic_numbers
    with pytest.raises(ValueError, match="different widths"):
        as_sets([WeightedSet(np.ones((2, 3))), WeightedSet(np.ones((2, 4)))])
    with pytest.raises(ValueError, match="mixes"):
        as_sets([WeightedSet([3, 8]), WeightedSet(np.ones((2, 4)))])
    with pytest.raises(ValueError, match="Sample 1 has no set"):
        as_sets([WeightedSet([3, 8]), np.nan])
    with pytest.raises(ValueError, match="Sample 0 has no set"):
        as_sets([None])
    with pytest.raises(TypeError, match="sequence of sets"):
        as_sets("NaCl")


def test_packing_gathers_batches_without_per_material_loops():
    sets = [WeightedSet(np.full((n, 2), float(n)), np.arange(1, n + 1)) for n in (3, 1, 4, 2)]
    packed = pack_sets(sets)
    np.testing.assert_array_equal(packed.offsets, [0, 3, 4, 8, 10])
    rows, segment = packed.rows_of(np.array([2, 0]))
    np.testing.assert_array_equal(packed.features[rows, 0], [4, 4, 4, 4, 3, 3, 3])
    np.testing.assert_array_equal(segment, [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(packed.weights[rows], [1, 2, 3, 4, 1, 2, 3])
    table = as_packed_sets(np.arange(6.0).reshape(3, 2))
    np.testing.assert_array_equal(table.offsets, [0, 1, 2, 3])
