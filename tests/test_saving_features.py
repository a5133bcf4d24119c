"""Featurize once, train many times: a column of sets saved and reloaded bit for bit."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from sklearn_atomsets import (
    AtomicNumberSetFeaturizer,
    MEGNetElementSetFeaturizer,
    MEGNetSiteSetFeaturizer,
    WeightedSet,
    sets_from_list_columns,
    sets_to_list_columns,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_feature_cache")


@pytest.fixture(scope="module")
def featurized(pymatgen_structures):
    """Real featurizer output: V1 site sets, atomic numbers, V0 element sets, a failed row."""
    structures = [s for s in pymatgen_structures if len(s) <= 12][:5]
    structures.append(Structure(Lattice.cubic(20.0), ["H"], [[0, 0, 0]]))  # isolated atom: fails
    frame = pd.DataFrame({"structure": structures, "y": np.linspace(0.1, 1.7, len(structures))})
    frame["composition"] = [s.composition for s in structures]
    frame = MEGNetSiteSetFeaturizer("V1").featurize_dataframe(frame, "structure", ignore_errors=True,
                                                                return_errors=True, pbar=False)
    frame = AtomicNumberSetFeaturizer().featurize_dataframe(frame, "structure", pbar=False)
    frame = MEGNetElementSetFeaturizer().featurize_dataframe(frame, "composition", pbar=False)
    frame = frame.drop(columns=["structure", "composition"])
    assert frame["MEGNet V1 set"].isna().sum() == 1  # the failed row is NaN, kept
    return frame


SET_COLUMNS = ["MEGNet V1 set", "atomic number set", "MEGNet V0 set"]


def assert_same_bits(restored, frame):
    """Same columns, same order, same sets with the same dtypes and bytes, NaN where NaN."""
    assert list(restored.columns) == list(frame.columns)
    for name in frame.columns:
        if name not in SET_COLUMNS:
            # Arrow stores a missing text (the error column's NaN) as null: compare presence, then values
            assert list(restored[name].isna()) == list(frame[name].isna())
            assert list(restored[name].dropna()) == list(frame[name].dropna())
            continue
        for new, old in zip(restored[name], frame[name]):
            if not isinstance(old, WeightedSet):
                assert not isinstance(new, WeightedSet) and np.isnan(new)
                continue
            assert isinstance(new, WeightedSet)
            assert new.features.dtype == old.features.dtype and new.features.shape == old.features.shape
            assert new.features.tobytes() == old.features.tobytes()
            assert new.weights.dtype == old.weights.dtype and new.weights.tobytes() == old.weights.tobytes()


def test_as_dict_round_trip_is_exact_and_plain_json():
    rng = np.random.default_rng(0)
    for s in (WeightedSet(rng.normal(size=(5, 7)), rng.uniform(0.01, 3, 5)), WeightedSet.from_composition("Fe0.01Ni0.99")):
        d = json.loads(json.dumps(s.as_dict()))  # plain json, no custom encoder needed
        back = WeightedSet.from_dict(d)
        assert back == s and back.features.tobytes() == s.features.tobytes()
        assert back.weights.tobytes() == s.weights.tobytes() and back.features.dtype == s.features.dtype
        assert WeightedSet.from_str(s.to_json()) == s and WeightedSet.from_str(str(s)) == s
    with pytest.raises(ValueError, match="'features' and 'weights'"):
        WeightedSet.from_dict({"features": [[1.0]]})
    with pytest.raises(ValueError, match="not a table of rows"):
        WeightedSet.from_dict({"features": [[1.0], [1.0, 2.0]], "weights": [1, 1]})


def test_matminer_json_store_round_trips_bit_for_bit(featurized, tmp_path):
    from matminer.utils.io import load_dataframe_from_json, store_dataframe_as_json

    path = str(tmp_path / "features.json.gz")
    store_dataframe_as_json(featurized, path, pbar=False)
    with gzip.open(path, "rt") as f:
        assert '"@class": "WeightedSet"' in f.read()
    assert_same_bits(load_dataframe_from_json(path, pbar=False), featurized)


def test_parquet_round_trips_bit_for_bit_through_list_columns(featurized, tmp_path):
    pytest.importorskip("pyarrow")
    with pytest.raises(Exception, match="WeightedSet|Could not convert|ArrowInvalid|ArrowTypeError"):
        featurized.to_parquet(tmp_path / "raw.parquet")  # an object column of sets is not Arrow data
    flat = sets_to_list_columns(featurized)
    assert "MEGNet V1 set.features" in flat and "MEGNet V1 set" not in flat
    flat.to_parquet(tmp_path / "features.parquet")
    restored = sets_from_list_columns(pd.read_parquet(tmp_path / "features.parquet"))
    assert_same_bits(restored, featurized)
    assert_same_bits(sets_from_list_columns(flat), featurized)  # in memory too


def test_to_csv_writes_the_data_not_a_summary_and_read_csv_restores_it(featurized, tmp_path):
    path = tmp_path / "features.csv"
    featurized.to_csv(path, index=False)
    text = path.read_text()
    assert '""features"":' in text  # the rows themselves, not only "WeightedSet(5 rows, 32 features)"
    restored = pd.read_csv(path, converters={name: WeightedSet.from_str for name in SET_COLUMNS},
                           float_precision="round_trip")  # pandas' own floats (y) exact too
    assert_same_bits(restored, featurized)
    # what an older version wrote (the summary alone) is refused, not read as data
    with pytest.raises(ValueError, match="holds no data"):
        WeightedSet.from_str("WeightedSet(22 rows, 32 features)")
    # a printed frame still starts each cell with the readable summary
    assert "WeightedSet(" in featurized[["MEGNet V1 set"]].to_string().splitlines()[1]


def test_list_column_errors_name_the_problem():
    sets = pd.DataFrame({"s": [WeightedSet([[1.0]]), "text"]})
    with pytest.raises(TypeError, match="mixes WeightedSet with \\['str'\\]"):
        sets_to_list_columns(sets)
    with pytest.raises(ValueError, match="already has"):
        sets_to_list_columns(pd.DataFrame({"s": [WeightedSet([[1.0]])], "s.features": [0]}))
    with pytest.raises(ValueError, match="no 's.weights'"):
        sets_from_list_columns(pd.DataFrame({"s.features": [[np.ones(2)]]}))
    with pytest.raises(ValueError, match="Row 0 of 's' is not a valid set"):
        sets_from_list_columns(pd.DataFrame({"s.features": [[np.ones(2)]], "s.weights": [np.zeros(1)]}))
    with pytest.raises(TypeError, match="DataFrame"):
        sets_to_list_columns([WeightedSet([[1.0]])])
