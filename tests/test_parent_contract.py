"""The contract every parent keeps, whatever its family (issue 31, item 4).

Every registered parent (``registered_parents()``) and one representative of each family (its
first registered name: ``Eform_MP_2019``, ``CHGNet-0.3.0``, ``SevenNet-0``) are held to the same
claims, through the public interface only (``load_parent``, ``make_encoder``, the featurizers):

* it loads offline, from a file whose sha256 is the one the record reports, and keys the
  feature cache by that content; a corrupt copy is never used;
* a bad input is that row's error, the same for every family: NaN / None for the row, a
  message naming the row and the problem, the good rows unchanged; alone it raises;
* a structure gets the same features alone as in a batch (within float32 error,
  tests/conftest.py), and an output asked for alone equals the same output of the full pass;
* featurizers take the parent unchanged, name their features without a forward pass, cite it
  and no other family, and pickle where the weights are, not the weights;
* with the family's package missing, using it fails naming the pip extra that installs it.

A new family gets these tests by registering (its first name is its representative); only the
corrupt-copy check needs to be told where the family looks for its files (``_COPIES``).
Family-specific claims (parity with chgnet's and sevenn's own forward passes, family options)
stay in tests/test_chgnet.py and tests/test_sevennet.py.
"""

from __future__ import annotations

import configparser
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import pickle
import re
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from packaging.requirements import Requirement
from pymatgen.core import Lattice, Molecule, Structure
from pymatgen.core.periodic_table import DummySpecies
from sklearn.pipeline import Pipeline

from sklearn_atomsets import (
    AtomSetsRegressor,
    GraphConstructionError,
    SiteSetFeaturizer,
    StructureFeaturizer,
    load_parent,
    parent_family,
    registered_parents,
)
from sklearn_atomsets.parents import make_encoder

from .conftest import REPO, SHARED_MODELS, assert_float32_close, scale_of

try:  # the encoder the featurizers share, so that each model is loaded once in this module
    from sklearn_atomsets._featurizers import _shared_encoder
except ImportError:  # moved: say where to, or the parents load twice and the label test counts a load
    _shared_encoder = None


def _featurizers_encoder(name):
    """The encoder the featurizers of ``name`` use (default batch size and device)."""
    return _shared_encoder(name, 256, "cpu") if _shared_encoder else make_encoder(name)


# one torch thread: on the few shared cores of test machines torch's spinning pool made every
# forward pass several times slower (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARENTS = registered_parents()  # name -> family name
FAMILIES = list(dict.fromkeys(PARENTS.values()))
REPRESENTATIVE = {family: next(name for name, f in PARENTS.items() if f == family) for family in FAMILIES}
MODEL_DIR_ENV = "SKLEARN_ATOMSETS_MODEL_DIR"  # where megnet's registered files are looked for first


