"""The MEGNet family: megnet's pretrained ``.hdf5`` models run by a PyTorch encoder.

Everything MEGNet-specific lives here, one module per concern:

* ``_models``: the registry of megnet's pretrained models, their checksums, resolution and
  download (:func:`load_parent`, :class:`ParentModel`);
* ``_graph``: megnet's batch layout of crystal graphs (:class:`CrystalGraphBatch`);
* ``_symmetry``: the exact symmetry reduction of a batch (colour refinement);
* ``_encoder``: the frozen network in PyTorch, read from the Keras ``.hdf5``, and its
  encoder on the shared encode loop (:class:`MEGNetEncoder`);
* ``_backend``: megnet/Keras itself, the reference the encoder is tested against.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._base import ParentFamily
from ._encoder import MEGNET_CITATION, MEGNetEncoder, MEGNetModule
from ._graph import CrystalGraphBatch, build_graphs
from ._models import DEFAULT_PARENT, PARENT_MODELS, ParentModel, load_parent

__all__ = [
    "DEFAULT_PARENT",
    "MEGNET_CITATION",
    "PARENT_MODELS",
    "CrystalGraphBatch",
    "MEGNetEncoder",
    "MEGNetFamily",
    "MEGNetModule",
    "MEGNetParentEncoder",
    "ParentModel",
    "build_graphs",
    "load_parent",
]

#: The family's encoder (the name the registry used before MEGNetEncoder had the interface).
MEGNetParentEncoder = MEGNetEncoder


class MEGNetFamily(ParentFamily):
    """megnet's pretrained models (:data:`~sklearn_atomsets.PARENT_MODELS`), any megnet
    ``.hdf5`` file with its converter ``.json``, and live megnet ``GraphModel`` objects."""

    name = "megnet"
    label = "MEGNet"
    extra = None  # the PyTorch encoder needs no extra; the megnet reference backend needs [megnet]

    def names(self):
        return list(PARENT_MODELS)

    def owns(self, parent):
        if isinstance(parent, ParentModel):
            return True
        if isinstance(parent, str) and parent in PARENT_MODELS:
            return True
        if isinstance(parent, (str, os.PathLike)):
            path = Path(parent).expanduser()
            return path.suffix == ".hdf5" or Path(str(path) + ".json").is_file()
        return type(parent).__module__.startswith("megnet.") or hasattr(parent, "graph_converter") and hasattr(
            parent, "predict_structure"
        ) and not type(parent).__module__.startswith("chgnet.")

    def load(self, parent, **kwargs):
        return load_parent(parent, **kwargs)

    def encoder(self, parent, *, batch_size=256, device="cpu"):
        return MEGNetEncoder(parent, batch_size=batch_size, device=device)
