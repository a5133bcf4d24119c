"""CHGNet parents: chgnet's own layers as AtomSets features, behind the one parent interface.

Claims tested (issue 14): our CHGNet encoding equals chgnet's own ``predict_structure``
(``return_atom_feas`` -- chgnet's features after its third atom convolution, our ``V3`` --
``return_crystal_feas`` -- our ``f``, the sum of ``V4`` -- and its energy) within 1e-5 of each
output's scale (float32 error, tests/conftest.py) on the
crystals pymatgen ships and on 100 MatBench dielectric crystals; a structure gets the same
features alone and in a batch; bad rows are that row's error; featurizers and AtomSets
estimators take ``parent="CHGNet-0.3.0"`` unchanged.
"""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from sklearn.pipeline import Pipeline

from sklearn_atomsets import (
    AtomSetsRegressor,
    CHGNetEncoder,
    GraphConstructionError,
    MEGNetSiteSetFeaturizer,
    MEGNetStructureFeaturizer,
    load_parent,
    parent_family,
    registered_parents,
)
from sklearn_atomsets.parents import chgnet as chgnet_family

from .conftest import assert_float32_close, scale_of

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("chgnet") is None,
    reason="chgnet is not installed (optional extra: pip install 'sklearn-atomsets[chgnet]')",
)

PARENT = "CHGNet-0.3.0"


@pytest.fixture(scope="module")
def reference():
    """chgnet's own pretrained model, loaded by chgnet."""
    from chgnet.model import CHGNet

    return CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)


@pytest.fixture(scope="module")
def encoder():
    return CHGNetEncoder(PARENT, batch_size=16)


def assert_matches_chgnet(out, structures, reference):
    assert out.ok.all(), out.errors
    ref = reference.predict_structure(
        structures, task="e", return_atom_feas=True, return_crystal_feas=True, batch_size=16
    )
    ref = [ref] if isinstance(ref, dict) else ref
    for k, (v3, r) in enumerate(zip(out["V3"], ref)):
        assert v3.shape == r["atom_fea"].shape, f"V3 of structure {k}"
    # each output up to float32 error of its scale (tests/conftest.py): our batches and chgnet's
    # order their sums differently
    assert_float32_close(out.packed("V3"), np.vstack([r["atom_fea"] for r in ref]), err_msg="V3")
    # chgnet's crystal feature pools V4 (its readout reads V4): both are checked through it
    assert_float32_close(np.stack([v4.sum(axis=0) for v4 in out["V4"]]), np.stack([r["crystal_fea"] for r in ref]),
                         err_msg="sum of V4")
    assert_float32_close(out["f"], np.stack([r["crystal_fea"] for r in ref]), err_msg="f")
    assert_float32_close(out["prediction"][:, 0], [float(r["e"]) for r in ref], err_msg="prediction")
    assert np.abs(out.packed("V3")).max() > 0.1  # nothing trivially equal


def test_registry_names_every_chgnet_parent():
    names = registered_parents()
    for name in ("CHGNet-0.3.0", "CHGNet-0.2.0", "CHGNet-r2SCAN"):
        assert names[name] == "chgnet"
        parent = load_parent(name)
        assert parent.name == name and parent.path.is_file() and len(parent.sha256) == 64
    assert names["Eform_MP_2019"] == "megnet"
    assert parent_family("CHGNet-0.3.0").label == "CHGNet"


def test_unknown_parent_lists_the_registered_ones():
    with pytest.raises(ValueError, match="CHGNet-0.3.0"):
        load_parent("CHGNet-9.9")


def test_corrupt_copy_is_named(monkeypatch, tmp_path):
    fake = tmp_path / "pretrained" / "0.3.0" / "chgnet_0.3.0_e29f68s314m37.pth.tar"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(chgnet_family, "_chgnet_dir", lambda: tmp_path)
    with pytest.raises(chgnet_family.ParentModelCorruptError, match="sha256"):
        load_parent(PARENT)


