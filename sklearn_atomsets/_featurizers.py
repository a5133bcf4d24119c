"""matminer featurizers exposing the frozen MEGNet layers (V0..V3, u1..u3, set2set, f).

All four are ``matminer.featurizers.base.BaseFeaturizer`` subclasses, hence also
scikit-learn transformers:

==============================  ===================  =======================================
featurizer                      input                features
==============================  ===================  =======================================
MEGNetStructureFeaturizer       Structure            fixed length: f, u1..u3, set2set
                                                     readouts, statistics of V0..V3 over sites
MEGNetSiteSetFeaturizer         Structure            one set per structure: V0..V3 rows
MEGNetCompositionFeaturizer     Composition          fixed length: fraction-weighted
                                                     statistics of V0 over elements
MEGNetElementSetFeaturizer      Composition          one set per composition: V0 rows,
                                                     weights = atom fractions
==============================  ===================  =======================================

Set-valued features are one DataFrame column of :class:`WeightedSet` objects (NaN for a row
that failed), which the AtomSets estimators take as ``X``.

``featurize_many`` / ``featurize_dataframe`` send structures to the encoder in batches of
``batch_size`` (one forward pass each), keep errors per row, and look every structure up in
a process-wide cache first (``cache=True``): clones of a featurizer made by ``GridSearchCV``
share it, so each structure goes through the encoder once per process and parent. ``n_jobs``
is accepted for matminer compatibility; batching replaces matminer's per-entry worker pool.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict

import numpy as np
from matminer.featurizers.base import BaseFeaturizer
from pymatgen.core import Composition, Element, Structure

from ._encoder import MEGNetEncoder
from ._graph import GraphConstructionError
from ._parents import DEFAULT_PARENT, load_parent
from ._sets import WeightedSet

__all__ = [
    "MEGNetCompositionFeaturizer",
    "MEGNetElementSetFeaturizer",
    "MEGNetSiteSetFeaturizer",
    "MEGNetStructureFeaturizer",
    "clear_feature_cache",
]

_SITE_LAYERS = ("V0", "V1", "V2", "V3")
_STRUCTURE_LAYERS = ("f", "u1", "u2", "u3", "set2set_atom", "set2set_bond")
_STATS = ("mean", "std", "min", "max")
_SKIP_HINT = (
    "\nTO SKIP THESE ERRORS when featurizing specific compounds, set 'ignore_errors=True' when "
    "running the batch featurize() operation (e.g., featurize_many(), featurize_dataframe(), etc.)."
)

_CITATIONS = [
    "@article{chen_graph_2019, title={Graph Networks as a Universal Machine Learning Framework for "
    "Molecules and Crystals}, author={Chen, Chi and Ye, Weike and Zuo, Yunxing and Zheng, Chen and "
    "Ong, Shyue Ping}, journal={Chemistry of Materials}, volume={31}, number={9}, pages={3564--3572}, "
    "year={2019}, doi={10.1021/acs.chemmater.9b01294}}",
    "@article{chen_atomsets_2021, title={AtomSets as a hierarchical transfer learning framework for "
    "small and large materials datasets}, author={Chen, Chi and Ong, Shyue Ping}, journal={npj "
    "Computational Materials}, volume={7}, pages={173}, year={2021}, doi={10.1038/s41524-021-00639-w}}",
]

# Process-wide cache of encoder outputs: (parent sha, structure-only flag, structure hash)
# -> {output name: array}. Bounded; oldest entries are dropped first.
_CACHE: OrderedDict = OrderedDict()
_CACHE_MAX_ENTRIES = 200_000


def clear_feature_cache():
    """Empty the featurizers' process-wide cache of encoder outputs."""
    _CACHE.clear()


