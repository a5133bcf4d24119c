"""matminer featurizers exposing the frozen MEGNet layers (V0..V3, u1..u3, set2set, f).

All five are ``matminer.featurizers.base.BaseFeaturizer`` subclasses, hence also
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
AtomicNumberSetFeaturizer       Composition or       one set of atomic numbers (for the
                                Structure            trainable-embedding AtomSets model)
==============================  ===================  =======================================

Inputs: pymatgen ``Structure`` objects or ``Structure.as_dict()`` dicts; the composition
featurizers also take ``Composition`` objects, formula strings and structures (reduced to
their composition). Oxidation-state decorated species are read as their element.

**Set-valued features** are one DataFrame column of :class:`WeightedSet` objects (NaN for a
row that failed), and ``feature_labels()`` has one label for it. A ``WeightedSet`` is a plain
picklable value, so the column survives pandas, scikit-learn's CV indexing and pickling, and
the AtomSets estimators take it (or the 1-column DataFrame) as ``X``.

**Batching.** ``featurize_many`` / ``featurize_dataframe`` / ``transform`` send structures to
the encoder ``batch_size`` at a time (one forward pass each) instead of calling ``featurize``
per entry; errors stay with their row, reported like matminer's (``ignore_errors``: NaN;
``return_errors``: a ``"<Featurizer> Exceptions"`` column with a readable message). A progress
bar is shown when more than one batch is needed.

**Processes, threads, device.** ``n_jobs`` keeps matminer's meaning: worker processes.
``1`` (default) encodes in this process, batched; ``n_jobs=k`` (or ``set_n_jobs(k)``, as
``MultipleFeaturizer.set_n_jobs`` does) splits the structures still to encode over ``k``
processes of a ``multiprocessing.Pool`` (the default start method: fork, spawn or
forkserver), each loading the parent once; inputs under 64 structures per process, and
calls from inside a daemon worker (a ``Pool`` or a Dask worker), stay in-process.
``torch_threads`` is a separate knob: torch intra-op threads per process for the forward
passes (default ``None`` = 1; ``-1`` all CPUs), restored afterwards; one thread per process
is the fastest safe choice on a shared machine (see :mod:`sklearn_atomsets._threads`).
``device`` (``"cpu"``, ``"cuda"``, a ``torch.device``) is where the forward passes run;
features always come back on the host. ``feature_labels()`` runs no forward pass, so
matminer's default path (``MultipleFeaturizer``, ``iterate_over_entries=True``, a forked
``Pool``) is safe. Inside a ``MultipleFeaturizer`` prefer ``iterate_over_entries=False``
so that our featurizers get the whole column and batch it.

**Cache.** Structure featurizers look every structure up in a process-wide cache first
(``cache=True``), keyed by the parent's checksum, the structure-only flag and a hash of the
lattice, coordinates and species. The clones that ``GridSearchCV`` makes of a
``Pipeline(featurizer -> estimator)`` share it, so each distinct structure goes through the
encoder once per process and parent, whatever the number of candidates and folds (with
``GridSearchCV(n_jobs>1)`` once per worker process). The cache is bounded in memory (least
recently used entries go first); :func:`clear_feature_cache` empties it. ``Pipeline(memory=...)``
works too but caches per fold's training rows, so it saves less.
"""

from __future__ import annotations

import copy
import hashlib
import multiprocessing
import os
import re
from collections import OrderedDict

import numpy as np
from matminer.featurizers.base import BaseFeaturizer
from pymatgen.core import Composition, Element, Structure

from ._encoder import MEGNetEncoder
from ._graph import GraphConstructionError
from ._parents import DEFAULT_PARENT
from ._sets import WeightedSet
from ._threads import torch_threads

__all__ = [
    "AtomicNumberSetFeaturizer",
    "MEGNetCompositionFeaturizer",
    "MEGNetElementSetFeaturizer",
    "MEGNetSiteSetFeaturizer",
    "MEGNetStructureFeaturizer",
    "clear_feature_cache",
]

_SITE_LAYERS = ("V0", "V1", "V2", "V3")
_STRUCTURE_LAYERS = ("f", "u1", "u2", "u3", "set2set_atom", "set2set_bond")
_STATS = ("mean", "std", "min", "max")
_MIN_STRUCTURES_PER_WORKER = 64  # below this, starting a process costs more than it saves
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

