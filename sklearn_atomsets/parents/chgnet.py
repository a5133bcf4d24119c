"""The CHGNet family: CHGNet's atom layers as AtomSets features (optional ``[chgnet]`` extra).

CHGNet (Deng et al., Nat. Mach. Intell. 5, 1031 (2023)) is a universal interatomic potential
pretrained on 1.5 M frames of the Materials Project trajectory dataset (energies, forces,
stresses and magnetic moments). Its own model and graph converter (the ``chgnet`` package,
which ships the weights, so this works offline) are run unchanged; forward hooks read the
atom features between its layers:

================  ===========  ========================================================
name              level        what it is
================  ===========  ========================================================
``V0``            site         atom embedding of each site's element (94 x 64)
``V1`` .. ``V3``  site         atom features after atom convolution layer i (``V3`` is
                               chgnet's ``return_atom_feas`` output)
``V4``            site         atom features after the last atom convolution and the
                               readout normalisation: what the energy head reads
``f``             structure    chgnet's crystal feature (``return_crystal_feas``): the
                               sum of ``V4`` over the sites
``prediction``    structure    chgnet's predicted energy, eV/atom
================  ===========  ========================================================

Structures go through the model ``batch_size`` at a time (fewer where the next one would take
a batch over the memory budget, ``MAX_BATCH_BYTES`` in ``parents/_structures.py``), without gradients: no
forces, stresses or magnetic moments are computed, and when only early layers are asked for the
forward pass stops after the last one needed. Bad input follows the package's per-row error
policy (the same checks as the MEGNet graphs, at CHGNet's 6 A cutoff); sites far outside the
cell are wrapped into it first, as for MEGNet.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _structures
from ._base import BatchedEncoder, ParentFamily, ParentModelCorruptError, ParentModelNotFoundError, ParentRecord
from ._base import checkpoint_names, file_sha256 as _sha256
from ._structures import GraphConstructionError, _one_graph, over_budget, wrapped_into_cell

__all__ = ["CHGNET_CITATION", "CHGNET_PARENTS", "CHGNetEncoder", "CHGNetFamily", "CHGNetParent"]

CHGNET_CITATION = (
    "@article{deng_chgnet_2023, title={CHGNet as a pretrained universal neural network potential for "
    "charge-informed atomistic modelling}, author={Deng, Bowen and Zhong, Peichen and Jun, KyuJung and "
    "Riebesell, Janosh and Han, Kevin and Bartel, Christopher J. and Ceder, Gerbrand}, journal={Nature "
    "Machine Intelligence}, volume={5}, number={9}, pages={1031--1041}, year={2023}, "
    "doi={10.1038/s42256-023-00716-3}}"
)


@dataclass(frozen=True)
class _Registered:
    model_name: str  # chgnet's CHGNet.load(model_name=...)
    relpath: str  # inside the chgnet package
    sha256: str
    description: str


#: The pretrained CHGNet models shipped by the chgnet 0.4.2 wheel, with the sha256 of each file.
CHGNET_PARENTS = {
    "CHGNet-0.3.0": _Registered(
        "0.3.0",
        "pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar",
        "d14ab7c0f093efe64b60a7bcd540bca10e74fb7f46c86108a079af60524659d1",
        "energies, forces, stresses, magnetic moments of 1.5 M MPtrj frames (PBE/PBE+U); chgnet's default",
    ),
    "CHGNet-0.2.0": _Registered(
        "0.2.0",
        "pretrained/0.2.0/chgnet_0.2.0_e30f77s348m32.pth.tar",
        "ef624f78b6db9d315b4ef256f1bb3207449924191b91720dc17d3f60c5df980e",
        "the first MPtrj release of CHGNet (kept by chgnet for backward compatibility)",
    ),
    "CHGNet-r2SCAN": _Registered(
        "r2scan",
        "pretrained/r2scan/chgnet_r2scan_transfer_learning_e15f36s161m23.pth.tar",
        "8eba3db0f35a2788bb3ae22885ad340591e27996f213c6643af522a633b50dad",
        "CHGNet 0.3.0 transfer-learned to Materials Project r2SCAN energies",
    ),
}

_EXTRA_HINT = "pip install 'sklearn-atomsets[chgnet]' (chgnet==0.4.2)"


def import_chgnet():
    """Import chgnet's model module, or say which extra installs it."""
    try:
        import chgnet.model.model as chgnet_model
    except ImportError as exc:
        raise ImportError(
            f"The CHGNet parents need the optional dependency chgnet: {_EXTRA_HINT}. Import failed with: {exc}"
        ) from exc
    return chgnet_model


