"""Descriptor vectors beside the sets: fixed-length columns that join AtomSets after the readout.

A material often has both a set (the V1 rows of its sites) and ordinary descriptors (a
matminer ``DensityFeatures`` row, say). The estimators take them together; the descriptors
are concatenated to the readout, as part of rho's input (``AtomSetsModule(n_descriptors=k)``).

Two forms of ``X`` carry descriptors:

- a DataFrame with exactly one column of :class:`WeightedSet` (NaN or :class:`FailedSet`
  where a featurizer failed) and numeric columns beside it -- what ``featurize_dataframe``
  of a set featurizer and matminer descriptor featurizers gives, after selecting the
  columns. Its column names are ``feature_names_in_`` and are checked by ``predict``.
- a tuple ``(sets, descriptors)``: ``sets`` any sequence of sets the estimators take other
  than a numeric 2-D array (a list, Series or one-column DataFrame of WeightedSet ...),
  ``descriptors`` a numeric 2-D array or DataFrame with one row per set. A tuple is not cut
  by scikit-learn's splitters, so use the DataFrame in ``Pipeline``, ``GridSearchCV`` and
  ``cross_val_score``.

A NaN descriptor is a missing value of its sample, handled as a missing set is
(``handle_missing``); an infinite one is an error.
"""

from __future__ import annotations

import numpy as np

from sklearn.base import BaseEstimator, TransformerMixin

from ._sets import _is_set_column

__all__ = ["SetsAndDescriptors", "split_descriptors"]


def _numeric_2d(value):
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return all(kind in "biuf" for kind in value.dtypes.map(lambda d: d.kind))
    return isinstance(value, np.ndarray) and value.ndim == 2 and value.dtype.kind in "biuf"


def _as_float(descriptors, names=None):
    values = np.asarray(descriptors, dtype=np.float64)
    if np.isinf(values).any():
        row, column = np.argwhere(np.isinf(values))[0]
        where = repr(names[column]) if names is not None else f"column {column}"
        raise ValueError(f"X has an infinite descriptor value (sample {row}, {where}).")
    return values


def split_descriptors(X):
    """``X`` as ``(sets, descriptors, names)``: its set part, a float64 array of its
    descriptors (NaN kept; one row per sample) and their column names (None for an array),
    or ``(X, None, None)`` when ``X`` has no descriptors.

    Raises ValueError for a DataFrame that mixes sets with columns that are neither sets nor
    numbers (an error column of ``featurize_dataframe``, the input structures), or that has
    more than one set column.
    """
    import pandas as pd

    if isinstance(X, tuple) and len(X) == 2 and _numeric_2d(X[1]) and not _numeric_2d(X[0]) and hasattr(X[0], "__len__"):
        sets, descriptors = X
        if len(descriptors) != len(sets):
            raise ValueError(f"X = (sets, descriptors) has {len(sets)} sets but {len(descriptors)} rows of descriptors.")
        names = list(descriptors.columns) if isinstance(descriptors, pd.DataFrame) else None
        return sets, _as_float(descriptors, names), names
    if not isinstance(X, pd.DataFrame) or X.shape[1] < 2:
        return X, None, None
    set_columns = [name for name in X.columns if X[name].dtype == object and _is_set_column(X[name])]
    if not set_columns:
        return X, None, None  # a table of numbers (one-row sets), or refused later as such
    if len(set_columns) > 1:
        raise ValueError(
            f"X has {len(set_columns)} columns of sets ({set_columns}); the estimators take one set column "
            "(beside numeric descriptor columns). Fit one model per set column, or stack them."
        )
    others = [name for name in X.columns if name != set_columns[0]]
    bad = [name for name in others if X[name].dtype.kind not in "biuf"]
    if bad:
        raise ValueError(
            f"X has the set column {set_columns[0]!r} and columns that are neither sets nor numbers: {bad} "
            f"(dtypes {[str(X[name].dtype) for name in bad]}). Select the set column and numeric descriptor "
            "columns (drop the inputs and featurize_dataframe's error columns)."
        )
    return X[set_columns[0]], _as_float(X[others], others), others


def missing_descriptors(descriptors):
    """Positions of the samples with a NaN descriptor."""
    return np.flatnonzero(np.isnan(descriptors).any(axis=1))


def describe_missing(descriptors, positions, names=None):
    """Message naming the first sample with NaN descriptors and its columns."""
    first = int(positions[0])
    columns = np.flatnonzero(np.isnan(descriptors[first]))
    shown = [repr(names[c]) if names is not None else str(int(c)) for c in columns[:5]]
    more = f" and {len(columns) - 5} more" if len(columns) > 5 else ""
    others = f" ({len(positions)} of the {len(descriptors)} samples have NaN descriptors.)" if len(positions) > 1 else ""
    return (
        f"Sample {first} of X has missing descriptor values (NaN in {', '.join(shown)}{more}): a row a "
        f"featurizer could not featurize?{others} Drop or fix such rows, or pass handle_missing='ignore' to "
        "fit without them (predict gives them the training prior)."
    )


def take_samples(X, positions):
    """The samples of ``X`` at ``positions``, in the form ``X`` came in (a ``(sets, descriptors)``
    tuple cut in both parts; anything else as scikit-learn's ``_safe_indexing`` cuts it)."""
    from sklearn.utils import _safe_indexing

    if isinstance(X, tuple) and split_descriptors(X)[1] is not None:
        return tuple(_safe_indexing(part, positions) for part in X)
    return _safe_indexing(X, positions)


class SetsAndDescriptors(TransformerMixin, BaseEstimator):
    """One set featurizer's sets beside one descriptor featurizer's columns: the DataFrame form of
    ``X`` above, as the first step of a ``Pipeline`` (structures or compositions in).

    The set column is named ``"sets"`` (a :class:`FailedSet` where the set featurizer failed);
    the descriptor columns carry the descriptor featurizer's labels, NaN where it failed (matminer's
    ``featurize_many(ignore_errors=True)``): impute or select them in a later step, or let the
    estimator's ``handle_missing`` decide. Neither featurizer is fitted (they are frozen or
    hand-made): ``fit`` does nothing.

    Parameters
    ----------
    sets : featurizer
        Gives one set per entry (``SiteSetFeaturizer``, ``ElementSetFeaturizer``...).
    descriptors : matminer featurizer
        Gives one numeric row per entry (``descriptor_preset(...)``, ``DensityFeatures()``...).

    Examples
    --------
    >>> from pymatgen.core import Composition
    >>> from matminer.featurizers.composition import Stoichiometry
    >>> from sklearn_atomsets import ElementSetFeaturizer, SetsAndDescriptors
    >>> X = SetsAndDescriptors(ElementSetFeaturizer(), Stoichiometry()).fit_transform([Composition("Fe2O3")])
    >>> list(X.columns)[:3], X.shape
    (['sets', '0-norm', '2-norm'], (1, 7))
    """

    def __init__(self, sets, descriptors):
        self.sets = sets
        self.descriptors = descriptors

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        import pandas as pd

        labels = list(self.descriptors.feature_labels())
        if "sets" in labels:  # before any featurizing
            raise ValueError("The descriptor featurizer has a column named 'sets', the set column's name.")
        X = list(X)
        sets = [row[0] for row in self.sets.transform(X)]
        values = self.descriptors.featurize_many(X, ignore_errors=True, pbar=False)
        frame = pd.DataFrame(np.asarray(values, dtype=np.float64).reshape(len(X), len(labels)), columns=labels)
        frame.insert(0, "sets", pd.Series(sets, dtype=object))
        return frame
