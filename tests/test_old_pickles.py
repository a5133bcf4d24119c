"""Objects pickled by an earlier version load and work with today's code.

``tests/data/pickle_1d040cc.pkl`` was written at commit 1d040cc (``tests/data/make_pickle_1d040cc.py``),
before the MEGNet modules moved into ``parents/megnet/`` and before the general featurizer
names became the classes: its featurizers are named ``sklearn_atomsets._featurizers.MEGNet*``
and ``...SiteSetFeaturizer`` (then a subclass of the MEGNet one), its parent record
``sklearn_atomsets._parents.ParentModel``, its encoder ``sklearn_atomsets._encoder.MEGNetEncoder``.
"""

import pickle
from pathlib import Path

import numpy as np
import pytest

import sklearn_atomsets as sa
from tests.conftest import assert_float32_close
from tests.data.make_pickle_1d040cc import COMPOSITIONS, STRUCTURES
from tests.data.make_pickle_1d040cc import flat as _flat

PICKLE = Path(__file__).parent / "data" / "pickle_1d040cc.pkl"


@pytest.fixture(scope="module")
def saved():
    with open(PICKLE, "rb") as fh:
        return pickle.load(fh)


def test_old_featurizers_load_as_todays_classes_and_give_the_same_features(saved):
    assert saved["commit"] == "1d040cc"
    names = [type(f).__name__ for f in saved["structure_featurizers"] + saved["composition_featurizers"]]
    assert names == ["MEGNetStructureFeaturizer", "MEGNetSiteSetFeaturizer", "StructureFeaturizer",
                     "SiteSetFeaturizer", "MEGNetElementSetFeaturizer", "MEGNetCompositionFeaturizer",
                     "ElementSetFeaturizer", "CompositionFeaturizer", "AtomicNumberSetFeaturizer"]
    for featurizer in saved["structure_featurizers"]:
        assert isinstance(featurizer, (sa.StructureFeaturizer, sa.SiteSetFeaturizer))  # the classes now
        key = type(featurizer).__name__ + repr(featurizer.feature_labels()[:1])
        assert_float32_close(_flat(featurizer.featurize_many(STRUCTURES, pbar=False)), saved["features"][key])
    for featurizer in saved["composition_featurizers"]:
        key = type(featurizer).__name__ + repr(featurizer.feature_labels()[:1])
        assert_float32_close(_flat(featurizer.featurize_many(COMPOSITIONS, pbar=False)), saved["features"][key])


def test_old_megnet_records_encoder_and_pipeline_still_work(saved):
    parent = saved["parent_model"]
    assert type(parent) is sa.ParentModel and isinstance(parent, sa.parents.ParentRecord)
    assert (parent.name, parent.cutoff) == ("Eform_MP_2019", 5.0)
    encoder = saved["encoder"]
    assert type(encoder) is sa.MEGNetEncoder
    for old, new in zip(saved["encoder_V1"], encoder.encode(STRUCTURES, outputs=["V1"])["V1"]):
        assert_float32_close(new, old)
    assert_float32_close(saved["pipeline"].predict(COMPOSITIONS), saved["predictions"])


def test_old_failed_and_weighted_sets_load(saved):
    failed = saved["failed"]
    assert isinstance(failed, sa.FailedSet) and np.isnan(failed) and failed.error is None
    assert failed.reason.startswith("row 0: GraphConstructionError")
    assert saved["weighted_set"].weights.tolist() == [0.25, 0.75]