@functools.lru_cache(maxsize=None)
def _package_missing(family):
    """Why the family's optional package is not installed, or None when it is."""
    extra = parent_family(REPRESENTATIVE[family]).extra
    missing = [dist for dist in (_requirements_of_extra(extra) if extra else ()) if not _installed_dist(dist)]
    return f"{missing} not installed (pip install 'sklearn-atomsets[{extra}]')" if missing else None


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_dist(dist):
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _requirements_of_extra(extra):
    """The distributions the pip extra installs (setup.cfg's requirements)."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = [line.split("#")[0].strip() for line in config["options.extras_require"][extra].splitlines()]
    return tuple(sorted({_norm(Requirement(line).name) for line in lines if line}))


@functools.lru_cache(maxsize=None)
def _modules_of_extra(extra):
    """The top-level modules the installed distributions of the pip extra provide."""
    wanted = set(_requirements_of_extra(extra))
    return tuple(sorted(module for module, dists in importlib.metadata.packages_distributions().items()
                        if wanted & {_norm(d) for d in dists}))


def _installed(names):
    """``names`` as params, each family whose package is missing skipped, saying which."""
    return [pytest.param(name, marks=pytest.mark.skipif(bool(_package_missing(PARENTS[name])),
                                                        reason=str(_package_missing(PARENTS[name]))))
            for name in names]


def _every_parent():
    """Every registered parent (those of a family whose package is missing skipped)."""
    return _installed(PARENTS)


# -- structures ---------------------------------------------------------------------------------
_FCC = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]


def _nacl():
    # rock salt written out: Structure.from_spacegroup spends ~2 s in symmetry checks
    return Structure(Lattice.cubic(5.69), ["Na"] * 4 + ["Cl"] * 4, _FCC + [[x + 0.5, y, z] for x, y, z in _FCC])


CSCL = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
SI = Structure(Lattice.cubic(5.43), ["Si"] * 8,
               _FCC + [[x + 0.25, y + 0.25, z + 0.25] for x, y, z in _FCC])
CU = Structure(Lattice.cubic(3.61), ["Cu"] * 4, _FCC)

#: The bad inputs of tests/test_bad_inputs.py and of the families' tests, each with what its
#: message must say. Every family refuses each one the same way.
BAD = {
    "isolated atom": (Structure(Lattice.cubic(30.0), ["Na"], [[0, 0, 0]]), r"no neighbour within the cutoff"),
    "disordered": (Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
                   r"disordered"),
    "element outside the embedding": (Structure(Lattice.cubic(4.0), ["Am", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
                                      r"Am"),
    "dummy species": (Structure(Lattice.cubic(3.0), [DummySpecies("X"), "Cs"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
                      r"dummy species X"),
    "no sites": (Structure(Lattice.cubic(3.0), [], []), r"no sites"),
    "NaN coordinate": (Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [np.nan, 0.5, 0.5]]),
                       r"site\(s\) \[1\] have non-finite"),
    "zero volume": (Structure(Lattice([[4, 0, 0], [8, 0, 0], [0, 0, 4]]), ["Cs", "Cl"], [[0, 0, 0], [0.5] * 3]),
                    r"cell volume is 0 A\^3"),
    "flat cell": (Structure(Lattice([[4, 0, 0], [4, 1e-4, 0], [0, 0, 4]]), ["Cs", "Cl"], [[0, 0, 0], [0.5] * 3]),
                  r"0\.0008 A\^3 per atom"),
    "thin cell": (Structure(Lattice([[100, 0, 0], [0, 100, 0], [0, 0, 0.1]]), ["H"], [[0, 0, 0]]),
                  r"the cell is 0\.1 A thin"),
    "atoms too close": (Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.05, 0, 0]],
                                  validate_proximity=False), r"sites 0 and 1 are 0\.206 A apart"),
    "coordinates lost to rounding": (Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [1e9, 0.5, 0.5]]),
                                     r"1e\+09 cells from the origin"),
    "not periodic": (Structure(Lattice(np.eye(3) * 2.5, pbc=(False, False, False)), ["H", "H"],
                               [[0, 0, 0], [0.3, 0, 0]]), r"not periodic along a, b, c"),
    "a formula": ("NaCl", r"expected a pymatgen Structure, got str"),
    "None": (None, r"got NoneType"),
    "a molecule": (Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]]), r"got Molecule"),
}


# -- fixtures -----------------------------------------------------------------------------------
class _NetworkCut:
    """Every connection attempt fails, and is recorded (a loader that swallowed the failure and
    went on would still be seen)."""

    def __init__(self, monkeypatch):
        self.attempts = []

        def refuse(sock, address, *args, **kwargs):
            self.attempts.append(address)
            raise OSError(f"network cut off by the test (connection to {address})")

        def refuse_lookup(host, *args, **kwargs):
            self.attempts.append(host)
            raise socket.gaierror(f"network cut off by the test (lookup of {host})")

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket.socket, "connect_ex", refuse)
        monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)  # a download starts with the host's name


@pytest.fixture
def offline(monkeypatch):
    """No network; megnet's registered files from ../shared when it is there (the CHGNet and
    SevenNet weights ship in their wheels, megnet's default in maml's)."""
    if SHARED_MODELS.is_dir():
        monkeypatch.setenv(MODEL_DIR_ENV, str(SHARED_MODELS))
    return _NetworkCut(monkeypatch)


def _needs_files(name):
    """Skip a megnet parent that ships in no installed package when ../shared is absent."""
    if PARENTS[name] == "megnet" and not SHARED_MODELS.is_dir():
        try:
            load_parent(name, download=False)
        except FileNotFoundError:
            pytest.skip(f"{name}: pretrained megnet models not found at {SHARED_MODELS}")


@pytest.fixture(scope="module", params=_installed(REPRESENTATIVE.values()),
                ids=lambda name: PARENTS[name])
def parent(request):
    """A family's representative parent and its encoder (the one its featurizers share), loaded
    with the network cut off."""
    name = request.param
    with pytest.MonkeyPatch.context() as monkeypatch:
        cut = _NetworkCut(monkeypatch)
        encoder = _featurizers_encoder(name)
        encoder.encode([_nacl()])
    assert not cut.attempts, f"loading {name} tried the network: {cut.attempts}"
    return name, encoder


@pytest.fixture(scope="module")
def structures(pymatgen_structures, dielectric_structures):
    """Small built crystals, pymatgen's crystals and the three smallest of the first 200
    MatBench dielectric ones."""
    smallest = sorted(np.argsort([len(s) for s in dielectric_structures], kind="stable")[:3])
    return [_nacl(), CSCL, SI, CU, *pymatgen_structures, *(dielectric_structures[k] for k in smallest)]


@pytest.fixture(scope="module")
def batch(parent, structures):
    """Every output of the representative on all the structures, in one call."""
    return parent[1].encode(structures)


def _scale(out, name):
    """The scale of an output over a batch: per-structure arrays (site and bond outputs) joined."""
    value = out[name]
    return scale_of(np.concatenate([v for v in value if v is not None]) if isinstance(value, list) else value)


# -- loading: every registered parent, offline, checksummed ---------------------------------------
@pytest.mark.parametrize("name", _every_parent())
def test_every_registered_parent_loads_offline_from_the_file_its_checksum_names(name, offline):
    _needs_files(name)
    record = load_parent(name)
    assert not offline.attempts, f"{name} tried the network: {offline.attempts}"
    assert record.name == name and Path(record.path).is_file()
    assert record.sha256 == hashlib.sha256(Path(record.path).read_bytes()).hexdigest()
    family = parent_family(name)
    assert family.name == PARENTS[name]
    # the record and its file belong to the same family as the name
    assert parent_family(record).name == family.name and parent_family(record.path).name == family.name
    encoder = make_encoder(name)
    assert encoder.label == family.label
    # the feature cache is keyed by the weights' content (megnet adds its converter's, SevenNet the channel)
    assert encoder.content_key().startswith(record.sha256)


def test_no_two_registered_parents_share_a_cache_key(offline):
    keys = {}
    for name in PARENTS:
        if _package_missing(PARENTS[name]) or (PARENTS[name] == "megnet" and not SHARED_MODELS.is_dir()
                                                and name != REPRESENTATIVE["megnet"]):
            continue
        keys.setdefault(make_encoder(name).content_key(), []).append(name)
    assert len(keys) > len(FAMILIES)
    assert all(len(names) == 1 for names in keys.values()), [n for n in keys.values() if len(n) > 1]


def test_an_unknown_name_lists_every_registered_parent():
    with pytest.raises(ValueError) as info:
        load_parent("NoSuchParent-9.9")
    assert all(name in str(info.value) for name in PARENTS), str(info.value)


@pytest.mark.parametrize("name", _installed(REPRESENTATIVE.values()), ids=lambda name: PARENTS[name])
def test_an_unknown_loader_option_is_named(name):
    with pytest.raises(TypeError, match="not_an_option"):
        load_parent(name, not_an_option=True)


def _point_chgnet(monkeypatch, folder):
    monkeypatch.setattr("sklearn_atomsets.parents.chgnet._chgnet_dir", lambda: folder)


def _point_sevennet(monkeypatch, folder):
    monkeypatch.setattr("sklearn_atomsets.parents.sevennet._sevenn_dir", lambda: folder)


def _package_dir(module):
    return Path(importlib.util.find_spec(module).submodule_search_locations[0])


#: Where each family finds the registered files (the folder its records' paths are relative to)
#: and how to make it look in another folder instead. A new family adds its row.
_COPIES = {
    "megnet": (lambda: SHARED_MODELS, lambda monkeypatch, folder: monkeypatch.setenv(MODEL_DIR_ENV, str(folder))),
    "chgnet": (lambda: _package_dir("chgnet"), _point_chgnet),
    "sevennet": (lambda: _package_dir("sevenn"), _point_sevennet),
}


@pytest.mark.parametrize("name", _every_parent())
def test_a_corrupt_copy_of_the_weights_is_never_used(name, offline, monkeypatch, tmp_path):
    family = PARENTS[name]
    assert family in _COPIES, f"tell {__name__}._COPIES where the {family} family looks for its files"
    if family == "megnet" and not SHARED_MODELS.is_dir():
        pytest.skip(f"pretrained megnet models not found at {SHARED_MODELS}")
    root, point_at = _COPIES[family]
    real = Path(load_parent(name).path)
    copy = tmp_path / real.relative_to(root())
    copy.parent.mkdir(parents=True)
    for sidecar in real.parent.glob(real.name + ".*"):  # megnet's converter .hdf5.json, unchanged
        shutil.copy(sidecar, copy.parent / sidecar.name)
    data = bytearray(real.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    copy.write_bytes(bytes(data))
    point_at(monkeypatch, tmp_path)
    try:
        found = load_parent(name)
    except Exception as exc:  # noqa: BLE001 - the family's own error type; its message is the contract
        message = str(exc)
        assert str(copy) in message and "corrupt" in message and "sha256" in message, message
    else:  # another copy (megnet's default also ships in maml), never the corrupt one
        assert Path(found.path) != copy and found.sha256 == hashlib.sha256(Path(found.path).read_bytes()).hexdigest()
        assert found.sha256 == load_parent(name).sha256 != hashlib.sha256(bytes(data)).hexdigest()


# -- a missing package --------------------------------------------------------------------------
_WITH_EXTRA = [f for f in FAMILIES if parent_family(REPRESENTATIVE[f]).extra]


@pytest.mark.parametrize("family", _WITH_EXTRA)
def test_a_missing_package_is_named_with_the_extra_that_installs_it(family, monkeypatch):
    name = REPRESENTATIVE[family]
    extra = parent_family(name).extra
    modules = _modules_of_extra(extra)  # none when it is not installed: then nothing to hide
    for module in list(sys.modules):  # as if never installed: every import of it fails
        if module.split(".")[0] in modules:
            monkeypatch.setitem(sys.modules, module, None)
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    hint = re.escape(f"sklearn-atomsets[{extra}]")
    # the registry still knows the family's parents: only using one needs the package
    assert PARENTS[name] == registered_parents()[name] and parent_family(name).name == family
    with pytest.raises(ImportError, match=hint):
        load_parent(name)
    with pytest.raises(ImportError, match=hint):
        make_encoder(name).encode([_nacl()])


# -- encoding -----------------------------------------------------------------------------------
def test_outputs_are_what_the_encoder_names(parent, batch, structures):
    name, encoder = parent
    widths = encoder.output_widths()
    assert set(batch.names) == set(widths)
    assert encoder.site_layers[0] == "V0" and set(encoder.site_layers) <= set(widths)
    assert "f" in encoder.structure_layers and set(encoder.structure_layers) <= set(widths)
    assert widths["prediction"] == 1 and batch.ok.all(), batch.errors
    for layer in encoder.site_layers:
        assert [v.shape for v in batch[layer]] == [(len(s), widths[layer]) for s in structures], layer
    for output in (*encoder.structure_layers, "prediction"):
        assert batch[output].shape == (len(structures), widths[output]) and np.isfinite(batch[output]).all()
    assert np.abs(batch.packed(encoder.site_layers[1])).max() > 0.1  # nothing trivially zero
    citations = encoder.citations()
    assert citations and all(c.startswith("@") for c in citations)


@pytest.mark.parametrize("problem", BAD)
def test_a_bad_input_is_that_rows_error_and_nothing_else_changes(parent, problem):
    _, encoder = parent
    bad, says = BAD[problem]
    good = _nacl()
    out = encoder.encode([good, bad, CSCL], on_error="nan")
    alone = encoder.encode([good, CSCL])
    np.testing.assert_array_equal(out.ok, [True, False, True])
    assert set(out.errors) == {1}
    message = str(out.errors[1])
    assert re.search(r"\b1\b", message) and re.search(says, message), message  # the row and its problem
    for output in out.names:
        value = out[output]
        if isinstance(value, list):
            assert value[1] is None, output
            # bit-identical to the same batch without the bad row
            np.testing.assert_array_equal(value[0], alone[output][0], err_msg=output)
            np.testing.assert_array_equal(value[2], alone[output][1], err_msg=output)
        else:
            assert np.isnan(value[1]).all(), output
            np.testing.assert_array_equal(value[[0, 2]], alone[output], err_msg=output)
    with pytest.raises(GraphConstructionError, match=says):
        encoder.encode([bad])


@pytest.mark.parametrize("problem", BAD)
def test_a_row_error_names_no_other_family(parent, problem):
    name, encoder = parent
    message = str(encoder.encode([BAD[problem][0]], on_error="nan").errors[0])
    others = {parent_family(REPRESENTATIVE[f]).label for f in FAMILIES} - {encoder.label}
    assert not [label for label in others if label.lower() in message.lower()], message


def test_on_error_is_raise_or_nan(parent):
    with pytest.raises(ValueError, match="on_error"):
        parent[1].encode([_nacl()], on_error="ignore")


def test_an_unknown_output_is_named_with_the_available_ones(parent):
    _, encoder = parent
    with pytest.raises(KeyError, match=r"V99.*V1"):
        encoder.encode([_nacl()], outputs=["V99"])


def test_a_structure_alone_equals_itself_in_a_batch(parent, batch, structures):
    _, encoder = parent
    n_built = 4
    for k in (0, 1, n_built, n_built + 7, n_built + 19, len(structures) - 1):
        alone = encoder.encode([structures[k]])
        for output in batch.names:
            a, b = alone[output][0], batch[output][k]
            # up to float32 error of the output's scale over the batch (tests/conftest.py)
            assert_float32_close(a, b, scale=_scale(batch, output), err_msg=f"{output} of structure {k}")


@pytest.mark.parametrize("which", ["second site layer", "f", "prediction"])
def test_an_output_asked_for_alone_is_that_output_of_the_full_pass(parent, batch, structures, which):
    name, encoder = parent
    output = encoder.site_layers[1] if which == "second site layer" else which
    early = encoder.encode(structures[:6], outputs=[output])
    assert early.names == [output]
    for k in range(6):
        assert_float32_close(early[output][k], batch[output][k], scale=_scale(batch, output), err_msg=output)


def test_a_site_far_outside_the_cell_is_wrapped_into_it(parent):
    """Issue 32 item 5: a Cl 300 cells out is the same crystal."""
    _, encoder = parent
    far = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [300.5, 0.5, 0.5]])
    layer = encoder.site_layers[2]
    out = encoder.encode([CSCL, far], outputs=[layer, "f"])
    assert_float32_close(out[layer][1], out[layer][0], err_msg=layer)
    assert_float32_close(out["f"][1], out["f"][0], err_msg="f")


def test_the_progress_hook_counts_each_structure_as_its_graph_is_built(parent):
    _, encoder = parent
    done, before = [], encoder.batch_size
    encoder.batch_size = 2  # the count moves within and across batches, and over a failed row
    try:
        encoder.encode([CSCL, _nacl(), BAD["isolated atom"][0]], on_error="nan", outputs=["V1"],
                       progress=done.append)
    finally:
        encoder.batch_size = before
    assert done == [1, 2, 3]


# -- featurizers --------------------------------------------------------------------------------
class _ForwardCalls:
    """Counts the calls of every torch module, whatever its family (a global forward hook)."""

    def __enter__(self):
        self.n = 0

        def count(module, args):
            self.n += 1

        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("name", [p if p.values[0] in REPRESENTATIVE.values()
                                  else pytest.param(*p.values, marks=[*p.marks, pytest.mark.slow])
                                  for p in _every_parent()])
def test_feature_labels_run_no_forward_pass(name, offline):
    _needs_files(name)
    family = parent_family(name)
    # the weights read first: building a model may call modules (e3nn computes SevenNet's
    # normalisation constants so), which is no forward pass of the parent
    encoder = _featurizers_encoder(name)
    encoder.load()
    with _ForwardCalls() as calls:
        sets = SiteSetFeaturizer("V1", parent=name, cache=False)
        fixed = StructureFeaturizer(layers=("f", "V1"), stats=("mean",), parent=name, cache=False)
        set_labels, labels = sets.feature_labels(), fixed.feature_labels()
        assert calls.n == 0  # naming the features ran no module
        assert len(fixed.featurize(_nacl())) == len(labels)
        assert calls.n > 0  # the count sees this parent's forward pass
    assert not offline.attempts
    widths = encoder.output_widths()
    assert set_labels == [f"{family.label} V1 set"] and len(labels) == widths["f"] + widths["V1"]
    assert labels[0] == f"{family.label} f 0" and labels[widths["f"]] == f"{family.label} V1 mean 0"


def test_featurizers_take_the_parent_unchanged(parent, batch, structures):
    name, encoder = parent
    label, last = encoder.label, encoder.site_layers[-1]
    sets = SiteSetFeaturizer(last, parent=name, cache=False)
    rows = sets.featurize_many([structures[1], BAD["disordered"][0]], ignore_errors=True, return_errors=True,
                               pbar=False)
    assert_float32_close(rows[0][0].features, batch[last][1], scale=_scale(batch, last))
    assert rows[1][-1].startswith("row 1: ") and "disordered" in rows[1][-1]
    fixed = StructureFeaturizer(layers=("f", "V2"), stats=("mean",), parent=name, cache=False)
    width = encoder.output_widths()["f"]
    assert fixed.feature_labels()[width] == f"{label} V2 mean 0"
    row = np.asarray(fixed.featurize(structures[1]), dtype=float)
    assert_float32_close(row[:width], batch["f"][1], scale=_scale(batch, "f"))
    assert_float32_close(row[width:], batch["V2"][1].mean(axis=0), scale=_scale(batch, "V2"))


def test_a_featurizer_cites_its_parent_and_no_other_family(parent):
    name, encoder = parent
    cited = SiteSetFeaturizer("V1", parent=name).citations()
    assert all(c in cited for c in encoder.citations())
    for family in FAMILIES:
        other = REPRESENTATIVE[family]
        if family != PARENTS[name] and not _package_missing(family):
            assert not set(make_encoder(other).citations()) & set(cited), other


def test_a_layer_the_parent_lacks_is_refused_naming_its_last(parent):
    name, encoder = parent
    with pytest.raises(ValueError, match=encoder.site_layers[-1]):
        SiteSetFeaturizer(f"V{len(encoder.site_layers)}", parent=name).featurize(_nacl())


def test_cached_features_are_the_parents_own(parent):
    """The cache is shared by every parent of the process: what it serves is this parent's."""
    name, encoder = parent
    cached = SiteSetFeaturizer("V1", parent=name).featurize(_nacl())[0]
    again = SiteSetFeaturizer("V1", parent=name).featurize(_nacl())[0]
    uncached = SiteSetFeaturizer("V1", parent=name, cache=False).featurize(_nacl())[0]
    assert cached.features.shape == (8, encoder.output_widths()["V1"])
    np.testing.assert_array_equal(cached.features, uncached.features)
    np.testing.assert_array_equal(again.features, uncached.features)


