"""Writes ``pickle_1d040cc.pkl``: objects pickled by sklearn-atomsets at commit 1d040cc (before
the MEGNet modules moved into ``parents/megnet/`` and the general featurizer names became the
classes), with the features and predictions that code computed from them.

Run once from a checkout of that commit (``PYTHONPATH=<checkout> python make_pickle_1d040cc.py``);
``tests/test_old_pickles.py`` loads the file with today's code and checks that the objects still
work and give the same numbers (it imports ``STRUCTURES``, ``COMPOSITIONS`` and ``flat`` from here).
Importing this module writes nothing: pytest's ``--doctest-modules`` imports every module under
``tests/``, and a pickle rewritten by today's code would test nothing.
"""

import pickle
import sys
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

import sklearn_atomsets as sa

STRUCTURES = [
    Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
]
COMPOSITIONS = ["SiO2", "Fe2O3", "NaCl", "Cu"]


def flat(rows):
    """Features as float arrays (a set: its rows and weights)."""
    out = []
    for row in rows:
        for value in row:
            if isinstance(value, sa.WeightedSet):
                out.append(np.concatenate([np.ravel(value.features), np.ravel(value.weights)]))
            else:
                out.append(np.atleast_1d(np.asarray(value, dtype=float)))
    return np.concatenate(out)


def main():
    from sklearn.pipeline import make_pipeline

    structure_featurizers = [
        sa.MEGNetStructureFeaturizer(),
        sa.MEGNetSiteSetFeaturizer("V2"),
        sa.StructureFeaturizer(layers=("f", "V1"), parent="CHGNet-0.3.0"),
        sa.SiteSetFeaturizer("V1"),
    ]
    composition_featurizers = [
        sa.MEGNetElementSetFeaturizer(),
        sa.MEGNetCompositionFeaturizer(),
        sa.ElementSetFeaturizer(),
        sa.CompositionFeaturizer(stats=("mean",)),
        sa.AtomicNumberSetFeaturizer(),
    ]
    features = {}
    for f in structure_featurizers:
        features[type(f).__name__ + repr(f.feature_labels()[:1])] = flat(f.featurize_many(STRUCTURES, pbar=False))
    for f in composition_featurizers:
        features[type(f).__name__ + repr(f.feature_labels()[:1])] = flat(f.featurize_many(COMPOSITIONS, pbar=False))
    y = np.array([-3.0, -1.7, -2.1, 0.0])
    model = make_pipeline(sa.MEGNetElementSetFeaturizer(),
                          sa.AtomSetsRegressor(max_epochs=3, validation_fraction=None, random_state=0))
    model.fit(COMPOSITIONS, y)
    encoder = sa.MEGNetEncoder()
    saved = {
        "commit": "1d040cc",
        "structure_featurizers": structure_featurizers,
        "composition_featurizers": composition_featurizers,
        "features": features,
        "parent_model": sa.load_parent("Eform_MP_2019"),
        "encoder": encoder,
        "encoder_V1": encoder.encode(STRUCTURES, outputs=["V1"])["V1"],
        "pipeline": model,
        "predictions": model.predict(COMPOSITIONS),
        "failed": sa.FailedSet("row 0: GraphConstructionError: structure (He): site(s) [0] have no neighbour"),
        "weighted_set": sa.WeightedSet(np.eye(2, dtype=np.float32), np.array([0.25, 0.75])),
    }
    with open(Path(__file__).with_name("pickle_1d040cc.pkl"), "wb") as fh:
        pickle.dump(saved, fh)
    print("wrote", {k: type(v).__name__ for k, v in saved.items()}, file=sys.stderr)


if __name__ == "__main__":
    main()