def test_missing_extra_names_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_chgnet(name, *args, **kwargs):
        if name.startswith("chgnet"):
            raise ImportError("No module named 'chgnet'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_chgnet)
    with pytest.raises(ImportError, match=r"sklearn-atomsets\[chgnet\]"):
        CHGNetEncoder(PARENT).model_


def test_outputs_match_chgnet_on_pymatgen_structures(encoder, reference, pymatgen_structures):
    out = encoder.encode(pymatgen_structures)
    assert set(out.names) == {"V0", "V1", "V2", "V3", "V4", "f", "prediction"}
    assert_matches_chgnet(out, pymatgen_structures, reference)
    # V0 is the element embedding, row by row
    table = encoder.element_embedding()
    np.testing.assert_array_equal(out.packed("V0"), table[[site.specie.Z for s in pymatgen_structures for site in s]])


@pytest.mark.slow
def test_outputs_match_chgnet_on_100_dielectric_crystals(encoder, reference, dielectric_structures):
    structures = dielectric_structures[:100]
    assert_matches_chgnet(encoder.encode(structures), structures, reference)


def test_alone_and_in_a_batch_agree(encoder, pymatgen_structures):
    batch = encoder.encode(pymatgen_structures)
    for k in (0, 7, len(pymatgen_structures) - 1):
        alone = encoder.encode([pymatgen_structures[k]])
        for name in ("V1", "V4", "f", "prediction"):
            # up to float32 error of the output's scale over the batch (tests/conftest.py)
            assert_float32_close(alone[name][0], batch[name][k], scale=scale_of(batch.packed(name) if name[0] == "V"
                                                                             else batch[name]), err_msg=name)


def test_early_layers_alone_stop_early_and_agree(encoder, pymatgen_structures):
    full = encoder.encode(pymatgen_structures[:5])
    early = encoder.encode(pymatgen_structures[:5], outputs=["V1"])
    assert early.names == ["V1"]
    assert_float32_close(early.packed("V1"), full.packed("V1"))


def _nacl():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


BAD = {
    "isolated atom": Structure(Lattice.cubic(30.0), ["Na"], [[0, 0, 0]]),
    "disordered": Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    "outside the embedding": Structure(Lattice.cubic(4.0), ["Am", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    "not a structure": "NaCl",
}


@pytest.mark.parametrize("problem", BAD)
def test_bad_rows_are_their_own_error(encoder, problem):
    good = _nacl()
    out = encoder.encode([good, BAD[problem], good], on_error="nan")
    np.testing.assert_array_equal(out.ok, [True, False, True])
    assert set(out.errors) == {1}
    assert np.isnan(out["f"][1]).all() and out["V1"][1] is None
    assert_float32_close(out["f"][0], out["f"][2])
    with pytest.raises(GraphConstructionError):
        encoder.encode([BAD[problem]])


def test_featurizers_take_a_chgnet_parent(pymatgen_structures):
    sets = MEGNetSiteSetFeaturizer("V4", parent=PARENT)
    assert sets.feature_labels() == ["CHGNet V4 set"]
    assert any("deng_chgnet_2023" in c for c in sets.citations())
    assert not any("chen_graph_2019" in c for c in sets.citations())
    rows = sets.featurize_many(pymatgen_structures[:3] + [BAD["disordered"]], ignore_errors=True,
                               return_errors=True, pbar=False)
    assert rows[0][0].features.shape == (len(pymatgen_structures[0]), 64)
    assert "disordered" in rows[3][1]
    fixed = MEGNetStructureFeaturizer(layers=("f", "V2"), stats=("mean",), parent=PARENT)
    assert len(fixed.featurize(_nacl())) == 128 and fixed.feature_labels()[64] == "CHGNet V2 mean 0"
    with pytest.raises(ValueError, match="V4"):
        MEGNetSiteSetFeaturizer("V5", parent=PARENT).featurize(_nacl())
    clone = pickle.loads(pickle.dumps(sets))
    assert clone.parent == PARENT and "_encoder_cache" not in clone.__dict__


def test_pipeline_with_chgnet_parent(pymatgen_structures):
    X = pymatgen_structures[:12]
    y = np.array([len(s) for s in X], dtype=float)
    model = Pipeline([
        ("featurize", MEGNetSiteSetFeaturizer("V4", parent=PARENT, cache=False)),
        ("model", AtomSetsRegressor(max_epochs=2, validation_fraction=None, random_state=0)),
    ]).fit(X, y)
    pred = model.predict(X)
    assert pred.shape == (len(X),) and np.isfinite(pred).all()


@pytest.mark.parametrize("name, model_name", [("CHGNet-0.2.0", "0.2.0"), ("CHGNet-r2SCAN", "r2scan")])
def test_other_chgnet_parents_predict_like_chgnet(name, model_name, pymatgen_structures):
    from chgnet.model import CHGNet

    structures = pymatgen_structures[:4]
    ref = CHGNet.load(model_name=model_name, use_device="cpu", verbose=False)
    assert_matches_chgnet(CHGNetEncoder(name).encode(structures), structures, ref)


def test_cache_keeps_parents_apart():
    nacl = _nacl()
    megnet = MEGNetSiteSetFeaturizer("V1").featurize(nacl)[0]
    chgnet = MEGNetSiteSetFeaturizer("V1", parent=PARENT).featurize(nacl)[0]
    assert megnet.features.shape[1] == 32 and chgnet.features.shape[1] == 64
    uncached = MEGNetSiteSetFeaturizer("V1", parent=PARENT, cache=False).featurize(nacl)[0]
    np.testing.assert_array_equal(chgnet.features, uncached.features)


def test_progress_hook_counts_each_structure_as_its_graph_is_built(pymatgen_structures):
    done = []
    structures = [s for s in pymatgen_structures if len(s) <= 8][:2]
    isolated = Structure(Lattice.cubic(30.0), ["Na"], [[0, 0, 0]])
    CHGNetEncoder(PARENT, batch_size=2).encode([*structures, isolated], on_error="nan", outputs=["V1"],
                                              progress=done.append)
    assert done == [1, 2, 3]