def test_a_pipeline_takes_the_parent(parent):
    name, _ = parent
    X = [_nacl(), CSCL, SI, CU] * 2
    y = np.array([len(s) for s in X], dtype=float)
    model = Pipeline([
        ("featurize", SiteSetFeaturizer("V1", parent=name, cache=False)),
        ("model", AtomSetsRegressor(max_epochs=2, validation_fraction=None, random_state=0)),
    ]).fit(X, y)
    pred = model.predict(X)
    assert pred.shape == (len(X),) and np.isfinite(pred).all()


def test_pickles_keep_where_the_weights_are_not_the_weights(parent):
    name, encoder = parent
    weights = Path(load_parent(name).path).stat().st_size
    data = pickle.dumps(encoder)  # a loaded encoder
    assert len(data) < 1000 < weights
    clone = pickle.loads(data)
    # where the weights are: the same parent, the same weights (their checksum read, not loaded)
    assert clone.parent == name and clone.content_key() == encoder.content_key()
    featurizer = SiteSetFeaturizer("V1", parent=name)
    featurizer.featurize(_nacl())
    data = pickle.dumps(featurizer)
    assert len(data) < 2000 and pickle.loads(data).parent == name
    path = str(load_parent(name).path)
    data = pickle.dumps(make_encoder(path))
    assert path.encode() in data and len(data) < 1000
