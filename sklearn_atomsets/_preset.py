"""The descriptors of the strong baselines and the parents' readouts, as one featurizer.

MODNet, AutoMatminer and MatterVial put matminer's hand-made descriptors beside what
pretrained networks read out. :func:`descriptor_preset` builds that table as one matminer
featurizer: matminer's standard sets (:func:`default_matminer_featurizers`, the list the
AutoMatminer-style baseline uses) and, for each parent named, its readout-level features
through this package's :class:`StructureFeaturizer` or :class:`CompositionFeaturizer`, so
several parents (MEGNet, CHGNet, SevenNet) sit side by side, their columns prefixed with the
parent's name.

Errors are kept per row and per component featurizer, as matminer's ``MultipleFeaturizer``
keeps them: a component that cannot featurize a row gives NaN in its own columns of that row,
the other components' columns keep their values, and the row's error column names the
component. The parents' encodings go through their featurizers' cache; matminer's
featurizers are cheap next to a forward pass and are not cached.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
from functools import partial
from typing import NamedTuple

import numpy as np
from matminer.featurizers.base import BaseFeaturizer
from sklearn.utils._param_validation import StrOptions, validate_parameter_constraints

from ._baseline import _is_composition_featurizer, default_matminer_featurizers
from ._featurizers import (
    _PBAR_DELAY,
    _RAISED,
    _SKIP_HINT,
    _STRUCTURE_PARAMETER_CONSTRAINTS,
    CompositionFeaturizer,
    StructureFeaturizer,
    _as_composition,
    _as_structure,
    _authors,
    _unwrap,
    _worker_count,
)
from .parents import DEFAULT_PARENT, ParentRecord, RowError, registered_parents

__all__ = ["DescriptorPreset", "descriptor_preset"]


class _Failed(NamedTuple):
    """A component's failure on one row, as data (it crosses process boundaries).
    ``of_input``: the row's input itself is wrong (no structure, no composition), which every
    component would say; reported once, for the row."""

    kind: str
    message: str
    of_input: bool = False

    @classmethod
    def of(cls, exc, of_input=False):
        return cls(type(exc).__name__, str(exc), of_input)


class _Component(NamedTuple):
    name: str  # how errors name it: "ElementProperty", "Eform_MP_2019 StructureFeaturizer"
    featurizer: BaseFeaturizer
    takes: str  # "composition", "structure" (matminer's: converted here) or "entry" (ours: as given)
    prefix: str  # put before each of its labels: "" for matminer's, the parent's name for ours


def _parent_name(parent):
    """The name a parent's columns carry: a registered name as is, a record's name, a file's
    base name, a live model's type."""
    if isinstance(parent, ParentRecord):
        return parent.name
    if isinstance(parent, (str, os.PathLike)):
        path = os.fspath(parent)
        return path if path in registered_parents() else os.path.basename(path.rstrip(os.sep))
    return type(parent).__name__


def _readout_layers(encoder):
    """``f`` and the state vectors ``u1``.. (MEGNet's): the parent's readout level. MEGNet's
    set2set readouts are left out: they are f's first 64 columns."""
    return tuple(name for name in encoder.structure_layers if name == "f" or re.fullmatch(r"u\d+", name))


def _floats(featurizer, values):
    """A matminer row as floats (booleans as 0/1), so that a column keeps a numeric dtype
    whatever rows fail; a feature that is no number is an error of the preset, not of a row."""
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{type(featurizer).__name__} gives non-numeric features ({values!r:.80}); the "
                        "descriptor preset holds numbers only.") from None


def _matminer_row(featurizers, inputs):
    """One row through matminer's featurizers: per featurizer, its features or its failure.
    ``inputs`` maps what a featurizer takes ("composition", "structure") to the row's input
    of that kind, or to the failure of making it."""
    out = []
    for featurizer, takes in featurizers:
        x = inputs[takes]
        if isinstance(x, _Failed):
            out.append(x)
            continue
        try:
            values = featurizer.featurize(x)
        except Exception as exc:  # noqa: BLE001 - that row's failure, reported by the preset
            out.append(_Failed.of(exc))
            continue
        out.append(_floats(featurizer, values))
    return out