def _chgnet_dir():
    import importlib.util

    spec = importlib.util.find_spec("chgnet")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"The CHGNet parents need the optional dependency chgnet: {_EXTRA_HINT}.")
    return Path(spec.submodule_search_locations[0])


@dataclass(frozen=True, eq=False)
class CHGNetParent(ParentRecord):
    """Where a pretrained CHGNet's weights are.

    Parameters
    ----------
    name : str
        Registered name (``"CHGNet-0.3.0"``) or the checkpoint file's name.
    path : Path
        The checkpoint (``.pth.tar``) holding the weights and the model's arguments.
    sha256 : str
        Checksum of ``path`` (verified against the registry for registered names).
    model_name : str or None
        chgnet's own name for it (``CHGNet.load(model_name=...)``); None for other files.
    description : str
        What it was trained on.
    """

    name: str
    path: Path
    sha256: str
    model_name: str | None = None
    description: str = ""


def load_chgnet_parent(parent="CHGNet-0.3.0"):
    """Resolve a registered CHGNet name or a checkpoint path to a checksummed :class:`CHGNetParent`."""
    if isinstance(parent, CHGNetParent):
        return parent
    if isinstance(parent, str) and parent in CHGNET_PARENTS:
        entry = CHGNET_PARENTS[parent]
        path = _chgnet_dir() / entry.relpath
        if not path.is_file():
            raise ParentModelNotFoundError(
                f"Parent model {parent!r}: {path} is missing from the installed chgnet package; "
                f"reinstall it: {_EXTRA_HINT}."
            )
        digest = _sha256(path)
        if digest != entry.sha256:
            raise ParentModelCorruptError(
                f"Parent model {parent!r}: {path} is corrupt: its sha256 is {digest}, the registry's is "
                f"{entry.sha256}. Reinstall chgnet: {_EXTRA_HINT}."
            )
        return CHGNetParent(parent, path, digest, entry.model_name, entry.description)
    path = Path(parent).expanduser().absolute()
    if not path.is_file():
        raise ParentModelNotFoundError(f"CHGNet checkpoint {path} does not exist.")
    return CHGNetParent(path.name, path, _sha256(path))


# Forward-pass memory per bond (6 A atom graph), bond angle and site, for the batch budget
# (_structures.MAX_BATCH_BYTES). Peak RSS above an idle encoder, every output, one torch thread, Cu
# supercells of 864 sites: 3.9 kB per bond with no angles (a = 4.6 A), and 3.6 kB per angle
# more with 132 angles per site (a = 3.61 A); chgnet's Python graph converter is most of it.
_BYTES_PER_BOND = 4000
_BYTES_PER_ANGLE = 4000
_BYTES_PER_ATOM = 1000


class _Stop(Exception):
    """Raised by a hook once every requested layer is read: the rest of the pass is skipped."""


class _UnusedAngleUpdate:
    """Stands in for CHGNet's last angle update, whose output nothing reads: chgnet's
    ``_compute`` updates the angles after the bond update of its last message-passing block,
    and only the final atom convolution (which reads atoms and bonds) follows. Skipping it
    changes no output (the parity tests compare every output with chgnet's own)."""

    @staticmethod
    def wrap(module):
        import torch

        class UnusedAngleUpdate(torch.nn.Module):
            def __init__(self, original):
                super().__init__()
                self.original = original  # kept, so that the state dict is chgnet's

            def forward(self, *, angle_feas, **kwargs):
                return angle_feas

        return UnusedAngleUpdate(module)


