"""SevenNet parents: sevenn's own model and graphs as AtomSets features, behind the one parent interface.

Claims tested (issue 31, item 5): our SevenNet encoding equals sevenn's own forward pass (the
node features after each equivariant gate, read by hooks registered here, and its energy;
the energy also through sevenn's ASE calculator) on the crystals pymatgen ships and on 30
MatBench dielectric crystals; ``V1`` .. ``V5`` are the rotation-invariant channels (the
``l > 0`` ones left out turn with the cell); the pass stops after the last output asked for
and never computes forces; elements outside the model's set are that row's error; the
fidelity channel of a multi-fidelity model is the one read, and part of the cache key.

What every parent family shares (offline checksummed loading, corrupt copies, the missing
extra, bad rows, alone vs in a batch, featurizers, pickles, the cache) is tested once for all
families in tests/test_parent_contract.py.

Time: the model is built once for the module (the featurizers' shared encoder), and one
batch of pymatgen's 20 crystals plus the 30 smallest of the first 200 dielectric crystals
is encoded once by us and once by sevenn.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

pytest.importorskip("sevenn", reason="sevenn is not installed (optional extra: pip install 'sklearn-atomsets[sevennet]')")

from sklearn_atomsets import (  # noqa: E402 - after the skip
    ElementSetFeaturizer,
    GraphConstructionError,
    SevenNetEncoder,
    load_parent,
    parent_family,
    registered_parents,
)
from sklearn_atomsets._featurizers import _shared_encoder  # noqa: E402
from sklearn_atomsets.parents import sevennet as sevennet_family  # noqa: E402

from .conftest import KERNEL_RTOL, assert_float32_close, scale_of  # noqa: E402

# one torch thread: on the few shared cores of test machines torch's spinning pool made every
# forward pass several times slower (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARENT = "SevenNet-0"
SEVENN_NAMES = {"SevenNet-0": "7net-0", "SevenNet-0-22May2024": "7net-0_22May2024", "SevenNet-l3i5": "7net-l3i5",
                "SevenNet-MF-0": "7net-mf-0", "SevenNet-MF-0-r2SCAN": "7net-mf-0"}
GATES = [f"{i}_equivariant_gate" for i in range(5)]


@pytest.fixture(scope="module")
def encoder():
    """The encoder the featurizers share (default batch size), so the model is built once here."""
    return _shared_encoder(PARENT, 256, "cpu")


@pytest.fixture(scope="module")
def calculator():
    """sevenn's ASE calculator, which loads the model itself from sevenn's own name for it."""
    from sevenn.calculator import SevenNetCalculator

    with pytest.warns(UserWarning, match="accelerator"):
        return SevenNetCalculator(model="7net-0", device="cpu")


@pytest.fixture(scope="module")
def structures(pymatgen_structures, dielectric_structures):
    """pymatgen's crystals and the 30 smallest of the first 200 dielectric ones (in their order)."""
    smallest = sorted(np.argsort([len(s) for s in dielectric_structures], kind="stable")[:30])
    return list(pymatgen_structures) + [dielectric_structures[k] for k in smallest]


@pytest.fixture(scope="module")
def ours(encoder, structures):
    return encoder.encode(structures)


_FCC = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]


def _nacl():
    # rock salt written out: Structure.from_spacegroup spends ~2 s in symmetry checks
    return Structure(Lattice.cubic(5.69), ["Na"] * 4 + ["Cl"] * 4, _FCC + [[x + 0.5, y, z] for x, y, z in _FCC])


