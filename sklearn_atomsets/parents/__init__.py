"""Parent models behind one interface: one module per family, one registry keyed by name.

A *parent* is a pretrained graph network whose frozen layers give the AtomSets features.
Every family (``megnet``, ``chgnet``, ``sevennet``) implements the same small interface, :class:`ParentFamily`:

* ``owns(parent)``: whether a name, path or object is one of its parents;
* ``load(parent)``: resolve it (checksummed) to a parent record with ``name``, ``path`` and
  ``sha256`` (the MEGNet family returns :class:`~sklearn_atomsets.ParentModel`);
* ``encoder(parent, batch_size=..., device=...)``: an encoder whose ``encode(structures,
  on_error=..., outputs=..., progress=...)`` (``progress``: called with the number of
  structures whose graphs are built so far) returns the same :class:`~sklearn_atomsets.EncoderOutput` for
  every family -- site-level ``V0`` .. ``Vn``, the structure-level readout vector ``f`` and the
  parent's own ``prediction``, with per-row errors -- and which names its outputs
  (``output_widths()``, ``site_layers``, ``structure_layers``), its feature-label prefix
  (``label``), its cache key (``content_key()``: the sha256 of the weights) and its papers
  (``citations()``).

Adding a family touches this registry and its own module, nothing else.

Examples
--------
>>> from sklearn_atomsets import parent_family
>>> parent_family("Eform_MP_2019").name, parent_family("CHGNet-0.3.0").name, parent_family("SevenNet-0").name
('megnet', 'chgnet', 'sevennet')
"""

from __future__ import annotations

import os

from ._base import EncoderOutput, ParentFamily, ParentRecord, checkpoint_names
from ._structures import GraphConstructionError, RowError

__all__ = [
    "DEFAULT_PARENT",
    "FAMILIES",
    "EncoderOutput",
    "GraphConstructionError",
    "ParentFamily",
    "ParentRecord",
    "RowError",
    "checkpoint_names",
    "load_parent",
    "make_encoder",
    "parent_family",
    "registered_parents",
]


#: The parent a featurizer uses when none is given: the AtomSets paper's.
DEFAULT_PARENT = "Eform_MP_2019"


def _families():
    # Imported on first use: a family module imports its package (torch, chgnet, sevenn) lazily,
    # but its own code only when a parent of it is asked for.
    from .chgnet import CHGNetFamily
    from .megnet import MEGNetFamily
    from .sevennet import SevenNetFamily

    return {"megnet": MEGNetFamily(), "chgnet": CHGNetFamily(), "sevennet": SevenNetFamily()}


#: The families, keyed by family name. Checked in this order: megnet first (its default
#: parent and its paths), then chgnet, then sevennet (each recognises its own ``.pth`` files).
FAMILIES: dict[str, ParentFamily] = {}


def _all():
    if not FAMILIES:
        FAMILIES.update(_families())
    return FAMILIES


def registered_parents():
    """Every registered parent name, mapped to its family's name.

    Examples
    --------
    >>> from sklearn_atomsets import registered_parents
    >>> registered_parents()["CHGNet-0.3.0"], registered_parents()["Eform_MP_2019"]
    ('chgnet', 'megnet')
    """
    return {name: family.name for family in _all().values() for name in family.names()}


def parent_family(parent) -> ParentFamily:
    """The family that ``parent`` (a name, a path, a parent record or a live model) belongs to.

    Raises
    ------
    ValueError
        For a string that is no registered name and no model file of any family, listing the names.
    TypeError
        For an object no family takes.
    """
    for family in _all().values():
        if family.owns(parent):
            return family
    if isinstance(parent, (str, os.PathLike)):
        raise ValueError(
            f"parent={parent!r} is neither a registered parent {sorted(registered_parents())} nor the "
            "path of a model file (a megnet .hdf5 with its .hdf5.json, a CHGNet .pth.tar or a sevenn .pth checkpoint)."
        )
    raise TypeError(
        f"parent must be a registered name, a model file's path, a parent record or a live megnet "
        f"GraphModel; got {type(parent).__name__}."
    )


def load_parent(parent=DEFAULT_PARENT, **kwargs):
    """Find a pretrained parent model of any family: MEGNet, CHGNet or SevenNet.

    Parameters
    ----------
    parent : str, path-like, parent record or megnet GraphModel, default="Eform_MP_2019"
        A registered name (``registered_parents()``: megnet's ``"Eform_MP_2019"`` and
        friends, ``"CHGNet-0.3.0"``, ``"CHGNet-0.2.0"``, ``"CHGNet-r2SCAN"``, ``"SevenNet-0"``
        and the other SevenNet models), the path of a megnet ``.hdf5`` file, of a CHGNet
        ``.pth.tar`` or of a sevenn ``.pth`` checkpoint, a record returned by an earlier call,
        or a live megnet ``GraphModel``.
    **kwargs
        Passed to the family's loader (megnet: ``download``, ``url``, ``timeout``; SevenNet:
        ``modal``, the fidelity channel of a multi-fidelity checkpoint given by path).

    Returns
    -------
    ParentModel, CHGNetParent or SevenNetParent
        The family's parent record: where the weights are and their sha256.

    Examples
    --------
    >>> from sklearn_atomsets import load_parent
    >>> load_parent("Eform_MP_2019").cutoff
    5.0
    >>> chgnet = load_parent("CHGNet-0.3.0")  # needs the [chgnet] extra
    >>> chgnet.name, chgnet.sha256[:12]
    ('CHGNet-0.3.0', 'd14ab7c0f093')
    """
    return parent_family(parent).load(parent, **kwargs)


def make_encoder(parent, *, batch_size=256, device="cpu"):
    """The encoder of ``parent``'s family (lazily loaded), e.g. for a featurizer."""
    return parent_family(parent).encoder(parent, batch_size=batch_size, device=device)