class CHGNetEncoder(BatchedEncoder):
    """Frozen pretrained CHGNet turning crystal structures into AtomSets features.

    Same contract as :class:`~sklearn_atomsets.MEGNetEncoder`: ``encode`` returns an
    :class:`~sklearn_atomsets.EncoderOutput` with the site-level ``V0`` .. ``V4``, the crystal
    feature ``f`` and the predicted energy per atom (``prediction``), NaN / None and a
    message in ``errors`` for each structure that cannot be encoded.

    Parameters
    ----------
    parent : str, path-like or CHGNetParent, default="CHGNet-0.3.0"
        ``"CHGNet-0.3.0"``, ``"CHGNet-0.2.0"``, ``"CHGNet-r2SCAN"`` or a checkpoint file.
    batch_size : int, default=64
        Structures per forward pass.
    device : str, default="cpu"
        Torch device of the model.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from sklearn_atomsets.parents.chgnet import CHGNetEncoder
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"],
    ...                                  [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> out = CHGNetEncoder().encode([nacl])
    >>> out["V1"][0].shape, out["f"].shape
    ((8, 64), (1, 64))
    >>> round(float(out["prediction"][0, 0]), 1)  # energy, eV/atom
    -3.7
    """

    label = "CHGNet"
    family = "chgnet"

    def __init__(self, parent="CHGNet-0.3.0", batch_size=64, device="cpu"):
        self.parent = parent
        self.batch_size = batch_size
        self.device = device

    @property
    def parent_(self):
        if "parent_record_" not in self.__dict__:
            self.parent_record_ = load_chgnet_parent(self.parent)
        return self.parent_record_

    @property
    def model_(self):
        """chgnet's ``CHGNet`` module, in eval mode, frozen, with the feature hooks attached."""
        if "chgnet_model_" not in self.__dict__:
            chgnet_model = import_chgnet()
            parent = self.parent_
            with contextlib.redirect_stdout(io.StringIO()):  # chgnet prints on every load
                if parent.model_name is not None:
                    model = chgnet_model.CHGNet.load(model_name=parent.model_name, use_device=self.device,
                                                     verbose=False)
                else:
                    try:
                        model = chgnet_model.CHGNet.from_file(str(parent.path)).to(self.device)
                    except Exception as exc:  # noqa: BLE001 - torch's unpickling errors name no file
                        raise ParentModelCorruptError(
                            f"CHGNet checkpoint {parent.path} could not be loaded ({type(exc).__name__}: "
                            f"{exc}); is it truncated, corrupt or another kind of file?"
                        ) from exc
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            angles = model.angle_layers
            if len(angles) == len(model.atom_conv_layers) - 1 and angles[-1] is not None:
                angles[-1] = _UnusedAngleUpdate.wrap(angles[-1])
            self._attach_hooks(model)
            self.chgnet_model_ = model
        return self.chgnet_model_

    def _attach_hooks(self, model):
        self._capture = None
        convs = list(model.atom_conv_layers)
        self.n_conv_ = len(convs)
        # V0: the embedding; Vi: the output of atom conv i; the last one after the readout norm
        sources = [model.atom_embedding, *convs[:-1]]
        sources.append(model.readout_norm if model.readout_norm is not None else convs[-1])

        def hook(index):
            def read(module, args, output):
                if self._capture is not None:
                    wanted, stop_after, store = self._capture
                    name = f"V{index}"
                    if name in wanted:
                        store[name] = output.detach()
                    if index == stop_after:
                        raise _Stop

            return read

        for index, module in enumerate(sources):
            module.register_forward_hook(hook(index))

    def load(self):
        """Load the model now (a missing extra or a corrupt file fails here)."""
        return self.model_

    @property
    def site_layers(self):
        self.model_
        return tuple(f"V{i}" for i in range(self.n_conv_ + 1))

    @property
    def max_atomic_number(self):
        return int(self.model_.atom_embedding.embedding.num_embeddings)

    def output_widths(self):
        """Width of every output: ``V0`` .. ``V4``, ``f`` and ``prediction``."""
        if "widths_" not in self.__dict__:
            d = int(self.model_.atom_embedding.embedding.embedding_dim)
            widths = {name: d for name in self.site_layers}
            widths.update(f=d, prediction=1)
            self.widths_ = widths
        return self.widths_

    def element_embedding(self):
        """``(max_z + 1, d)`` array whose row z is V0 of atomic number z (row 0: NaN, no element)."""
        table = self.model_.atom_embedding.embedding.weight.detach().cpu().numpy()
        out = np.full((len(table) + 1, table.shape[1]), np.nan, dtype=np.float32)
        out[1:] = table  # chgnet's row z - 1 is element z
        return out

    def content_key(self):
        """The sha256 of the checkpoint file as it is now: the feature cache's key."""
        return _sha256(self.parent_.path)

    def citations(self):
        return [CHGNET_CITATION]

    def _graph(self, i, structure):
        """chgnet's own CrystalGraph of one structure, after the package's input checks, and
        the memory its forward pass needs (refused over the batch budget before chgnet's
        converter builds the bond angles, whose number grows with the square of the
        neighbours per atom)."""
        converter = self.model_.graph_converter
        z, center, _, dist = _one_graph(i, structure, converter.atom_graph_cutoff, self.max_atomic_number, "CHGNet")
        # chgnet's angles: every ordered pair of a site's bonds shorter than its bond-graph cutoff
        short = np.bincount(center[dist <= converter.bond_graph_cutoff], minlength=len(z))
        n_angles = int((short * (short - 1)).sum())
        nbytes = _BYTES_PER_BOND * len(dist) + _BYTES_PER_ANGLE * n_angles + _BYTES_PER_ATOM * len(z)
        if nbytes > _structures.MAX_BATCH_BYTES:
            raise GraphConstructionError.of_structure(i, structure, over_budget(
                nbytes, f"{len(z):,} sites, {len(dist):,} bonds, {n_angles:,} bond angles"))
        try:
            # sites far outside the cell make chgnet's neighbour search scan every cell in between
            return converter(wrapped_into_cell(structure), graph_id=str(i)), nbytes
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - chgnet's own refusal, named with the structure
            raise GraphConstructionError.of_failure(i, structure, exc) from exc

    def _bond_count(self, graph):
        return int(graph.atom_graph.shape[0])

    def _runner(self, widths, site_wanted):
        """chgnet's forward pass on one batch, stopped after the last site layer asked for
        when neither ``f`` nor ``prediction`` is."""
        import torch

        whole = "f" in widths or "prediction" in widths
        stop_after = None if whole else max(int(n[1:]) for n in site_wanted)
        model = self.model_

        def run(graphs, n_sites):
            store = {}
            self._capture = (set(site_wanted), stop_after, store)
            try:
                with torch.inference_mode(), warnings.catch_warnings():
                    # chgnet's batching turns each cell volume into a Python float; harmless
                    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
                    result = model([g.to(self.device) for g in graphs], task="e",
                                   return_crystal_feas="f" in widths)
            except _Stop:
                result = {}
            finally:
                self._capture = None
            out = {name: store[name].cpu().numpy() for name in site_wanted}
            if "f" in widths:
                out["f"] = result["crystal_fea"].cpu().numpy()
            if "prediction" in widths:
                out["prediction"] = result["e"].reshape(-1, 1).cpu().numpy()
            return out

        return run