def _structure_key(structure):
    digest = hashlib.sha1()
    digest.update(np.ascontiguousarray(structure.lattice.matrix, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(structure.frac_coords, dtype=np.float64).tobytes())
    digest.update(repr([site.species.as_dict() for site in structure]).encode())
    return digest.hexdigest()


def _as_structure(item):
    if isinstance(item, Structure):
        return item
    if isinstance(item, dict) and "lattice" in item and "sites" in item:
        return Structure.from_dict(item)
    raise TypeError(f"Expected a pymatgen Structure (or Structure.as_dict()), got {type(item).__name__}: {item!r:.60}")


def _as_composition(item):
    if isinstance(item, Composition):
        return item
    if isinstance(item, Structure):
        return item.composition
    if isinstance(item, str):
        return Composition(item)
    if isinstance(item, dict):
        return Structure.from_dict(item).composition if "lattice" in item else Composition(item)
    raise TypeError(f"Expected a Composition, a formula, a Structure or its as_dict(), got {type(item).__name__}.")


def _hydrogen_only(structure):
    """The structure-only variant: every site becomes H (paper, Supplementary Table 7).

    A disordered structure is refused rather than silently made ordered by the swap."""
    if not structure.is_ordered:
        raise GraphConstructionError(
            f"structure ({structure.composition.reduced_formula}): disordered (partially occupied) sites; "
            "MEGNet crystal graphs need one element per site, also in the structure-only variant."
        )
    return Structure(structure.lattice, ["H"] * len(structure), structure.frac_coords)


def _unwrap(entries):
    """matminer passes ``df[cols].values`` (rows of 1-tuples); accept plain lists too."""
    import pandas as pd

    if isinstance(entries, pd.DataFrame):
        entries = entries.to_numpy()
    if isinstance(entries, pd.Series):
        entries = entries.to_numpy()
    items = []
    for entry in entries:
        if isinstance(entry, (tuple, list, np.ndarray)) and len(entry) == 1 and not isinstance(entry, str):
            entry = entry[0]
        items.append(entry)
    return items


class _MEGNetFeaturizerBase(BaseFeaturizer):
    """Shared machinery: the lazily loaded encoder, batching, per-row errors, the cache."""

    def __getstate__(self):
        # Pickles keep the parent's name or path, never the weights.
        return {k: v for k, v in self.__dict__.items() if k != "_encoder_cache"}

    def _encoder(self):
        if getattr(self, "_encoder_cache", None) is None:
            self._encoder_cache = MEGNetEncoder(self.parent, batch_size=self.batch_size)
        return self._encoder_cache

    def citations(self):
        return list(_CITATIONS)

    def implementors(self):
        return ["sklearn-atomsets developers"]

    def featurize(self, x):
        """Features of one entry (a list, in the order of ``feature_labels``)."""
        return self.featurize_many([x], ignore_errors=False, pbar=False)[0]

    def transform(self, X):
        return self.featurize_many(X, ignore_errors=True, pbar=False)

    def featurize_many(self, entries, ignore_errors=False, return_errors=False, pbar=True):
        """Featurize many entries in encoder batches; errors stay with their row.

        Same contract as matminer's: with ``ignore_errors`` a failing row becomes NaN, and
        ``return_errors`` appends an error column (NaN where the row succeeded).
        """
        if return_errors and not ignore_errors:
            raise ValueError("Please set ignore_errors to True to use return_errors.")
        items = _unwrap(entries)
        if not items:
            return []
        rows, errors = self._featurize_items(items, pbar)
        n_labels = len(self.feature_labels())
        out = []
        for i, row in enumerate(rows):
            if i in errors:
                if not ignore_errors:
                    message, exc = errors[i]
                    kind = type(exc) if type(exc) in (TypeError, ValueError, GraphConstructionError) else ValueError
                    raise kind(f"{message}{_SKIP_HINT}") from exc
                row = [float("nan")] * n_labels
            if return_errors:
                row = list(row) + [errors[i][0] if i in errors else float("nan")]
            out.append(row)
        return out

    @staticmethod
    def _error(i, exc):
        return (f"row {i}: {type(exc).__name__}: {exc}", exc)


class _StructureBase(_MEGNetFeaturizerBase):
    def _needed_outputs(self):
        raise NotImplementedError

    def _encode(self, items, pbar):
        """Encoder outputs per item (dict) or an error, using and filling the cache."""
        parent = load_parent(self.parent)
        wanted = self._needed_outputs()
        results, errors, todo = [None] * len(items), {}, OrderedDict()
        for i, item in enumerate(items):
            try:
                structure = _as_structure(item)
                if self.structure_only:
                    structure = _hydrogen_only(structure)
            except Exception as exc:  # noqa: BLE001 - reported per row
                errors[i] = self._error(i, exc)
                continue
            key = (parent.sha256 or str(parent.path), self.structure_only, _structure_key(structure))
            cached = _CACHE.get(key) if self.cache else None
            if cached is not None and all(name in cached for name in wanted):
                results[i] = cached
            else:
                todo.setdefault(key, (structure, []))[1].append(i)
        keys = list(todo)
        chunks = range(0, len(keys), self.batch_size)
        if pbar and len(keys) > self.batch_size:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=type(self).__name__, unit="batch")
        for start in chunks:
            chunk = keys[start : start + self.batch_size]
            out = self._encoder().encode([todo[k][0] for k in chunk], on_error="nan", outputs=wanted)
            per_item = {name: out[name] for name in wanted}
            for j, key in enumerate(chunk):
                if j in out.errors:
                    for i in todo[key][1]:
                        # the encoder names the structure by its place in this batch
                        message = re.sub(r"^(structure|item) \d+ ?", "structure ", out.errors[j])
                        errors[i] = self._error(i, GraphConstructionError(message))
                    continue
                value = {name: per_item[name][j] for name in wanted}
                if self.cache:
                    _CACHE[key] = value
                    if len(_CACHE) > _CACHE_MAX_ENTRIES:
                        _CACHE.popitem(last=False)
                for i in todo[key][1]:
                    results[i] = value
        return results, errors