def sevenn_graphs(structures, cutoff):
    """Batch as sevenn's inference script does: its graph of each structure, PyG's collation."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import unlabeled_atoms_to_graph
    from torch_geometric.data import Batch

    return Batch.from_data_list([AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(
        AseAtomsAdaptor.get_atoms(s), cutoff)) for s in structures])


class GateReader:
    """Forward hooks on a sevenn model: the whole node feature after the embedding and after
    each equivariant gate, and the number of calls of each hooked module."""

    def __init__(self, model, names=("onehot_to_feature_x", *GATES)):
        self.features, self.calls = {}, dict.fromkeys(names, 0)
        self.handles = [model._modules[name].register_forward_hook(self._read(name)) for name in names]

    def _read(self, name):
        def read(module, args, output):
            self.calls[name] += 1
            self.features[name] = output["x"].detach().clone().numpy()

        return read

    def remove(self):
        for handle in self.handles:
            handle.remove()


@pytest.fixture(scope="module")
def reference(encoder, structures):
    """sevenn's own forward pass (``AtomGraphSequential.forward``) on sevenn's batch of the same
    structures, on a copy of the model without its force module (removed as sevenn's own deploy
    does: the gradient adds nothing to what is compared, only time), read by hooks."""
    import torch

    model = copy.deepcopy(encoder.model_)
    model.delete_module_by_key("force_output")
    reader = GateReader(model)
    with torch.no_grad():
        out = model(sevenn_graphs(structures, model.cutoff))
    reader.remove()
    energy = (out["inferred_total_energy"] / out["num_atoms"]).numpy()
    return reader.features, energy, model


def test_registry_names_every_sevennet_parent():
    from sevenn.util import pretrained_name_to_path

    names = registered_parents()
    for name, sevenn_name in SEVENN_NAMES.items():
        assert names[name] == "sevennet"
        parent = load_parent(name)
        # the file sevenn itself loads for its own name, checksummed
        assert parent.path.samefile(pretrained_name_to_path(sevenn_name))
        assert parent.sha256 == sevennet_family.SEVENNET_PARENTS[name].sha256
    assert [name for name, family in names.items() if family == "sevennet"] == list(SEVENN_NAMES)
    assert load_parent("SevenNet-MF-0").modal == "PBE" and load_parent("SevenNet-MF-0-r2SCAN").modal == "R2SCAN"
    assert load_parent("SevenNet-0").modal is None
    assert parent_family(PARENT).label == "SevenNet" and parent_family(PARENT).extra == "sevennet"
    assert any("park_scalable_2024" in c for c in SevenNetEncoder(PARENT).citations())


def test_each_family_recognises_its_own_pth_checkpoints(tmp_path):
    """sevenn's and CHGNet's checkpoints may both end in .pth: the file's content decides."""
    sevenn_copy = tmp_path / "mine.pth"
    shutil.copy(load_parent(PARENT).path, sevenn_copy)
    assert parent_family(sevenn_copy).name == "sevennet"
    assert load_parent(sevenn_copy).sha256 == load_parent(PARENT).sha256
    if importlib.util.find_spec("chgnet") is not None:
        chgnet_copy = tmp_path / "theirs.pth"
        shutil.copy(load_parent("CHGNet-0.3.0").path, chgnet_copy)
        assert parent_family(chgnet_copy).name == "chgnet"
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="SevenNet-0"):
        parent_family(junk)


def test_a_bad_modal_is_named():
    with pytest.raises(ValueError, match="PBE"):
        load_parent("SevenNet-MF-0", modal="R2SCAN")
    with pytest.raises(TypeError, match="modal"):
        load_parent(PARENT, download=False)


def test_weights_are_those_sevenn_loads_for_its_own_name(encoder, calculator):
    import torch

    theirs, ours_ = calculator.model.state_dict(), encoder.model_.state_dict()
    assert set(theirs) == set(ours_) and all(torch.equal(ours_[key], value) for key, value in theirs.items())


def test_outputs_match_sevenns_forward_pass(encoder, ours, reference, structures):
    features, energy, _ = reference
    assert ours.ok.all(), ours.errors
    assert ours.names == ["V0", "V1", "V2", "V3", "V4", "V5", "f", "prediction"]
    # the invariant part of each block's output is its first 128 channels, the 128x0e
    irreps = [str(encoder.model_._modules[name].gate.irreps_out) for name in GATES]
    assert irreps == ["128x0e+64x1e+32x2e"] * 4 + ["128x0e"]
    assert_float32_close(ours.packed("V0"), features["onehot_to_feature_x"], err_msg="V0")
    for i, name in enumerate(GATES, start=1):
        assert_float32_close(ours.packed(f"V{i}"), features[name][:, :128], err_msg=f"V{i}")
    v5 = np.split(features[GATES[-1]], np.cumsum([len(s) for s in structures])[:-1])
    assert_float32_close(ours["f"], np.stack([v.mean(axis=0) for v in v5]), err_msg="f = mean of V5")
    assert_float32_close(ours["prediction"][:, 0], energy, err_msg="prediction")
    assert np.abs(ours.packed("V3")).max() > 0.1  # nothing trivially equal
    # V0 is the element embedding, row by row
    table = encoder.element_embedding()
    np.testing.assert_array_equal(ours.packed("V0"), table[[site.specie.Z for s in structures for site in s]])


def test_prediction_is_sevenns_calculator_energy_per_atom(ours, structures, calculator):
    """sevenn's ASE calculator (one structure at a time, with forces and stresses)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    picks = [k for k, s in enumerate(structures) if len(s) <= 3][:4]
    assert len(picks) == 4
    energies = []
    for k in picks:
        atoms = AseAtomsAdaptor.get_atoms(structures[k])
        atoms.calc = calculator
        energies.append(atoms.get_potential_energy() / len(atoms))
    assert_float32_close(ours["prediction"][picks, 0], energies, scale=scale_of(ours["prediction"]))


def _rotated(structure, seed=0):
    """The same crystal turned in space: Cartesian coordinates rotated with the lattice."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    rotation = q * np.sign(np.linalg.det(q))  # proper
    return Structure(Lattice(structure.lattice.matrix @ rotation.T), structure.species, structure.frac_coords)


