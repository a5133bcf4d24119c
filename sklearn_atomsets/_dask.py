"""Featurize a Dask DataFrame of structures: a blockwise map over partitions with an explicit
``meta``, so nothing runs on placeholder data (needs the ``[dask]`` extra).

The same code runs in-process, on a ``distributed.LocalCluster`` and on a multi-machine
cluster: only the ``distributed.Client`` address changes. Each worker process loads a parent
model once (featurizers share a process-wide encoder per parent, device and batch size) and
encodes with one torch thread per Dask thread; Dask's workers are the parallelism, so
matminer's own worker pools are switched off inside partitions.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import sys
from contextlib import contextmanager

import numpy as np
import pandas as pd

__all__ = ["featurize_dask", "to_dask_frame"]


def _import_dask():
    try:
        import dask
        import dask.dataframe as dd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Dask featurization needs dask[dataframe]: pip install 'sklearn-atomsets[dask]'."
        ) from exc
    return dask, dd


def to_dask_frame(data, npartitions=None, chunksize=None, weights=None):
    """A Dask DataFrame from a pandas DataFrame of structures, keeping them Python objects.

    Dask's default ``dataframe.convert-string`` turns object columns into strings, so a column
    of pymatgen ``Structure`` objects (or of their ``as_dict()`` dicts) would arrive in the
    partitions as ``"Full Formula ..."`` text. This builds the frame with that conversion off.

    Parameters
    ----------
    data : pandas.DataFrame
    npartitions, chunksize : int, optional
        As for :func:`dask.dataframe.from_pandas` (give one of them).
    weights : array-like or str, optional
        A cost per row (or the name of a column holding it). With ``npartitions``, the rows
        are cut, in order, into partitions of about equal total weight instead of equal row
        counts. Encoding time grows with a structure's size, so ``df["structure"].map(len)``
        (sites) keeps the workers finishing together: on the MatBench dielectric set, equal
        row counts left one of two workers with 16% more work (benchmarks/scale_out.py).

    Returns
    -------
    dask.dataframe.DataFrame

    Examples
    --------
    >>> import pandas as pd
    >>> from pymatgen.core import Lattice, Structure
    >>> from sklearn_atomsets import to_dask_frame
    >>> small = Structure(Lattice.cubic(3.0), ["Cs"], [[0, 0, 0]])
    >>> big = small * (2, 2, 2)
    >>> df = pd.DataFrame({"structure": [big, small, small, small, small, small, small, small, small]})
    >>> ddf = to_dask_frame(df, npartitions=2, weights=df["structure"].map(len))
    >>> [len(part) for part in ddf.partitions]  # 8 sites in each
    [1, 8]
    """
    dask, dd = _import_dask()
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"to_dask_frame expects a pandas DataFrame, got {type(data).__name__}.")
    if npartitions is None and chunksize is None:
        npartitions = 1
    with dask.config.set({"dataframe.convert-string": False}):
        if weights is None:
            return dd.from_pandas(data, npartitions=npartitions, chunksize=chunksize)
        if npartitions is None or chunksize is not None:
            raise ValueError("to_dask_frame: weights= cuts the rows into npartitions partitions; give npartitions, "
                             "not chunksize.")
        bounds = _balanced_bounds(data[weights] if isinstance(weights, str) else weights, len(data), npartitions)
        return dd.concat([dd.from_pandas(data.iloc[a:b], npartitions=1) for a, b in zip(bounds[:-1], bounds[1:])])


def _balanced_bounds(weights, n, npartitions):
    """Row boundaries cutting ``n`` rows, in order, into at most ``npartitions`` non-empty
    runs of about equal total weight."""
    w = np.asarray(weights, dtype=float)
    if w.shape != (n,):
        raise ValueError(f"to_dask_frame: weights should have one value per row ({n}), got shape {w.shape}.")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("to_dask_frame: weights should be finite and non-negative.")
    if isinstance(npartitions, bool) or not isinstance(npartitions, (int, np.integer)) or npartitions < 1:
        raise ValueError(f"to_dask_frame: npartitions should be a positive integer, got {npartitions!r}.")
    if n == 0:
        return [0, 0]
    total = np.cumsum(w)
    # the first row whose running total reaches each k/npartitions of the whole ends a partition
    cuts = np.searchsorted(total, total[-1] * np.arange(1, npartitions) / npartitions, side="left") + 1
    return sorted({0, n, *(int(c) for c in cuts if 0 < c < n)})


def _as_input(value):
    """Structures, ``as_dict()`` dicts or their JSON text -> Structure; strings dask made
    out of objects are refused with the fix."""
    from pymatgen.core import Structure

    if isinstance(value, dict) and "lattice" in value and "sites" in value:
        return Structure.from_dict(value)
    if isinstance(value, str):
        text = value.lstrip()
        if text.startswith("{"):
            return Structure.from_dict(json.loads(text))
        if text.startswith("Full Formula"):
            raise TypeError(
                "got str: the Structure column was turned into text by dask's 'dataframe.convert-string' "
                "option. Build the frame with sklearn_atomsets.to_dask_frame(df, npartitions=...) or inside "
                "dask.config.set({'dataframe.convert-string': False})."
            )
    return value


def _set_featurizer_classes():
    from ._featurizers import AtomicNumberSetFeaturizer, ElementSetFeaturizer, SiteSetFeaturizer

    return (AtomicNumberSetFeaturizer, ElementSetFeaturizer, SiteSetFeaturizer)  # their MEGNet* names too


def _feature_dtypes(featurizer):
    """One dtype per feature label: object for set-valued features, float64 otherwise."""
    from matminer.featurizers.base import MultipleFeaturizer

    if isinstance(featurizer, MultipleFeaturizer):
        return [d for f in featurizer.featurizers for d in _feature_dtypes(f)]
    dtype = object if isinstance(featurizer, _set_featurizer_classes()) else np.float64
    return [dtype] * len(featurizer.feature_labels())


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_GLIBC_FIXED_MMAP_THRESHOLD = 128 * 1024


@contextmanager
def _tensors_on_the_heap():
    """Let glibc serve and keep the encoder's MB-sized temporaries on the heap during a partition.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``: every free that leaves
    64 KiB at the top of the heap gives it back to the OS, and setting any malloc tunable turns
    off glibc's adaptive mmap threshold, so every allocation over 128 KiB becomes a fresh
    ``mmap``. Either way the pages are faulted in and zeroed again at every batch: with that
    variable set, encoding ran at half its speed in-process and 20-30% slower in a worker that
    only fixed the mmap threshold (benchmarks/scale_out.py). Both thresholds are raised for the
    partition and put back afterwards (the trim threshold to the variable's value, the mmap
    threshold to glibc's fixed 128 KiB), with the heap trimmed, so the worker's memory policy
    between tasks is what it was. Nothing is changed where the variable is not set.
    """
    libc = None
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_", "")
    if sys.platform.startswith("linux") and trim.isdigit() and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        try:
            libc = ctypes.CDLL("libc.so.6")
            if libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) != 1 or libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20) != 1:
                libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_FIXED_MMAP_THRESHOLD)
                libc = None
        except (OSError, AttributeError):  # not glibc
            libc = None
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_FIXED_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, int(trim))
            libc.malloc_trim(0)


def _featurize_partition(part, featurizer, col_id, ignore_errors, return_errors, columns):
    if len(part) == 0:
        return _empty(part, columns)
    with _tensors_on_the_heap():
        return _featurize_rows(part, featurizer, col_id, ignore_errors, return_errors, columns)


def _featurize_rows(part, featurizer, col_id, ignore_errors, return_errors, columns):
    featurizer = copy.deepcopy(featurizer)  # set_n_jobs below must not change the caller's object
    featurizer.set_n_jobs(1)  # Dask is the parallelism here; no worker pools inside a worker
    part = part.copy()
    part[col_id] = part[col_id].map(_as_input)
    # our featurizers' row errors name the row by the frame's index, not by its place in the partition
    for ours in getattr(featurizer, "featurizers", [featurizer]):
        if hasattr(ours, "_row_names"):
            ours._row_names = list(part.index)
    out = featurizer.featurize_dataframe(part, col_id, ignore_errors=ignore_errors, return_errors=return_errors,
                                         pbar=False)
    return out.astype({name: dtype for name, dtype in columns.items() if dtype is np.float64})


def _empty(part, columns):
    new = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in columns.items()}, index=part.index[:0])
    return pd.concat([part.iloc[:0], new], axis=1)


def featurize_dask(ddf, featurizer, col_id, ignore_errors=True, return_errors=False, meta=None):
    """Featurize a column of a Dask DataFrame, partition by partition, lazily.

    Each partition goes through the featurizer's own ``featurize_dataframe`` (so our
    featurizers batch it); a row that cannot be featurized becomes NaN (``ignore_errors``)
    and, with ``return_errors``, keeps its message in a ``"<Featurizer> Exceptions"``
    column, as in matminer. Nothing is computed until ``.compute()`` (or ``persist``,
    ``to_parquet``...), on whatever scheduler is active: a ``distributed.Client`` sends the
    partitions to its workers.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        With a column of pymatgen ``Structure`` objects, of their ``as_dict()`` dicts or of
        their JSON text (the storable forms), or of whatever else ``featurizer`` takes
        (compositions, formulas). Build it with :func:`to_dask_frame` to keep objects as
        objects.
    featurizer : matminer BaseFeaturizer
        Any of this package's featurizers, a matminer featurizer, or a ``MultipleFeaturizer``
        of them. It is sent to the workers; its parent model is loaded there once per
        worker process.
    col_id : str
        The input column.
    ignore_errors : bool, default=True
    return_errors : bool, default=False
    meta : pandas.DataFrame, optional
        The empty frame the result looks like; by default built from ``feature_labels()``
        (float64 features, object for set-valued ones and the error column), which needs no
        forward pass.

    Returns
    -------
    dask.dataframe.DataFrame
        ``ddf``'s columns followed by the features.

    Examples
    --------
    >>> import pandas as pd
    >>> from pymatgen.core import Lattice, Structure
    >>> from sklearn_atomsets import MEGNetStructureFeaturizer, featurize_dask, to_dask_frame
    >>> cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> frame = pd.DataFrame({"structure": [cscl, cscl.as_dict(), "Xx"]})
    >>> ddf = to_dask_frame(frame, npartitions=2)
    >>> lazy = featurize_dask(ddf, MEGNetStructureFeaturizer(), "structure", return_errors=True)
    >>> out = lazy.compute(scheduler="synchronous")
    >>> out.shape, out["MEGNet f 0"].notna().tolist()
    ((3, 98), [True, True, False])
    >>> out["MEGNetStructureFeaturizer Exceptions"].iloc[2][:49]
    'index 2: TypeError: Expected a pymatgen Structure'
    """
    _, dd = _import_dask()
    if not isinstance(ddf, dd.DataFrame):
        raise TypeError(f"featurize_dask expects a dask DataFrame, got {type(ddf).__name__}; see to_dask_frame.")
    if not isinstance(col_id, str):
        raise TypeError(f"col_id must be one column name (str), got {col_id!r}.")
    if col_id not in ddf.columns:
        raise KeyError(f"Column {col_id!r} not in the frame; columns: {list(ddf.columns)}.")
    if return_errors and not ignore_errors:
        raise ValueError("Please set ignore_errors to True to use return_errors.")
    if pd.api.types.is_string_dtype(ddf.dtypes[col_id]) and ddf.dtypes[col_id] != object:
        raise TypeError(
            f"Column {col_id!r} has dtype {ddf.dtypes[col_id]}: dask's 'dataframe.convert-string' turned its "
            "objects into text. Build the frame with sklearn_atomsets.to_dask_frame(df, npartitions=...) or inside "
            "dask.config.set({'dataframe.convert-string': False})."
        )
    dtypes = dict(zip(featurizer.feature_labels(), _feature_dtypes(featurizer)))
    # matminer's own column names, error columns included (one per featurizer of a MultipleFeaturizer)
    labels = list(featurizer._generate_column_labels(multiindex=False, return_errors=return_errors))
    clash = sorted(set(labels) & set(ddf.columns))
    if clash:
        raise ValueError(f"{clash[:3]} already exist in the frame.")
    columns = {label: dtypes.get(label, object) for label in labels}
    if meta is None:
        meta = _empty(ddf._meta, columns)
    return ddf.map_partitions(_featurize_partition, featurizer, col_id, ignore_errors, return_errors, columns,
                              meta=meta)
