"""CHGNet parents: chgnet's own layers as AtomSets features, behind the one parent interface.

Claims tested (issue 14): our CHGNet encoding equals chgnet's own ``predict_structure``
(``return_atom_feas`` -- chgnet's features after its third atom convolution, our ``V3`` --
``return_crystal_feas`` -- our ``f``, the sum of ``V4`` -- and its energy) within 1e-5 of each
output's scale (float32 error, tests/conftest.py) on the
crystals pymatgen ships and on 100 MatBench dielectric crystals, for each of the three
pretrained CHGNets.

What every parent family shares (offline checksummed loading, corrupt copies, the missing
extra, bad rows, alone vs in a batch, featurizers, pickles, the cache) is tested once for all
families in tests/test_parent_contract.py.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from sklearn_atomsets import CHGNetEncoder, parent_family, registered_parents

from .conftest import assert_float32_close

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("chgnet") is None,
                       reason="chgnet is not installed (optional extra: pip install 'sklearn-atomsets[chgnet]')"),
    # one torch thread: on the few shared cores of test machines torch's spinning pool made every
    # forward pass several times slower (tests/conftest.py)
    pytest.mark.usefixtures("one_torch_thread"),
]

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
    assert [name for name, family in names.items() if family == "chgnet"] == [
        "CHGNet-0.3.0", "CHGNet-0.2.0", "CHGNet-r2SCAN"]
    assert parent_family("CHGNet-0.3.0").label == "CHGNet" and parent_family("CHGNet-0.3.0").extra == "chgnet"
    assert any("deng_chgnet_2023" in c for c in CHGNetEncoder(PARENT).citations())


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


@pytest.mark.parametrize("name, model_name", [("CHGNet-0.2.0", "0.2.0"), ("CHGNet-r2SCAN", "r2scan")])
def test_other_chgnet_parents_predict_like_chgnet(name, model_name, pymatgen_structures):
    from chgnet.model import CHGNet

    structures = pymatgen_structures[:4]
    ref = CHGNet.load(model_name=model_name, use_device="cpu", verbose=False)
    assert_matches_chgnet(CHGNetEncoder(name).encode(structures), structures, ref)