class DescriptorPreset(BaseFeaturizer):
    """matminer's standard descriptors and the parents' readouts, as one featurizer.

    The columns, in order:

    1. with ``matminer=True``, matminer's featurizers of :func:`default_matminer_featurizers`
       (the AutoMatminer-style baseline's list), under their own labels. Compositions:
       ``ElementProperty.from_preset("magpie")`` (132), ``Stoichiometry`` (6),
       ``ValenceOrbital`` (8), ``IonProperty(fast=True)`` (3), ``BandCenter`` (1): 150
       columns. Structures add ``DensityFeatures`` (3), ``GlobalSymmetryFeatures`` (4:
       space group number, crystal system, centrosymmetry, symmetry operations) and
       ``SiteStatsFingerprint`` of AGNI fingerprints (32): 189 columns. The composition
       featurizers get the structure's (or formula's) ``Composition``.
    2. for each parent, its features, each label prefixed with the parent's name
       (``"Eform_MP_2019 MEGNet f 0"``, ``"CHGNet-0.3.0 CHGNet f 0"``). Structures: the
       readout level through :class:`StructureFeaturizer` -- the readout vector ``f`` and,
       for MEGNet, the state vectors ``u1``..``u3`` (MEGNet: 96 + 3 x 32 = 192; CHGNet-0.3.0:
       64; SevenNet-0: 128; MEGNet's set2set readouts are not repeated, they are f's first
       64 columns). Compositions have no readout (no structure to run): the statistics of
       V0 over the elements through :class:`CompositionFeaturizer` (mean, std, min, max:
       64 for MEGNet, 256 for CHGNet-0.3.0, 512 for SevenNet-0). CompositionFeaturizer
       takes every registered family (MEGNet, CHGNet, SevenNet); a parent without an
       element embedding is refused with a ValueError naming it.

    Every column is a float (matminer's booleans as 0 / 1), so a ``featurize_dataframe``
    table stays numeric whatever rows fail, as the AtomSets estimators want descriptors.

    **Errors.** matminer's contract, kept per component featurizer as its
    ``MultipleFeaturizer`` keeps it: with ``ignore_errors=True`` a component that cannot
    featurize a row gives NaN in its own columns of that row (the others keep theirs, and no
    other row changes); ``return_errors=True`` adds one ``"DescriptorPreset Exceptions"``
    column, NaN for a row without errors, else one line per failed component
    (``"row 3 (Eform_MP_2019 StructureFeaturizer): GraphConstructionError: ..."``), or one
    for the row when the input itself is no structure or composition (``"row 3 (input):
    TypeError: ..."``, NaN in every column). With
    ``ignore_errors=False`` the first failing row raises that message (a ``TypeError`` for
    an input that is no structure or composition, else a ``ValueError`` or
    ``GraphConstructionError``). ``featurize(x)`` raises it without the row.

    **Caching.** The parents' encodings are looked up in, and added to, the featurizers'
    process-wide cache (``cache``), so a structure goes through each parent once per process
    however often it is featurized; matminer's featurizers recompute (much cheaper than a
    forward pass).

    **Processes.** ``n_jobs`` (or ``set_n_jobs``, as ``MultipleFeaturizer.set_n_jobs``
    calls it) is matminer's: worker processes. matminer's featurizers then run in a
    ``multiprocessing.Pool`` of ``n_jobs`` processes (rows in chunks); each parent's
    featurizer gets the same ``n_jobs`` (its own pool, from 64 structures per process).
    Inside a daemonic worker (a matminer ``Pool`` running this preset inside a
    ``MultipleFeaturizer``, a Dask worker) everything runs in-process. The featurizer
    pickles without any loaded model. Such a ``MultipleFeaturizer(iterate_over_entries=True)``
    calls ``featurize`` per entry, so a row where any component fails is NaN in all the
    preset's columns there (matminer's ``featurize_wrapper``); ``iterate_over_entries=False``
    keeps the per-component NaN and lets the parents batch.

    Parameters
    ----------
    input_kind : {"composition", "structure"}, default="composition"
        What the entries are. Compositions: ``Composition``, formula strings, amount dicts
        or structures (reduced to their composition); structures: pymatgen ``Structure``
        or ``Structure.as_dict()``.
    parents : tuple of parents, default=("Eform_MP_2019",)
        Registered names (:func:`registered_parents`), model files or parent records of any
        family; ``()`` for matminer's descriptors only. Their names (a file's base name) must
        differ, as they prefix the columns.
    matminer : bool, default=True
        Include matminer's descriptors; ``False`` keeps the parents' columns only.
    batch_size, cache, torch_threads, device
        As for :class:`StructureFeaturizer`, passed to each parent's featurizer
        (compositions: ``batch_size`` only; their features are a table lookup).
    n_jobs : int or None, default=1
        Worker processes (matminer's meaning; -1 all CPUs).

    See Also
    --------
    descriptor_preset : The same, as a function.
    default_matminer_featurizers : matminer's part.
    automatminer_style_pipeline : A random forest on such descriptors.

    Examples
    --------
    >>> import pandas as pd
    >>> from pymatgen.core import Lattice, Structure
    >>> from sklearn_atomsets import DescriptorPreset
    >>> cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> preset = DescriptorPreset("structure", parents=("Eform_MP_2019", "CHGNet-0.3.0"))
    >>> labels = preset.feature_labels()
    >>> len(labels), labels[189], labels[189 + 192]
    (445, 'Eform_MP_2019 MEGNet f 0', 'CHGNet-0.3.0 CHGNet f 0')
    >>> lonely = Structure(Lattice.cubic(20.0), ["H"], [[0, 0, 0]])  # no neighbour within 5 A
    >>> out = preset.featurize_dataframe(pd.DataFrame({"structure": [cscl, lonely]}), "structure",
    ...                                  ignore_errors=True, return_errors=True, pbar=False)
    >>> out.shape, bool(out["Eform_MP_2019 MEGNet f 0"].isna()[1]), bool(out["density"].isna()[1])
    ((2, 447), True, False)
    >>> print(out["DescriptorPreset Exceptions"][1])  # doctest: +ELLIPSIS
    row 1 (Eform_MP_2019 StructureFeaturizer): GraphConstructionError: structure (H2): site(s) [0] have no neighbour ...
    row 1 (CHGNet-0.3.0 StructureFeaturizer): GraphConstructionError: structure (H2): site(s) [0] have no neighbour ...
    """

    # A plain attribute instead of matminer's read-only property (whose default, the CPU
    # count, would start a pool for every call), as in the package's featurizers.
    n_jobs = 1

    _parameter_constraints = {
        "input_kind": [StrOptions({"composition", "structure"})],
        "parents": [tuple, list],
        "matminer": ["boolean"],
        # passed on to each parent's featurizer: what it accepts
        **{k: _STRUCTURE_PARAMETER_CONSTRAINTS[k] for k in ("batch_size", "cache", "n_jobs", "torch_threads", "device")},
    }

    def __init__(self, input_kind="composition", *, parents=(DEFAULT_PARENT,), matminer=True, batch_size=256,
                 cache=True, n_jobs=1, torch_threads=None, device="cpu"):
        self.input_kind = input_kind
        self.parents = parents
        self.matminer = matminer
        self.batch_size = batch_size
        self.cache = cache
        self.n_jobs = n_jobs
        self.torch_threads = torch_threads
        self.device = device

    def set_n_jobs(self, n_jobs):
        """Worker processes for ``featurize_many`` / ``featurize_dataframe`` (matminer's meaning)."""
        self.n_jobs = n_jobs

    def __getstate__(self):
        # the components are rebuilt from the parameters: a pickle holds no featurizer state
        return {k: v for k, v in self.__dict__.items() if k not in ("_components_cache", "_components_key")}

    def _components(self):
        """The component featurizers, built from the parameters at first use and again when
        a parameter changed."""
        validate_parameter_constraints(self._parameter_constraints, self.get_params(deep=False),
                                       caller_name=type(self).__name__)
        key = (self.input_kind, tuple(self.parents), self.matminer, self.batch_size, self.cache, self.n_jobs,
               self.torch_threads, str(self.device))
        if getattr(self, "_components_key", None) != key:
            self._components_cache = self._build_components()
            self._components_key = key
        return self._components_cache

    def _build_components(self):
        components = []
        if self.matminer:
            for featurizer in default_matminer_featurizers(self.input_kind):
                takes = "composition" if _is_composition_featurizer(featurizer) else "structure"
                components.append(_Component(type(featurizer).__name__, featurizer, takes, ""))
        names = [_parent_name(parent) for parent in self.parents]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"parents must have distinct names (they prefix the columns); {repeated} "
                             f"appear more than once in {self.parents!r}.")
        for parent, name in zip(self.parents, names):
            if self.input_kind == "structure":
                featurizer = StructureFeaturizer(parent=parent, batch_size=self.batch_size, cache=self.cache,
                                                 n_jobs=self.n_jobs, torch_threads=self.torch_threads,
                                                 device=self.device)
                featurizer.set_params(layers=_readout_layers(featurizer._encoder()))
            else:
                featurizer = CompositionFeaturizer(parent=parent, batch_size=self.batch_size)
                if not hasattr(featurizer._encoder(), "element_embedding"):
                    raise ValueError(f"parent {name!r} has no element embedding, so CompositionFeaturizer cannot "
                                     "featurize compositions with it; use input_kind='structure', or leave it out.")
            components.append(_Component(f"{name} {type(featurizer).__name__}", featurizer, "entry", f"{name} "))
        if not components:
            raise ValueError("The preset is empty: matminer=False and no parents. Name a parent or keep matminer's "
                             "descriptors.")
        labels = [c.prefix + label for c in components for label in c.featurizer.feature_labels()]
        if len(set(labels)) != len(labels):  # never two columns under one name
            clash = sorted({label for label in labels if labels.count(label) > 1})
            raise RuntimeError(f"The preset's feature labels repeat: {clash[:5]}.")
        return components

    def feature_labels(self):
        return [c.prefix + label for c in self._components() for label in c.featurizer.feature_labels()]

    def citations(self):
        return list(dict.fromkeys(c for component in self._components() for c in component.featurizer.citations()))

    def implementors(self):
        return list(dict.fromkeys([*_authors(), *(name for c in self._components()
                                                  for name in c.featurizer.implementors())]))

    def featurize(self, x):
        """Features of one entry (a list, in the order of ``feature_labels``)."""
        return self._featurize_many([x], ignore_errors=False, return_errors=False, pbar=False, single=True)[0]

    def featurize_many(self, entries, ignore_errors=False, return_errors=False, pbar=True):
        """Featurize many entries: matminer's contract (``ignore_errors``: NaN in the failed
        component's columns; ``return_errors``: an error column), with each parent's
        featurizer given every entry at once, so that it batches."""
        return self._featurize_many(entries, ignore_errors, return_errors, pbar)

    def _featurize_many(self, entries, ignore_errors, return_errors, pbar, single=False):
        if return_errors and not ignore_errors:
            raise ValueError("Please set ignore_errors to True to use return_errors.")
        items = _unwrap(entries)
        components = self._components()
        if not items:
            return []
        # in the components' order: matminer's first, then the parents (_build_components)
        blocks = self._matminer_blocks(components, items, pbar) + self._parent_blocks(components, items, pbar)
        widths = [len(c.featurizer.feature_labels()) for c in components]
        out = []
        for i in range(len(items)):
            row, errors, reported = [], [], set()
            for component, block, width in zip(components, blocks, widths):
                value = block[i]
                if isinstance(value, _Failed):
                    # the input's own error once, not once per component that met it
                    if (value.kind, value.message) not in reported:
                        name = "input" if value.of_input else component.name
                        subject = name if single else f"row {i} ({name})"
                        errors.append(RowError(i, value.kind, value.message, subject))
                    if value.of_input:
                        reported.add((value.kind, value.message))
                    value = [float("nan")] * width
                elif len(value) != width:  # an internal inconsistency, never a silent NaN row
                    raise RuntimeError(f"row {i}: {component.name} produced {len(value)} features for {width} labels.")
                row += value
            if errors and not ignore_errors:
                raise _RAISED.get(errors[0].kind, ValueError)(f"{errors[0]}{_SKIP_HINT}")
            if return_errors:
                row.append("\n".join(errors) if errors else float("nan"))
            out.append(row)
        return out

    def _matminer_blocks(self, components, items, pbar):
        """Per matminer component, each row's features or failure: the inputs converted once
        per row, the rows spread over ``n_jobs`` processes."""
        matminer = [(c.featurizer, c.takes) for c in components if c.takes != "entry"]
        if not matminer:
            return []
        inputs = [self._inputs(item) for item in items]
        n_workers = _worker_count(self.n_jobs, len(items))
        options = None if not pbar else {"desc": f"{type(self).__name__} (matminer)", "delay": _PBAR_DELAY,
                                         **(pbar if isinstance(pbar, dict) else {})}
        from tqdm.auto import tqdm

        work = partial(_matminer_row, matminer)
        if n_workers == 1:
            rows = list(tqdm(map(work, inputs), total=len(inputs), disable=options is None, **(options or {})))
        else:
            chunksize = max(1, math.ceil(len(inputs) / (4 * n_workers)))
            with multiprocessing.Pool(n_workers) as pool:
                rows = list(tqdm(pool.imap(work, inputs, chunksize=chunksize), total=len(inputs),
                                 disable=options is None, **(options or {})))
        return [[row[k] for row in rows] for k in range(len(matminer))]

    def _inputs(self, item):
        """What matminer's featurizers get for one entry: its composition and (structures)
        the structure itself, or the failure of making them (that row's error)."""
        if self.input_kind == "composition":
            try:
                return {"composition": _as_composition(item)}
            except Exception as exc:  # noqa: BLE001 - that row's failure
                return {"composition": _Failed.of(exc, of_input=True)}
        try:
            structure = _as_structure(item)
        except Exception as exc:  # noqa: BLE001 - that row's failure
            failed = _Failed.of(exc, of_input=True)
            return {"composition": failed, "structure": failed}
        return {"composition": structure.composition, "structure": structure}

    @staticmethod
    def _parent_blocks(components, items, pbar):
        """Per parent component, each row's features or failure: the component gets every
        entry at once (one batched, cached encode) and reports its errors as data."""
        blocks = []
        for component in components:
            if component.takes != "entry":
                continue
            rows = component.featurizer.featurize_many(items, ignore_errors=True, return_errors=True, pbar=pbar)
            block = []
            for row in rows:
                error = row[-1]
                if isinstance(error, str):  # a RowError: its fields, not its text
                    block.append(_Failed(getattr(error, "kind", "ValueError"), getattr(error, "message", error)))
                else:
                    block.append(row[:-1])
            blocks.append(block)
        return blocks

    def __sklearn_tags__(self):
        # as the package's featurizers: inputs are structures or compositions, not numbers
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=[])
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = self.input_kind == "composition"
        tags.target_tags.required = False
        return tags

    def __sklearn_is_fitted__(self):
        return True  # matminer's part needs no fit, the parents are frozen

    def get_feature_names_out(self, input_features=None):
        """The feature labels, for scikit-learn's ``set_output`` and pipelines."""
        return np.asarray(self.feature_labels(), dtype=object)