class _FeatureCache:
    """Encoder outputs per structure: (parent checksum, structure-only flag, structure hash)
    -> {output name: array}. Bounded in bytes; least recently used entries go first. Entries
    for the same structure and parent are merged, so featurizers asking for different
    layers complete one entry rather than evicting each other's."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._data = OrderedDict()

    def get(self, key, wanted):
        entry = self._data.get(key)
        if entry is None or any(name not in entry for name in wanted):
            return None
        self._data.move_to_end(key)
        return entry

    def put(self, key, value):
        entry = self._data.pop(key, None) or {}
        self.nbytes -= sum(a.nbytes for a in entry.values())
        entry = {**entry, **value}
        self.nbytes += sum(a.nbytes for a in entry.values())
        self._data[key] = entry
        while self.nbytes > self.max_bytes and len(self._data) > 1:
            _, dropped = self._data.popitem(last=False)
            self.nbytes -= sum(a.nbytes for a in dropped.values())

    def clear(self):
        self._data.clear()
        self.nbytes = 0

    def __len__(self):
        return len(self._data)


_CACHE = _FeatureCache(max_bytes=2 << 30)


def clear_feature_cache():
    """Empty the featurizers' process-wide cache of encoder outputs.

    Examples
    --------
    >>> from sklearn_atomsets import clear_feature_cache
    >>> clear_feature_cache()
    """
    _CACHE.clear()


_ENCODERS = {}  # (parent, batch size, device) -> MEGNetEncoder, for every featurizer in this process


def _shared_encoder(parent, batch_size, device):
    """One encoder (one loaded parent) per process and configuration: clones made by
    GridSearchCV, the copies Dask sends with each task and the featurizers of a
    MultipleFeaturizer all load a parent once per process. The frozen module is only read."""
    name = parent if isinstance(parent, (str, os.PathLike)) else id(parent)
    key = (name, batch_size, str(device))
    if key not in _ENCODERS:
        _ENCODERS[key] = MEGNetEncoder(parent, batch_size=batch_size, device=device)
    return _ENCODERS[key]


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

    # Plain attributes instead of matminer's read-only property (whose default, the CPU
    # count, would start a worker pool for every call); see the module docstring.
    n_jobs = 1
    torch_threads = None
    device = "cpu"

    def set_n_jobs(self, n_jobs):
        """Worker processes for ``featurize_many`` / ``featurize_dataframe`` (matminer's meaning)."""
        self.n_jobs = n_jobs

    def __getstate__(self):
        # Pickles keep the parent's name or path, never the weights.
        return {k: v for k, v in self.__dict__.items() if k != "_encoder_cache"}

    def _encoder(self):
        encoder = getattr(self, "_encoder_cache", None)
        # looked up again when set_params changed the parent, batch size or device
        if (encoder is None or encoder.parent is not self.parent or encoder.batch_size != self.batch_size
                or encoder.device != self.device):
            encoder = self._encoder_cache = _shared_encoder(self.parent, self.batch_size, self.device)
            self._table_cache = None
        return encoder

    def __sklearn_is_fitted__(self):
        # Stateless: the frozen encoder is never trained, so a Pipeline may end here.
        return True

    def get_feature_names_out(self, input_features=None):
        """The feature labels, for scikit-learn's ``set_output`` and pipelines."""
        return np.asarray(self.feature_labels(), dtype=object)

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

    def _parent_key(self):
        parent = self._encoder().parent_
        return parent.sha256 or str(parent.path)

    def _encode(self, items, pbar):
        """Encoder outputs per item (dict) or an error, using and filling the cache."""
        wanted = self._needed_outputs()
        parent_key = self._parent_key() if self.cache else None
        results, errors, todo = [None] * len(items), {}, OrderedDict()
        for i, item in enumerate(items):
            try:
                structure = _as_structure(item)
                if self.structure_only:
                    structure = _hydrogen_only(structure)
            except Exception as exc:  # noqa: BLE001 - reported per row
                errors[i] = self._error(i, exc)
                continue
            if not self.cache:
                todo[i] = (structure, [i])
                continue
            key = (parent_key, bool(self.structure_only), _structure_key(structure))
            cached = _CACHE.get(key, wanted)
            if cached is not None:
                results[i] = cached
            else:  # a structure repeated in the input is encoded once
                todo.setdefault(key, (structure, []))[1].append(i)
        keys = list(todo)
        encoded = self._encode_structures([todo[key][0] for key in keys], wanted, pbar)
        for key, value in zip(keys, encoded):
            if isinstance(value, str):
                for i in todo[key][1]:
                    errors[i] = self._error(i, GraphConstructionError(value))
                continue
            if self.cache:
                _CACHE.put(key, value)
            for i in todo[key][1]:
                results[i] = value
        return results, errors

    def _n_workers(self, n_structures):
        n_jobs = 1 if self.n_jobs is None else int(self.n_jobs)
        if n_jobs < 0:
            n_jobs = max((os.cpu_count() or 1) + 1 + n_jobs, 1)
        if n_jobs <= 1 or multiprocessing.current_process().daemon:
            return 1  # daemonic processes may not have children: encode here
        return max(1, min(n_jobs, n_structures // _MIN_STRUCTURES_PER_WORKER))

    def _encode_structures(self, structures, wanted, pbar):
        """Encoder outputs ({name: array}) or an error message per structure, in batches;
        spread over ``n_jobs`` worker processes when there is enough work."""
        n_workers = self._n_workers(len(structures))
        if n_workers > 1:
            worker = copy.copy(self)  # pickled without the loaded parent; loads it once
            worker.n_jobs = 1
            bounds = np.linspace(0, len(structures), n_workers + 1).astype(int)
            jobs = [(worker, structures[a:b], wanted) for a, b in zip(bounds[:-1], bounds[1:])]
            with multiprocessing.Pool(n_workers) as pool:
                return [value for part in pool.imap(_encode_in_worker, jobs) for value in part]
        encoded = []
        chunks = range(0, len(structures), self.batch_size)
        if pbar and len(structures) > self.batch_size:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=type(self).__name__, unit="batch", **(pbar if isinstance(pbar, dict) else {}))
        with torch_threads(self.torch_threads):
            for start in chunks:
                chunk = structures[start : start + self.batch_size]
                out = self._encoder().encode(chunk, on_error="nan", outputs=wanted)
                per_item = {name: out[name] for name in wanted}
                for j in range(len(chunk)):
                    if j in out.errors:
                        # the encoder names the structure by its place in this batch
                        encoded.append(re.sub(r"^(structure|item) \d+ ?", "structure ", out.errors[j]))
                    else:
                        # own copies: a view would keep its whole batch array alive
                        encoded.append({name: np.array(per_item[name][j]) for name in wanted})
        return encoded


def _encode_in_worker(job):
    featurizer, structures, wanted = job
    return featurizer._encode_structures(structures, wanted, pbar=False)


class MEGNetStructureFeaturizer(_StructureBase):
    """Fixed-length MEGNet features of a crystal structure.

    Parameters
    ----------
    layers : tuple of str, default=("f",)
        Structure-level outputs (``"f"`` -- the readout vector, input of the paper's MLP-f --
        ``"u1"`` to ``"u3"``, ``"set2set_atom"``, ``"set2set_bond"``) taken as they are, and
        site-level outputs (``"V0"`` to ``"V3"``) summarised over the sites by ``stats``.
    stats : tuple of str, default=("mean", "std", "min", "max")
        Statistics of site-level layers over the sites.
    parent : str or path, default="Eform_MP_2019"
        The parent model (see :func:`load_parent`).
    structure_only : bool, default=False
        Replace every element by H before featurizing (paper, Supplementary Table 7).
    batch_size : int, default=256
        Structures per encoder forward pass.
    cache : bool, default=True
        Look structures up in the process-wide cache of encoder outputs (and fill it).
    n_jobs : int, default=1
        Worker processes (matminer's meaning): 1 encodes here, batched; ``k`` > 1 spreads the
        structures over ``k`` processes (at least 64 structures each); -1 all CPUs.
    torch_threads : int or None, default=None
        torch intra-op threads per process for the forward passes; None means 1 (the fastest
        safe choice on a shared machine), -1 all CPUs.
    device : str or torch.device, default="cpu"
        Where the forward passes run (``"cuda"``, ...); features come back on the host.

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
                 batch_size=256, cache=True, n_jobs=1, torch_threads=None, device="cpu"):
        self.layers = layers
        self.stats = stats
        self.parent = parent
        self.structure_only = structure_only
        self.batch_size = batch_size
        self.cache = cache
        self.n_jobs = n_jobs
        self.torch_threads = torch_threads
        self.device = device

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
        if bad or isinstance(self.stats, str) or (not self.stats and set(layers) & set(_SITE_LAYERS)):
            raise ValueError(f"stats must be a tuple chosen from {_STATS}, got {self.stats!r}.")
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
        done = [value for value in results if value is not None]
        if not done:
            return [None] * len(results), errors
        # one table for the whole batch: statistics as segment reductions, not a loop of
        # small NumPy calls per structure
        parts = []
        for name in self._check():
            if name in _SITE_LAYERS:
                parts.append(_site_statistics([value[name] for value in done], self.stats))
            else:
                parts.append(np.stack([value[name] for value in done]).astype(np.float64))
        table = iter(np.hstack(parts).tolist())
        return [None if value is None else next(table) for value in results], errors


class MEGNetSiteSetFeaturizer(_StructureBase):
    """One :class:`WeightedSet` per structure: a layer's rows, one per site (weights 1).

    The input of AtomSets-V0..V3 (the paper recommends V1 for structures).

    Parameters
    ----------
    layer : {"V0", "V1", "V2", "V3"} or tuple of them, default="V1"
        Several layers are concatenated per site (e.g. ``("V0", "V1")``: 48 features).
    parent, structure_only, batch_size, cache, n_jobs, torch_threads, device
        As for :class:`MEGNetStructureFeaturizer`.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from sklearn_atomsets import MEGNetSiteSetFeaturizer
    >>> cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> MEGNetSiteSetFeaturizer("V1").featurize(cscl)
    [WeightedSet(2 rows, 32 features)]
    """

    def __init__(self, layer="V1", parent=DEFAULT_PARENT, structure_only=False, batch_size=256, cache=True,
                 n_jobs=1, torch_threads=None, device="cpu"):
        self.layer = layer
        self.parent = parent
        self.structure_only = structure_only
        self.batch_size = batch_size
        self.cache = cache
        self.n_jobs = n_jobs
        self.torch_threads = torch_threads
        self.device = device

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """``"V0"`` to ``"V3"``."""
        return cls(layer=preset, **kwargs)

    def _layers(self):
        layers = (self.layer,) if isinstance(self.layer, str) else tuple(self.layer)
        if not layers or any(name not in _SITE_LAYERS for name in layers):
            raise ValueError(f"layer must be one of {_SITE_LAYERS} or a tuple of them, got {self.layer!r}.")
        return layers

    def _needed_outputs(self):
        return list(self._layers())

    def feature_labels(self):
        return [f"MEGNet {'+'.join(self._layers())} set"]

    def _featurize_items(self, items, pbar):
        results, errors = self._encode(items, pbar)
        layers = self._layers()
        rows = [None if v is None else [WeightedSet(np.hstack([v[name] for name in layers]))] for v in results]
        return rows, errors


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
        encoder = self._encoder()  # first: forgets the table when the parent changed
        if getattr(self, "_table_cache", None) is None:
            self._table_cache = encoder.element_embedding()
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
    >>> s.features.shape, [round(float(w), 2) for w in s.weights]
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


def _site_statistics(arrays, stats):
    """``stats`` of each ``(n_sites, d)`` array over its sites: ``(len(arrays), len(stats) * d)``."""
    counts = np.array([len(a) for a in arrays])
    rows = np.concatenate(arrays).astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mean = np.add.reduceat(rows, starts, axis=0) / counts[:, None]
    out = []
    for stat in stats:
        if stat == "mean":
            out.append(mean)
        elif stat == "std":
            deviation = rows - np.repeat(mean, counts, axis=0)
            out.append(np.sqrt(np.add.reduceat(deviation * deviation, starts, axis=0) / counts[:, None]))
        elif stat == "min":
            out.append(np.minimum.reduceat(rows, starts, axis=0))
        elif stat == "max":
            out.append(np.maximum.reduceat(rows, starts, axis=0))
        else:
            raise ValueError(f"Unknown statistic {stat!r}.")
    return np.hstack(out)


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



class AtomicNumberSetFeaturizer(_MEGNetFeaturizerBase):
    """One :class:`WeightedSet` of atomic numbers per entry: the input of the paper's
    non-transfer-learning AtomSets model (a trainable element embedding).

    Compositions give one row per element weighted by atom fraction; structures give one
    row per site (weights 1), or their composition with ``use_composition=True``.

    Parameters
    ----------
    use_composition : bool, default=False
        Reduce structures to their composition.

    Examples
    --------
    >>> from sklearn_atomsets import AtomicNumberSetFeaturizer
    >>> AtomicNumberSetFeaturizer().featurize("Fe2O3")[0].features.tolist()
    [8, 26]
    """

    def __init__(self, use_composition=False):
        self.use_composition = use_composition

    def feature_labels(self):
        return ["atomic number set"]

    def _featurize_items(self, items, pbar):
        rows, errors = [], {}
        for i, item in enumerate(items):
            try:
                if isinstance(item, dict) and "lattice" in item:
                    item = Structure.from_dict(item)
                if isinstance(item, Structure) and not self.use_composition:
                    if not item.is_ordered:
                        raise ValueError("disordered (partially occupied) sites: one element per site is needed.")
                    rows.append([WeightedSet(np.array([site.specie.Z for site in item], dtype=np.int64))])
                else:
                    rows.append([WeightedSet.from_composition(_as_composition(item))])
            except Exception as exc:  # noqa: BLE001 - reported per row
                rows.append(None)
                errors[i] = self._error(i, exc)
        return rows, errors