class MEGNetStructureFeaturizer(_StructureBase):
    """Fixed-length MEGNet features of a crystal structure.

    Parameters
    ----------
    layers : tuple of str, default=("f",)
        Structure-level outputs (``"f"`` -- the readout vector, input of the paper's MLP-f --
        ``"u1"``..``"u3"``, ``"set2set_atom"``, ``"set2set_bond"``) taken as they are, and
        site-level outputs (``"V0"``..``"V3"``) summarised over the sites by ``stats``.
    stats : tuple of str, default=("mean", "std", "min", "max")
        Statistics of site-level layers over the sites.
    parent : str or path, default="Eform_MP_2019"
        The parent model (see :func:`load_parent`).
    structure_only : bool, default=False
        Replace every element by H before featurizing (paper, Supplementary Table 7).
    batch_size : int, default=256
        Structures per encoder forward pass.
    cache : bool, default=True
        Use the process-wide cache of encoder outputs.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from sklearn_atomsets import MEGNetStructureFeaturizer
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"],
    ...                                  [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> featurizer = MEGNetStructureFeaturizer(layers=("f", "V1"), stats=("mean",))
    >>> len(featurizer.featurize(nacl)), featurizer.feature_labels()[96]
    (128, 'MEGNet V1 mean 0')
    """

    def __init__(self, layers=("f",), stats=_STATS, parent=DEFAULT_PARENT, structure_only=False,
                 batch_size=256, cache=True):
        self.layers = layers
        self.stats = stats
        self.parent = parent
        self.structure_only = structure_only
        self.batch_size = batch_size
        self.cache = cache

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """``"f"`` (the MLP-f input), ``"states"`` (u1..u3), ``"readouts"`` (both set2set
        readouts), ``"site_stats"`` (statistics of V0..V3 over sites)."""
        presets = {
            "f": ("f",),
            "states": ("u1", "u2", "u3"),
            "readouts": ("set2set_atom", "set2set_bond"),
            "site_stats": _SITE_LAYERS,
        }
        if preset not in presets:
            raise ValueError(f"Unknown preset {preset!r}; choose from {sorted(presets)}.")
        return cls(layers=presets[preset], **kwargs)

    def _check(self):
        layers = (self.layers,) if isinstance(self.layers, str) else tuple(self.layers)
        bad = [name for name in layers if name not in _SITE_LAYERS + _STRUCTURE_LAYERS]
        if bad or not layers:
            raise ValueError(f"layers must be chosen from {_SITE_LAYERS + _STRUCTURE_LAYERS}, got {self.layers!r}.")
        bad = [s for s in self.stats if s not in _STATS]
        if bad:
            raise ValueError(f"stats must be chosen from {_STATS}, got {self.stats!r}.")
        return layers

    def _needed_outputs(self):
        return list(self._check())

    def _widths(self):
        widths = self._encoder().module_.output_widths()
        return {name: widths[name] for name in self._check()}

    def feature_labels(self):
        labels = []
        for name, width in self._widths().items():
            if name in _SITE_LAYERS:
                labels += [f"MEGNet {name} {stat} {k}" for stat in self.stats for k in range(width)]
            else:
                labels += [f"MEGNet {name} {k}" for k in range(width)]
        return labels

    def _featurize_items(self, items, pbar):
        results, errors = self._encode(items, pbar)
        rows = []
        for value in results:
            if value is None:
                rows.append(None)
                continue
            parts = []
            for name in self._check():
                if name in _SITE_LAYERS:
                    parts += [_statistic(value[name], None, stat) for stat in self.stats]
                else:
                    parts.append(np.asarray(value[name], dtype=np.float64))
            rows.append(np.concatenate(parts).tolist())
        return rows, errors


