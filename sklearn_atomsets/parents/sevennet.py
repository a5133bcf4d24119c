"""The SevenNet family: SevenNet's invariant node features as AtomSets features (``[sevennet]`` extra).

SevenNet (Park et al., J. Chem. Theory Comput. 20, 4857 (2024)) is an E(3)-equivariant
interatomic potential of the NequIP kind; the pretrained models that the ``sevenn`` wheel
ships were trained on the Materials Project trajectory dataset (MPtrj, the 1.5 M frames
CHGNet was trained on; ``SevenNet-MF-0`` also on MP r2SCAN, see :data:`SEVENNET_PARENTS`).
sevenn's own model, checkpoint loader and graph builder are run unchanged (the weights come
with the wheel, so this works offline); the node features are read between its modules:

================  ===========  ========================================================
name              level        what it is
================  ===========  ========================================================
``V0``            site         the atom embedding of each site's element (a linear map
                               of its one-hot type: 128 wide)
``V1`` .. ``V5``  site         the rotation-invariant part of the node features after
                               interaction block i (after its ``{i-1}_equivariant_gate``):
                               the ``l = 0`` channels only (128 of the 128x0e+64x1e+32x2e
                               of blocks 1-4; all 128 of block 5, which is scalar only)
``f``             structure    the mean of ``V5`` over the sites: what the energy head
                               reads (sevenn's readout is linear per site, then a
                               per-element shift and scale), pooled like an energy/atom
``prediction``    structure    SevenNet's predicted energy, eV/atom
================  ===========  ========================================================

The equivariant ``l > 0`` channels are left out: they turn with the structure, and a set
of features must not depend on how the cell is oriented.

Structures go through the model ``batch_size`` at a time, under ``torch.inference_mode``,
calling sevenn's modules in order and stopping after the last one the requested outputs
need: its force/stress module (the gradient of the energy) never runs, nor anything after
the last output asked for. Bad input follows the package's per-row error policy (the same
checks as the MEGNet graphs, at SevenNet's 5 A cutoff, and elements outside the model's
89-element set -- Po to Ra, Z = 84..88, and everything beyond Pu -- are that row's error).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _structures
from ._base import BatchedEncoder, ParentFamily, ParentModelCorruptError, ParentModelNotFoundError, ParentRecord
from ._base import checkpoint_names, file_sha256 as _sha256
from ._structures import GraphConstructionError, _one_graph, over_budget, wrapped_into_cell

__all__ = ["SEVENNET_CITATION", "SEVENNET_PARENTS", "SevenNetEncoder", "SevenNetFamily", "SevenNetParent"]

SEVENNET_CITATION = (
    "@article{park_scalable_2024, title={Scalable Parallel Algorithm for Graph Neural Network Interatomic "
    "Potentials in Molecular Dynamics Simulations}, author={Park, Yutack and Kim, Jaesun and Hwang, Seungwoo "
    "and Han, Seungwu}, journal={Journal of Chemical Theory and Computation}, volume={20}, number={11}, "
    "pages={4857--4868}, year={2024}, doi={10.1021/acs.jctc.4c00190}}"
)
SEVENNET_MF_CITATION = (
    "@article{kim_sevennet_mf_2024, title={Data-Efficient Multifidelity Training for High-Fidelity Machine "
    "Learning Interatomic Potentials}, author={Kim, Jaesun and Kim, Jisu and Kim, Jaehoon and Lee, Jiho and "
    "Park, Yutack and Kang, Youngho and Han, Seungwu}, journal={Journal of the American Chemical Society}, "
    "volume={147}, number={1}, pages={1042--1054}, year={2024}, doi={10.1021/jacs.4c14455}}"
)


@dataclass(frozen=True)
class _Registered:
    sevenn_name: str  # sevenn.util.pretrained_name_to_path(...) of the same file
    relpath: str  # inside the sevenn package
    sha256: str
    modal: str | None  # the fidelity channel of a multi-fidelity model
    description: str


#: The pretrained SevenNet models shipped by the sevenn 0.13.0 wheel, with the sha256 of each file.
SEVENNET_PARENTS = {
    "SevenNet-0": _Registered(
        "7net-0",
        "pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth",
        "7052cb42b7b3be42b40b97fa0d21077a48c54b5548948fc4dcf346629f813c36",
        None,
        "energies, forces, stresses of the MPtrj frames (PBE/PBE+U, uncorrected); sevenn's 7net-0 (11 Jul 2024)",
    ),
    "SevenNet-0-22May2024": _Registered(
        "7net-0_22May2024",
        "pretrained_potentials/SevenNet_0__22May2024/checkpoint_sevennet_0.pth",
        "5d389fafd512e6ae2830d74d0b66ffc49a55d3832653ff8e7bf7f1343013c1d1",
        None,
        "the first MPtrj release of SevenNet-0 (kept by sevenn for reproducibility)",
    ),
    "SevenNet-l3i5": _Registered(
        "7net-l3i5",
        "pretrained_potentials/SevenNet_l3i5/checkpoint_l3i5.pth",
        "a7ff190d41efe5b8317a03d20a468e4036a1a3e64e0b14fdbab64ac3f4bfc09d",
        None,
        "SevenNet-0 with l_max = 3 (5 interaction blocks), MPtrj",
    ),
    "SevenNet-MF-0": _Registered(
        "7net-mf-0",
        "pretrained_potentials/SevenNet_MF_0/checkpoint_sevennet_mf_0.pth",
        "81791329b37d445f46b531578c182c41792d98c7814222c9e5dde276402225fd",
        "PBE",
        "multi-fidelity, MPtrj (PBE/PBE+U) and MP r2SCAN; read through its PBE channel (the checkpoint's "
        "default_modal)",
    ),
    "SevenNet-MF-0-r2SCAN": _Registered(
        "7net-mf-0",
        "pretrained_potentials/SevenNet_MF_0/checkpoint_sevennet_mf_0.pth",
        "81791329b37d445f46b531578c182c41792d98c7814222c9e5dde276402225fd",
        "R2SCAN",
        "the same multi-fidelity model read through its r2SCAN channel",
    ),
}

_EXTRA_HINT = "pip install 'sklearn-atomsets[sevennet]' (sevenn==0.13.0)"


def import_sevenn():
    """Import what the encoder uses of sevenn (its checkpoint loader, graph builder and keys),
    or say which extra installs it."""
    try:
        import sevenn._keys as keys
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.checkpoint import SevenNetCheckpoint
        from sevenn.train.dataload import unlabeled_atoms_to_graph
        from torch_geometric.data import Batch
    except ImportError as exc:
        raise ImportError(
            f"The SevenNet parents need the optional dependency sevenn: {_EXTRA_HINT}. Import failed with: {exc}"
        ) from exc
    return keys, AtomGraphData, SevenNetCheckpoint, unlabeled_atoms_to_graph, Batch


def _sevenn_dir():
    import importlib.util

    spec = importlib.util.find_spec("sevenn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"The SevenNet parents need the optional dependency sevenn: {_EXTRA_HINT}.")
    return Path(spec.submodule_search_locations[0])


@dataclass(frozen=True, eq=False)
class SevenNetParent(ParentRecord):
    """Where a pretrained SevenNet's weights are, and which fidelity channel is read.

    Parameters
    ----------
    name : str
        Registered name (``"SevenNet-0"``) or the checkpoint file's name.
    path : Path
        The sevenn checkpoint (``.pth``): the weights and the model's configuration.
    sha256 : str
        Checksum of ``path`` (verified against the registry for registered names).
    modal : str or None
        The fidelity (sevenn's ``modal``) of a multi-fidelity model, e.g. ``"PBE"``; None for
        single-fidelity models, and for a checkpoint file, whose ``default_modal`` is used.
    description : str
        What it was trained on.
    """

    name: str
    path: Path
    sha256: str
    modal: str | None = None
    description: str = ""


def load_sevennet_parent(parent="SevenNet-0", modal=None):
    """Resolve a registered SevenNet name or a checkpoint path to a checksummed :class:`SevenNetParent`
    (``modal``: the fidelity channel of a multi-fidelity checkpoint given by path)."""
    if isinstance(parent, SevenNetParent):
        return parent
    if isinstance(parent, str) and parent in SEVENNET_PARENTS:
        entry = SEVENNET_PARENTS[parent]
        if modal is not None and modal != entry.modal:
            raise ValueError(f"Parent model {parent!r} is read through its {entry.modal!r} channel; for another "
                             f"fidelity pass its checkpoint's path with modal=, got modal={modal!r}.")
        path = _sevenn_dir() / entry.relpath
        if not path.is_file():
            raise ParentModelNotFoundError(
                f"Parent model {parent!r}: {path} is missing from the installed sevenn package; "
                f"reinstall it: {_EXTRA_HINT}."
            )
        digest = _sha256(path)
        if digest != entry.sha256:
            raise ParentModelCorruptError(
                f"Parent model {parent!r}: {path} is corrupt: its sha256 is {digest}, the registry's is "
                f"{entry.sha256}. Reinstall sevenn: {_EXTRA_HINT}."
            )
        return SevenNetParent(parent, path, digest, entry.modal, entry.description)
    path = Path(parent).expanduser().absolute()
    if not path.is_file():
        raise ParentModelNotFoundError(f"SevenNet checkpoint {path} does not exist.")
    return SevenNetParent(path.name, path, _sha256(path), modal)


def _is_sevennet_checkpoint(path):
    """Whether ``path`` is a sevenn checkpoint: the pickle of a torch file that names a
    ``model_state_dict`` and a ``config`` (read without unpickling anything)."""
    names = checkpoint_names(path)
    return names is not None and {"model_state_dict", "config"} <= names


# Forward-pass memory per bond (sevenn's 5 A graph) and site, for the batch budget
# (_structures.MAX_BATCH_BYTES). Peak RSS above an idle encoder, every output, one torch thread,
# SevenNet-0 on shaken Cu fcc supercells: 35 kB per bond (500 sites, 21,000 bonds) and 33 kB
# (2048 sites, 86,016 bonds); the equivariant messages (l = 0..2 channels per bond) are most of it.
_BYTES_PER_BOND = 36_000
_BYTES_PER_ATOM = 1000


class SevenNetEncoder(BatchedEncoder):
    """Frozen pretrained SevenNet turning crystal structures into AtomSets features.

    Same contract as :class:`~sklearn_atomsets.CHGNetEncoder`: ``encode`` returns an
    :class:`~sklearn_atomsets.EncoderOutput` with the site-level ``V0`` .. ``V5`` (the
    invariant channels), the structure vector ``f`` (the mean of ``V5``) and the predicted
    energy per atom (``prediction``), NaN / None and a message in ``errors`` for each
    structure that cannot be encoded.

    Parameters
    ----------
    parent : str, path-like or SevenNetParent, default="SevenNet-0"
        A registered name (:data:`SEVENNET_PARENTS`) or a sevenn checkpoint file.
    batch_size : int, default=64
        Structures per forward pass.
    device : str, default="cpu"
        Torch device of the model.

    Examples
    --------
    >>> from sklearn_atomsets.parents.sevennet import SevenNetEncoder
    >>> encoder = SevenNetEncoder("SevenNet-0")  # nothing is loaded yet
    >>> encoder.parent_.sha256[:12]  # the checkpoint sevenn ships, checksummed
    '7052cb42b7b3'
    >>> SevenNetEncoder("SevenNet-MF-0").parent_.modal  # the fidelity channel read
    'PBE'
    """

    label = "SevenNet"
    family = "sevennet"

    def __init__(self, parent="SevenNet-0", batch_size=64, device="cpu"):
        self.parent = parent
        self.batch_size = batch_size
        self.device = device

    @property
    def parent_(self):
        if "parent_record_" not in self.__dict__:
            self.parent_record_ = load_sevennet_parent(self.parent)
        return self.parent_record_

    @property
    def model_(self):
        """sevenn's ``AtomGraphSequential``, in eval mode, frozen, batched; never modified."""
        if "sevenn_model_" not in self.__dict__:
            keys, _, SevenNetCheckpoint, _, _ = import_sevenn()
            parent = self.parent_
            try:
                with warnings.catch_warnings():
                    # sevenn: no tensor-product accelerator (cuEquivariance, FlashTP) is enabled
                    warnings.filterwarnings("ignore", message=".*accelerator")
                    checkpoint = SevenNetCheckpoint(str(parent.path))
                    config = checkpoint.config
                    model = checkpoint.build_model()
            except Exception as exc:  # noqa: BLE001 - torch's unpickling errors name no file
                raise ParentModelCorruptError(
                    f"SevenNet checkpoint {parent.path} could not be loaded ({type(exc).__name__}: {exc}); is it "
                    "truncated, corrupt or another kind of file?"
                ) from exc
            modal = parent.modal
            modal_map = model.modal_map or {}
            if modal_map and modal is None:
                modal = config.get("default_modal")
            if modal_map and modal not in modal_map:
                raise ValueError(f"SevenNet checkpoint {parent.path} is multi-fidelity: modal must be one of "
                                 f"{sorted(modal_map)}, got {modal!r}.")
            if not modal_map and modal is not None:
                raise ValueError(f"SevenNet checkpoint {parent.path} has one fidelity; modal={modal!r} means nothing.")
            model.set_is_batch_data(True)
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self._layout(model, keys)
            self.modal_ = modal
            self.sevenn_model_ = model.to(self.device)
        return self.sevenn_model_

    def _layout(self, model, keys):
        """Which module each output is read after, and which channels of it are invariant."""
        from sevenn.nn.equivariant_gate import EquivariantGate
        from sevenn.nn.linear import AtomReduce

        modules = model._modules
        gates = [name for name, m in modules.items() if isinstance(m, EquivariantGate)]
        reduce = [name for name, m in modules.items()
                  if isinstance(m, AtomReduce) and m.key_output == keys.PRED_TOTAL_ENERGY]
        if "onehot_to_feature_x" not in modules or not gates or len(reduce) != 1:
            raise ParentModelCorruptError(
                f"SevenNet checkpoint {self.parent_.path}: a model of modules {list(modules)}, not the layout of "
                "sevenn's NequIP-type models (an atom embedding, interaction blocks ending in an equivariant gate, "
                "a summed energy)."
            )

        def scalars(irreps):  # channels of the l = 0 irreps: the ones a rotation leaves unchanged
            return np.concatenate([np.arange(s.start, s.stop) for (mul, ir), s in zip(irreps, irreps.slices())
                                   if ir.l == 0])

        reads = {"onehot_to_feature_x": ("V0", scalars(modules["onehot_to_feature_x"].linear.irreps_out))}
        for i, name in enumerate(gates, start=1):
            reads[name] = (f"V{i}", scalars(modules[name].gate.irreps_out))
        self.reads_ = reads
        self.read_after_ = {layer: name for name, (layer, _) in reads.items()}
        self.energy_module_ = reduce[0]
        self.order_ = list(modules)

    def load(self):
        """Load the model now (a missing extra or a corrupt file fails here)."""
        return self.model_

    @property
    def site_layers(self):
        self.model_
        return tuple(layer for layer, _ in self.reads_.values())

    @property
    def max_atomic_number(self):
        return int(max(self.model_.type_map))

    def output_widths(self):
        """Width of every output: ``V0`` .. ``V5``, ``f`` and ``prediction``."""
        if "widths_" not in self.__dict__:
            self.model_
            widths = {layer: len(channels) for layer, channels in self.reads_.values()}
            widths.update(f=widths[self.site_layers[-1]], prediction=1)
            self.widths_ = widths
        return self.widths_

    def element_embedding(self):
        """``(max_z + 1, d)`` array whose row z is V0 of atomic number z (NaN: no such element
        in the model, row 0 included)."""
        import torch

        keys, AtomGraphData, _, _, Batch = import_sevenn()
        model = self.model_
        z = np.array(sorted(model.type_map), dtype=np.int64)
        # one graph holding every element the model knows, without edges: V0 needs none
        graph = AtomGraphData(x=torch.from_numpy(z), edge_index=torch.zeros((2, 0), dtype=torch.int64),
                              pos=torch.zeros((len(z), 3)))
        graph[keys.ATOMIC_NUMBERS] = torch.from_numpy(z)
        graph[keys.EDGE_VEC] = torch.zeros((0, 3))
        graph[keys.NUM_ATOMS] = torch.tensor(len(z))
        if self.modal_ is not None:
            graph[keys.DATA_MODALITY] = self.modal_
        v0 = self._forward(Batch.from_data_list([graph]), {"V0"}, stop="onehot_to_feature_x")["V0"]
        out = np.full((z.max() + 1, v0.shape[1]), np.nan, dtype=np.float32)
        out[z] = v0
        return out

    def content_key(self):
        """The sha256 of the checkpoint file as it is now, with the fidelity channel read: the
        feature cache's key."""
        digest = _sha256(self.parent_.path)
        return digest if self.parent_.modal is None else f"{digest}:{self.parent_.modal}"

    def citations(self):
        if self.parent_.modal is not None or (self.__dict__.get("modal_") is not None):
            return [SEVENNET_CITATION, SEVENNET_MF_CITATION]
        return [SEVENNET_CITATION]

    def _graph(self, i, structure):
        """sevenn's own graph of one structure (its neighbour list, at its cutoff), after the
        package's input checks and a check of the model's element set, and the memory its
        forward pass needs (refused over the batch budget before sevenn builds it)."""
        keys, AtomGraphData, _, unlabeled_atoms_to_graph, _ = import_sevenn()
        from pymatgen.io.ase import AseAtomsAdaptor

        model = self.model_
        z, _, _, dist = _one_graph(i, structure, model.cutoff, self.max_atomic_number, "SevenNet")
        nbytes = _BYTES_PER_BOND * len(dist) + _BYTES_PER_ATOM * len(z)
        if nbytes > _structures.MAX_BATCH_BYTES:
            raise GraphConstructionError.of_structure(i, structure, over_budget(
                nbytes, f"{len(z):,} sites, {len(dist):,} bonds"))
        unknown = sorted({site.specie for site in structure if site.specie.Z not in model.type_map},
                         key=lambda element: element.Z)
        if unknown:
            raise GraphConstructionError.of_structure(
                i, structure, f"contains {', '.join(map(str, unknown))}, outside the SevenNet parent's element "
                f"set ({len(model.type_map)} elements; it has no embedding for Z = "
                f"{', '.join(str(z) for z in range(1, self.max_atomic_number + 1) if z not in model.type_map)})."
            )
        try:
            # sites far outside the cell would make the neighbour search scan every cell between
            atoms = AseAtomsAdaptor.get_atoms(wrapped_into_cell(structure))
            graph = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, model.cutoff))
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - sevenn's own refusal, named with the structure
            raise GraphConstructionError.of_failure(i, structure, exc) from exc
        if self.modal_ is not None:
            graph[keys.DATA_MODALITY] = self.modal_
        return graph, nbytes

    def _forward(self, batch, wanted, stop):
        """sevenn's modules in order on a batch, up to and including ``stop``; the invariant
        channels of the ``wanted`` layers, and the total energies when ``stop`` is the energy sum."""
        import torch

        keys = import_sevenn()[0]
        model = self.model_
        out = {}
        with torch.inference_mode():
            data = model._preprocess(batch.to(self.device))
            for name in self.order_:
                if name == "edge_embedding" and stop == "onehot_to_feature_x":
                    continue  # V0 alone needs no edges
                data = model._modules[name](data)
                if name in self.reads_:
                    layer, channels = self.reads_[name]
                    if layer in wanted:  # a copy: later modules may reuse the tensor
                        out[layer] = data[keys.NODE_FEATURE][:, torch.from_numpy(channels).to(self.device)].cpu().numpy()
                if name == stop:
                    break
            if stop == self.energy_module_:
                out["energy"] = (data[keys.PRED_TOTAL_ENERGY] / data[keys.NUM_ATOMS]).cpu().numpy()
        return out

    def _bond_count(self, graph):
        return int(graph.edge_index.shape[1])

    def _runner(self, widths, site_wanted):
        """sevenn's modules on one batch, up to the last one the outputs need: ``prediction``
        the energy head, ``f`` the last block, ``Vi`` block i."""
        last = self.site_layers[-1]
        read = set(site_wanted) | ({last} if "f" in widths else set())
        if "prediction" in widths:
            stop = self.energy_module_
        else:
            stop = self.read_after_[max(read, key=lambda n: int(n[1:]))]
        Batch = import_sevenn()[4]

        def run(graphs, n_sites):
            result = self._forward(Batch.from_data_list(graphs), read, stop)
            out = {name: result[name] for name in site_wanted}
            if "f" in widths:  # the mean of the last layer over each structure's sites
                segments = np.repeat(np.arange(len(n_sites)), n_sites)
                sums = np.zeros((len(n_sites), widths["f"]), dtype=np.float64)
                np.add.at(sums, segments, result[last])
                out["f"] = (sums / n_sites[:, None]).astype(np.float32)
            if "prediction" in widths:
                out["prediction"] = result["energy"].reshape(-1, 1)
            return out

        return run


class SevenNetFamily(ParentFamily):
    """The pretrained SevenNet models shipped by sevenn (:data:`SEVENNET_PARENTS`) and sevenn
    ``.pth`` checkpoints."""

    name = "sevennet"
    label = "SevenNet"
    extra = "sevennet"

    def names(self):
        return list(SEVENNET_PARENTS)

    def owns(self, parent):
        if isinstance(parent, SevenNetParent):
            return True
        if isinstance(parent, str) and parent in SEVENNET_PARENTS:
            return True
        if isinstance(parent, (str, os.PathLike)):
            path = Path(parent).expanduser()
            return path.name.endswith(".pth") and _is_sevennet_checkpoint(path)
        return False

    def load(self, parent, **kwargs):
        unknown = sorted(set(kwargs) - {"modal"})
        if unknown:
            raise TypeError(f"SevenNet parents take only modal= (they ship with sevenn); got {unknown}.")
        return load_sevennet_parent(parent, **kwargs)

    def encoder(self, parent, *, batch_size=64, device="cpu"):
        return SevenNetEncoder(parent, batch_size=batch_size, device=device)