def test_site_layers_are_the_rotation_invariant_channels(encoder, pymatgen_structures):
    li2o2 = next(s for s in pymatgen_structures if s.composition.reduced_formula == "Li2O2")
    turned = _rotated(li2o2)
    reader = GateReader(encoder.model_)
    try:
        before = encoder.encode([li2o2])
        whole_before = dict(reader.features)
        after = encoder.encode([turned])
        whole_after = dict(reader.features)
    finally:
        reader.remove()
    for name in (*encoder.site_layers, "f", "prediction"):
        assert_float32_close(after.packed(name) if name[0] == "V" else after[name],
                             before.packed(name) if name[0] == "V" else before[name], err_msg=name)
    # the channels left out (l = 1, 2) turn with the crystal: they are no features of it
    for name in GATES[:-1]:
        moved = np.abs(whole_after[name][:, 128:] - whole_before[name][:, 128:]).max()
        assert moved > 1e2 * KERNEL_RTOL * scale_of(whole_before[name][:, 128:]), name


def test_the_pass_stops_after_the_last_output_and_computes_no_forces(encoder, pymatgen_structures):
    model = encoder.model_
    names = ("edge_embedding", "0_equivariant_gate", "1_self_connection_intro", "reduce_input_to_hidden",
             "force_output")
    counts = {}
    handles = [model._modules[n].register_forward_hook(lambda m, a, o, n=n: counts.__setitem__(n, counts.get(n, 0) + 1))
               for n in names]
    try:
        v1 = encoder.encode(pymatgen_structures[:3], outputs=["V1"])
        assert counts == {"edge_embedding": 1, "0_equivariant_gate": 1}
        counts.clear()
        encoder.encode(pymatgen_structures[:3], outputs=["V0"])
        assert counts == {}  # the embedding needs no edges
        counts.clear()
        full = encoder.encode(pymatgen_structures[:3])
        assert "force_output" not in counts and counts["reduce_input_to_hidden"] == 1
    finally:
        for handle in handles:
            handle.remove()
    # what those passes give is tested for every family in tests/test_parent_contract.py
    assert v1.names == ["V1"] and full.ok.all()


def test_an_element_outside_the_set_is_that_rows_error_naming_it(encoder):
    """Po (Z = 84) lies within the embedding's range but outside SevenNet's 89-element set (the
    bad inputs every family refuses alike are in tests/test_parent_contract.py)."""
    polonium = Structure(Lattice.cubic(4.0), ["Po", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    out = encoder.encode([_nacl(), polonium, _nacl()], on_error="nan")
    np.testing.assert_array_equal(out.ok, [True, False, True])
    assert set(out.errors) == {1} and np.isnan(out["f"][1]).all() and out["V1"][1] is None
    assert "structure 1" in str(out.errors[1])
    assert_float32_close(out["f"][0], out["f"][2])
    with pytest.raises(GraphConstructionError, match=r"Po, outside the SevenNet parent's element set.*84, 85"):
        encoder.encode([polonium])


def test_element_sets_refuse_elements_outside_the_set():
    featurizer = ElementSetFeaturizer(parent=PARENT)
    (fe_ni,) = featurizer.featurize("Fe0.01Ni0.99")
    assert fe_ni.features.shape == (2, 128) and np.isfinite(fe_ni.features).all()
    rows = featurizer.featurize_many(["PoO2", "NaCl"], ignore_errors=True, return_errors=True, pbar=False)
    assert "Po" in rows[0][-1] and "element set" in rows[0][-1]
    assert rows[1][0].features.shape == (2, 128)


def test_cache_key_is_the_weights_and_the_channel(encoder):
    assert encoder.content_key() == load_parent(PARENT).sha256
    # one file, two fidelity channels: two keys (the features differ)
    assert SevenNetEncoder("SevenNet-MF-0").content_key() != SevenNetEncoder("SevenNet-MF-0-r2SCAN").content_key()


@pytest.mark.slow
def test_multi_fidelity_parent_reads_its_channel(pymatgen_structures):
    """SevenNet-MF-0 through its PBE channel predicts what sevenn's calculator does with
    modal="PBE", and not what it does with the r2SCAN channel."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from sevenn.calculator import SevenNetCalculator

    small = [s for s in pymatgen_structures if len(s) <= 3][:3]
    mf = SevenNetEncoder("SevenNet-MF-0")
    out = mf.encode(small)
    per_atom = {}
    for modal in ("PBE", "R2SCAN"):
        calculator = SevenNetCalculator(copy.deepcopy(mf.model_), file_type="model_instance", device="cpu",
                                        modal=modal)
        per_atom[modal] = []
        for s in small:
            atoms = AseAtomsAdaptor.get_atoms(s)
            atoms.calc = calculator
            per_atom[modal].append(atoms.get_potential_energy() / len(atoms))
    assert_float32_close(out["prediction"][:, 0], per_atom["PBE"])
    assert np.abs(out["prediction"][:, 0] - per_atom["R2SCAN"]).max() > 0.1
    assert len(mf.citations()) == 2