class MEGNetSiteSetFeaturizer(_StructureBase):
    """One :class:`WeightedSet` per structure: a layer's rows, one per site (weights 1).

    The input of AtomSets-V0..V3 (the paper recommends V1 for structures).

    Parameters
    ----------
    layer : {"V0", "V1", "V2", "V3"}, default="V1"
    parent, structure_only, batch_size, cache
        As for :class:`MEGNetStructureFeaturizer`.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from sklearn_atomsets import MEGNetSiteSetFeaturizer
    >>> cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> MEGNetSiteSetFeaturizer("V1").featurize(cscl)
    [WeightedSet(2 rows, 32 features)]
    """

    def __init__(self, layer="V1", parent=DEFAULT_PARENT, structure_only=False, batch_size=256, cache=True):
        self.layer = layer
        self.parent = parent
        self.structure_only = structure_only
        self.batch_size = batch_size
        self.cache = cache

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """``"V0"``..``"V3"``."""
        return cls(layer=preset, **kwargs)

    def _needed_outputs(self):
        if self.layer not in _SITE_LAYERS:
            raise ValueError(f"layer must be one of {_SITE_LAYERS}, got {self.layer!r}.")
        return [self.layer]

    def feature_labels(self):
        return [f"MEGNet {self.layer} set"]

    def _featurize_items(self, items, pbar):
        results, errors = self._encode(items, pbar)
        return [None if v is None else [WeightedSet(v[self.layer])] for v in results], errors


class _CompositionBase(_MEGNetFeaturizerBase):
    def _elements(self, items):
        """(atomic numbers, atom fractions) per item, or an error."""
        table = self._table()
        results, errors = [], {}
        for i, item in enumerate(items):
            try:
                amounts = _as_composition(item).element_composition.fractional_composition.get_el_amt_dict()
                if not amounts:
                    raise ValueError(f"{item!r} has no elements.")
                z = np.array([Element(el).Z for el in amounts])
                if z.max() >= len(table):
                    beyond = [el for el in amounts if Element(el).Z >= len(table)]
                    raise ValueError(f"{beyond} lie beyond the parent's element embedding (Z <= {len(table) - 1}).")
                order = np.argsort(z)
                results.append((z[order], np.array(list(amounts.values()))[order]))
            except Exception as exc:  # noqa: BLE001 - reported per row
                results.append(None)
                errors[i] = self._error(i, exc)
        return results, errors

    def _table(self):
        if getattr(self, "_table_cache", None) is None:
            self._table_cache = self._encoder().element_embedding()
        return self._table_cache

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_table_cache", None)
        return state