class CHGNetFamily(ParentFamily):
    """The pretrained CHGNet models shipped by chgnet (:data:`CHGNET_PARENTS`) and CHGNet
    ``.pth.tar`` checkpoints (or ``.pth`` ones, whose pickle names chgnet's ``model_args``)."""

    name = "chgnet"
    label = "CHGNet"
    extra = "chgnet"

    def names(self):
        return list(CHGNET_PARENTS)

    def owns(self, parent):
        if isinstance(parent, CHGNetParent):
            return True
        if isinstance(parent, str) and parent in CHGNET_PARENTS:
            return True
        if isinstance(parent, (str, os.PathLike)):
            name = Path(parent).name
            # .pth is also sevenn's suffix: a .pth file is chgnet's when it holds a CHGNet's arguments
            return name.endswith(".pth.tar") or name.endswith(".pth") and "model_args" in (
                checkpoint_names(Path(parent).expanduser()) or ())
        return False

    def load(self, parent, **kwargs):
        if kwargs:
            raise TypeError(f"CHGNet parents take no loader options (they ship with chgnet); got {sorted(kwargs)}.")
        return load_chgnet_parent(parent)

    def encoder(self, parent, *, batch_size=64, device="cpu"):
        return CHGNetEncoder(parent, batch_size=batch_size, device=device)