def descriptor_preset(input_kind="composition", parents=(DEFAULT_PARENT,), matminer=True, **kwargs):
    """The descriptors the strong baselines use and the parents' readouts, as one featurizer.

    matminer's standard sets (Magpie element properties, stoichiometry, valence orbitals,
    ion properties, band centre; structures add density, symmetry and AGNI site statistics)
    beside each parent's readout-level features (structures: f, and MEGNet's state vectors;
    compositions: V0 statistics over the elements), each parent's columns prefixed with its
    name. See :class:`DescriptorPreset` for the columns, the error contract and processes.

    Parameters
    ----------
    input_kind : {"composition", "structure"}, default="composition"
    parents : tuple of parents, default=("Eform_MP_2019",)
        Any registered parents (:func:`registered_parents`: MEGNet, CHGNet, SevenNet), side by side.
    matminer : bool, default=True
    **kwargs
        ``batch_size``, ``cache``, ``n_jobs``, ``torch_threads``, ``device`` of :class:`DescriptorPreset`.

    Returns
    -------
    DescriptorPreset
        A matminer ``BaseFeaturizer`` (``featurize_dataframe``, ``set_n_jobs``, ``transform``).

    Examples
    --------
    >>> from sklearn_atomsets import descriptor_preset
    >>> preset = descriptor_preset("composition", parents=("Eform_MP_2019",))
    >>> row = preset.featurize("SiO2")
    >>> len(row), preset.feature_labels()[0], preset.feature_labels()[150]
    (214, 'MagpieData minimum Number', 'Eform_MP_2019 MEGNet V0 mean 0')
    """
    return DescriptorPreset(input_kind, parents=parents, matminer=matminer, **kwargs)