class MEGNetElementSetFeaturizer(_CompositionBase):
    """One :class:`WeightedSet` per composition: the V0 rows of its elements, weighted by
    atom fraction (so ``Fe0.01Ni0.99`` is two rows with weights 0.01 and 0.99).

    The input of AtomSets-V0, the paper's choice for compositional data.

    Parameters
    ----------
    parent : str or path, default="Eform_MP_2019"
    batch_size : int, default=256
        Unused for compositions (no forward pass: V0 is a table lookup); kept for symmetry.

    Examples
    --------
    >>> from sklearn_atomsets import MEGNetElementSetFeaturizer
    >>> [s] = MEGNetElementSetFeaturizer().featurize("Fe0.01Ni0.99")
    >>> s.features.shape, s.weights.round(2).tolist()
    ((2, 16), [0.01, 0.99])
    """

    def __init__(self, parent=DEFAULT_PARENT, batch_size=256):
        self.parent = parent
        self.batch_size = batch_size

    def feature_labels(self):
        return ["MEGNet V0 set"]

    def _featurize_items(self, items, pbar):
        table = self._table()
        results, errors = self._elements(items)
        return [None if r is None else [WeightedSet(table[r[0]], r[1])] for r in results], errors


class MEGNetCompositionFeaturizer(_CompositionBase):
    """Fixed-length statistics of V0 over the elements of a composition, weighted by
    atom fraction (weighted mean and standard deviation; min and max over the elements).

    Parameters
    ----------
    stats : tuple of str, default=("mean", "std", "min", "max")
    parent : str or path, default="Eform_MP_2019"
    batch_size : int, default=256
        Unused for compositions; kept for symmetry.

    Examples
    --------
    >>> from sklearn_atomsets import MEGNetCompositionFeaturizer
    >>> featurizer = MEGNetCompositionFeaturizer(stats=("mean",))
    >>> len(featurizer.featurize("SiO2")), featurizer.feature_labels()[0]
    (16, 'MEGNet V0 mean 0')
    """

    def __init__(self, stats=_STATS, parent=DEFAULT_PARENT, batch_size=256):
        self.stats = stats
        self.parent = parent
        self.batch_size = batch_size

    def feature_labels(self):
        bad = [s for s in self.stats if s not in _STATS]
        if bad:
            raise ValueError(f"stats must be chosen from {_STATS}, got {self.stats!r}.")
        width = self._table().shape[1]
        return [f"MEGNet V0 {stat} {k}" for stat in self.stats for k in range(width)]

    def _featurize_items(self, items, pbar):
        self.feature_labels()  # validates stats
        table = self._table()
        results, errors = self._elements(items)
        rows = []
        for r in results:
            if r is None:
                rows.append(None)
                continue
            rows.append(np.concatenate([_statistic(table[r[0]], r[1], stat) for stat in self.stats]).tolist())
        return rows, errors


def _statistic(rows, weights, stat):
    rows = np.asarray(rows, dtype=np.float64)
    if stat == "mean":
        return np.average(rows, axis=0, weights=weights)
    if stat == "std":
        mean = np.average(rows, axis=0, weights=weights)
        return np.sqrt(np.average((rows - mean) ** 2, axis=0, weights=weights))
    if stat == "min":
        return rows.min(axis=0)
    if stat == "max":
        return rows.max(axis=0)
    raise ValueError(f"Unknown statistic {stat!r}.")

