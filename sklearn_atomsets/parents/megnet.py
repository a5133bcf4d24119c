"""The MEGNet family: megnet's pretrained ``.hdf5`` models run by the PyTorch encoder.

An adapter only: the parents are resolved by :mod:`sklearn_atomsets._parents` and encoded by
:class:`~sklearn_atomsets.MEGNetEncoder`; this module gives them the family interface of
:mod:`sklearn_atomsets.parents`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .._encoder import MEGNetEncoder
from .._parents import PARENT_MODELS, ParentModel, content_sha256
from .._parents import load_parent as _load_megnet
from . import ParentFamily

__all__ = ["MEGNET_CITATION", "MEGNetFamily", "MEGNetParentEncoder"]

MEGNET_CITATION = (
    "@article{chen_graph_2019, title={Graph Networks as a Universal Machine Learning Framework for "
    "Molecules and Crystals}, author={Chen, Chi and Ye, Weike and Zuo, Yunxing and Zheng, Chen and "
    "Ong, Shyue Ping}, journal={Chemistry of Materials}, volume={31}, number={9}, pages={3564--3572}, "
    "year={2019}, doi={10.1021/acs.chemmater.9b01294}}"
)

_SITE = re.compile(r"^V\d+$")
_STRUCTURE_ORDER = ("f", "u", "set2set_atom", "set2set_bond")


class MEGNetParentEncoder(MEGNetEncoder):
    """:class:`~sklearn_atomsets.MEGNetEncoder` with the parent-family interface.

    ``encode`` is MEGNetEncoder's own; this class only names what the parent offers.
    """

    label = "MEGNet"
    family = "megnet"

    def load(self):
        """Read the weights now (a missing or broken parent fails here, naming the file)."""
        return self.module_

    def output_widths(self):
        """Width of every output the featurizers may ask for, ``prediction`` included."""
        widths = dict(self.module_.output_widths())
        widths["prediction"] = widths["output"]
        return widths

    @property
    def site_layers(self):
        """``("V0", "V1", ...)``: one per MEGNet block, plus the element embedding."""
        return tuple(sorted((n for n in self.module_.output_widths() if _SITE.match(n)), key=lambda n: int(n[1:])))

    @property
    def structure_layers(self):
        """Structure-level features: ``f``, ``u1`` .. ``un``, both set2set readouts."""
        names = [n for n in self.module_.output_widths() if n == "f" or re.match(r"^u\d+$", n) or n.startswith("set2set")]
        return tuple(sorted(names, key=lambda n: (_STRUCTURE_ORDER.index(n.rstrip("0123456789")), n)))

    @property
    def max_atomic_number(self):
        return self.module_.max_atomic_number

    def content_key(self):
        """The sha256 of the weights file as it is now: the feature cache's key."""
        return content_sha256(self.parent_)

    def citations(self):
        return [MEGNET_CITATION]


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
        return _load_megnet(parent, **kwargs)

    def encoder(self, parent, *, batch_size=256, device="cpu"):
        return MEGNetParentEncoder(parent, batch_size=batch_size, device=device)
