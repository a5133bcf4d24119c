"""Sets of feature rows with weights: the input of the AtomSets estimators.

One material is one :class:`WeightedSet`: a ``(n_rows, n_features)`` float array (site or
element features, e.g. V0..V3 from the frozen MEGNet) or a 1-D array of atomic numbers (for
the trainable element embedding), plus one positive weight per row (atom fractions for a
composition, ones for the sites of a structure). A ``WeightedSet`` is a plain picklable
value, so a column of them lives in a pandas DataFrame, is indexed by scikit-learn's
cross-validation like any object column, and is what the estimators accept as ``X``.

For training, a whole dataset is packed once (:func:`pack_sets`) into flat arrays and
offsets; batches are then cut with array arithmetic, never a Python loop per material.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FailedSet",
    "PackedSets",
    "WeightedSet",
    "as_packed_sets",
    "as_sets",
    "merge_equal_rows",
    "pack_sets",
    "row_table",
    "sets_from_list_columns",
    "sets_to_list_columns",
]


class FailedSet(float):
    """The set of a row that a featurizer could not featurize: NaN that keeps the reason.

    A featurizer's ``transform`` (what a :class:`~sklearn.pipeline.Pipeline` calls) puts one
    in place of each row it could not featurize. It is a float NaN to everything else
    (``np.isnan``, ``pd.isna``, arithmetic, pickling), so code that looks for NaN sees a
    missing value; the AtomSets estimators also read :attr:`reason`, so their error names the
    featurizer's message, and ``handle_missing="ignore"`` skips the row (see
    :class:`AtomSetsRegressor`). ``featurize_dataframe`` keeps matminer's plain NaN plus
    error column.

    Parameters
    ----------
    reason : str or RowError
        Why the row has no set, as the featurizer reported it (its :class:`RowError`, whose
        fields say where and what).

    Attributes
    ----------
    reason : str
        The message.
    error : RowError or None
        The same as data (``position``, ``kind``, ``message``), when the featurizer gave one.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_atomsets import FailedSet, RowError
    >>> missing = FailedSet(RowError.in_row(0, "GraphConstructionError", "no neighbour within the cutoff"))
    >>> bool(np.isnan(missing)), missing.reason
    (True, 'row 0: GraphConstructionError: no neighbour within the cutoff')
    >>> missing.error.position, missing.error.kind
    (0, 'GraphConstructionError')
    """

    def __new__(cls, reason):
        self = super().__new__(cls, "nan")
        self.reason = str(reason)
        self.error = reason if hasattr(reason, "kind") and hasattr(reason, "position") else None
        return self

    def __repr__(self):
        return f"FailedSet({self.reason!r})"

    def __reduce__(self):
        return (FailedSet, (self.reason if self.error is None else self.error,))


def _is_missing(item):
    """A sample without a set: None, NaN (a :class:`FailedSet` too), or a row of them (what
    ``transform`` gives for a fixed-length feature row that failed)."""
    if item is None or (isinstance(item, numbers.Real) and np.isnan(item)):
        return True
    if isinstance(item, (list, tuple)) and item:
        return all(v is None or (isinstance(v, numbers.Real) and np.isnan(v)) for v in item)
    if isinstance(item, np.ndarray) and item.ndim == 1 and item.size and item.dtype.kind in "fO":
        return all(_is_missing(v) for v in item)
    return False


def _reason(item):
    """The featurizer's message for a missing sample, if it left one."""
    if isinstance(item, FailedSet):
        return item.reason
    if isinstance(item, (list, tuple, np.ndarray)) and len(item) and isinstance(item[0], FailedSet):
        return item[0].reason
    return None


def find_missing(X):
    """Positions of the samples of ``X`` that have no set, and the featurizer's reasons.

    A sample is missing when it is None or NaN (a row the featurizer could not handle:
    NaN in ``featurize_dataframe``'s output, a :class:`FailedSet` in ``transform``'s), or,
    in a table, a row that is entirely NaN. Returns ``(positions, reasons)``: an int array
    and a dict position -> message for the rows whose featurizer left one.
    """
    import scipy.sparse

    X = _from_pandas(X)
    if scipy.sparse.issparse(X):
        return np.zeros(0, dtype=np.int64), {}
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim == 2 and X.dtype.kind == "f" and X.shape[1]:
            return np.flatnonzero(np.isnan(X).all(axis=1)), {}
        return np.zeros(0, dtype=np.int64), {}
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == 1:
        X = X[:, 0]
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__"):
        return np.zeros(0, dtype=np.int64), {}
    positions, reasons = [], {}
    for i, item in enumerate(X):
        if _is_missing(item):
            positions.append(i)
            reason = _reason(item)
            if reason is not None:
                reasons[i] = reason
    return np.asarray(positions, dtype=np.int64), reasons


def _take(X, positions):
    """The samples of ``X`` at ``positions`` (X as :func:`_from_pandas` leaves it)."""
    import scipy.sparse

    if isinstance(X, np.ndarray) or scipy.sparse.issparse(X):
        return X[positions]
    return [X[i] for i in positions]



def _refuse_amounts(bad):
    """The error naming the amounts ({element: amount}) that are not finite and positive."""
    if bad:
        listed = ", ".join(f"{el}={amount!r}" for el, amount in sorted(bad.items()))
        raise ValueError(f"amounts must be finite and positive, got {listed}.")


def check_amounts(amounts):
    """Element amounts (numbers, e.g. pymatgen's ``get_el_amt_dict()``) must be finite and
    positive: a negative, NaN or infinite amount is not a composition, and a silently dropped
    element would be a wrong answer given as a right one."""
    import math

    _refuse_amounts({el: amount for el, amount in amounts.items() if not (math.isfinite(amount) and amount > 0)})


def parse_composition(composition):
    """A pymatgen ``Composition`` that keeps every element the user gave, or a ValueError naming it.

    pymatgen silently drops amounts below ``Composition.amount_tolerance`` (1e-8), in a formula
    (``"Fe1e-9O"``, ``"Fe0O1"``), a mapping and in the atom fractions (``{"Fe": 1e300, "O": 1}``
    leaves O with 1e-300): each is refused here, naming the element and its amount. Amounts may be
    any real number, numpy scalars included; they must be finite and positive.
    """
    import math
    import re
    from collections.abc import Mapping

    from pymatgen.core import Composition

    tol = Composition.amount_tolerance
    if isinstance(composition, str):
        comp = Composition(composition)
        kept = {getattr(sp, "symbol", str(sp)) for sp in comp}
        if "H" in kept:
            kept |= {"D", "T"}  # pymatgen reads deuterium and tritium as H
        given = set(re.findall(r"[A-Z][a-z]*", composition))
        lost = sorted(given - kept)
        if lost:
            raise ValueError(
                f"formula {composition!r}: {', '.join(lost)} would be dropped (an amount of zero or below "
                f"{tol:g}, which pymatgen ignores); remove the element or give it a larger amount."
            )
    elif isinstance(composition, Composition):
        comp = composition
    elif isinstance(composition, Mapping):
        amounts, bad, small = {}, {}, {}
        for element, amount in composition.items():
            if isinstance(amount, (bool, np.bool_)) or not isinstance(amount, (numbers.Real, np.number)):
                bad[str(element)] = amount
                continue
            value = float(amount)
            if not (math.isfinite(value) and value > 0):
                bad[str(element)] = amount
            elif value < tol:
                small[str(element)] = amount
            amounts[element] = value
        _refuse_amounts(bad)
        if small:
            listed = ", ".join(f"{el}={amount!r}" for el, amount in sorted(small.items()))
            raise ValueError(f"amounts below {tol:g} would be dropped by pymatgen, got {listed}.")
        comp = Composition(amounts)
    else:
        raise TypeError(f"Expected a Composition, a formula or a mapping of amounts, got {type(composition).__name__}.")
    amounts = comp.element_composition.get_el_amt_dict()
    check_amounts(amounts)
    total = float(sum(amounts.values()))  # inf when it overflows (math.fsum raises instead)
    if not math.isfinite(total):
        raise ValueError(f"the amounts' sum overflows ({', '.join(f'{el}={a!r}' for el, a in amounts.items())}).")
    small = [f"{el}={amt!r}" for el, amt in amounts.items() if amt / total < tol]
    if small:
        raise ValueError(
            f"atom fractions below {tol:g} would be dropped by pymatgen: {', '.join(small)} "
            f"of a total {total:g}."
        )
    return comp


class WeightedSet:
    """A material as a set of feature rows, each with a positive weight.

    A ``WeightedSet`` is immutable: ``features`` and ``weights`` are read-only copies made
    and validated at construction, so a set cannot turn invalid (NaN rows, zero weights)
    after it was checked.

    Parameters
    ----------
    features : array-like of shape (n_rows, n_features) or (n_rows,)
        Float feature rows (``n_rows >= 1``, ``n_features >= 1``, finite), or (1-D,
        integer) atomic numbers for the embedding mode.
    weights : array-like of shape (n_rows,), optional
        Positive, finite row weights; default all ones.

    Examples
    --------
    >>> from sklearn_atomsets import WeightedSet
    >>> s = WeightedSet.from_composition("Fe0.01Ni0.99")
    >>> s.features, s.weights.round(2)
    (array([26, 28]), array([0.01, 0.99], dtype=float32))
    >>> WeightedSet([[0.1, 0.2], [0.3, 0.4]]).n_features
    2
    """

    __slots__ = ("_features", "_weights")

    def __init__(self, features, weights=None):
        features = np.asarray(features)
        if features.ndim == 1:
            if features.dtype.kind not in "iu":
                raise ValueError(
                    "1-D features must be integer atomic numbers; give float feature rows as a "
                    f"2-D (n_rows, n_features) array (got dtype {features.dtype})."
                )
            features = features.astype(np.int64)
            if features.size and features.min() < 1:
                raise ValueError(f"Atomic numbers must be >= 1, got {features.min()}.")
        elif features.ndim == 2:
            if features.dtype.kind not in "biuf":
                raise ValueError(f"Feature rows must be numeric, got dtype {features.dtype}.")
            features = features.astype(np.float32)
            if features.shape[1] == 0:
                raise ValueError(f"Feature rows must have at least one feature, got shape {features.shape}.")
            if not np.isfinite(features).all():
                raise ValueError("Feature rows contain NaN or infinite values.")
        else:
            raise ValueError(f"features must be 1-D (atomic numbers) or 2-D (rows), got {features.ndim}-D.")
        if len(features) == 0:
            raise ValueError("A set must have at least one row; this one is empty.")
        if weights is None:
            weights = np.ones(len(features), dtype=np.float32)
        weights = np.array(weights, dtype=np.float32)  # a copy: the caller's array stays writable
        if weights.shape != (len(features),):
            raise ValueError(f"weights must have shape ({len(features)},), got {weights.shape}.")
        if not (np.isfinite(weights).all() and (weights > 0).all()):
            raise ValueError("Weights must be finite and positive.")
        self._set(features, weights)

    def _set(self, features, weights):
        features.flags.writeable = False
        weights.flags.writeable = False
        object.__setattr__(self, "_features", features)
        object.__setattr__(self, "_weights", weights)

    @property
    def features(self):
        """Read-only ``(n_rows, n_features)`` float32 rows or ``(n_rows,)`` atomic numbers."""
        return self._features

    @property
    def weights(self):
        """Read-only ``(n_rows,)`` float32 positive weights."""
        return self._weights

    def __setattr__(self, name, value):
        raise AttributeError(f"WeightedSet is immutable; make a new one instead of setting {name!r}.")

    @classmethod
    def from_composition(cls, composition):
        """Atomic numbers of the elements with their atom fractions as weights.

        Accepts a pymatgen ``Composition`` (oxidation-state decorated or not) or a formula.
        """
        from pymatgen.core import Composition

        if not isinstance(composition, (str, Composition)):
            raise TypeError(f"Expected a Composition or a formula string, got {type(composition).__name__}.")
        comp = parse_composition(composition)
        amounts = comp.element_composition.fractional_composition.get_el_amt_dict()
        if not amounts:
            raise ValueError(f"Composition {composition!r} has no elements.")
        from pymatgen.core import Element

        z = np.array([Element(el).Z for el in amounts], dtype=np.int64)
        order = np.argsort(z)
        return cls(z[order], np.array(list(amounts.values()), dtype=np.float32)[order])

    @property
    def is_atomic_numbers(self):
        return self.features.ndim == 1

    @property
    def n_features(self):
        """Width of a row; 0 for a set of atomic numbers."""
        return 0 if self.is_atomic_numbers else self.features.shape[1]

    def __len__(self):
        return len(self.features)

    def __eq__(self, other):
        if not isinstance(other, WeightedSet):
            return NotImplemented
        return np.array_equal(self.features, other.features) and np.array_equal(self.weights, other.weights)

    __hash__ = None

    def __getstate__(self):
        return (self.features, self.weights)

    def __setstate__(self, state):
        features, weights = state
        self._set(np.array(features), np.array(weights))

    def __repr__(self):
        kind = "atomic numbers" if self.is_atomic_numbers else f"{self.n_features} features"
        return f"WeightedSet({len(self)} rows, {kind})"

    # -- portable forms: lossless, so a featurized column can be saved and reloaded --------
    # float32 values become Python floats (float64, exact) and JSON writes their repr, which
    # reads back to the same float64 and so to the same float32: every form is bit for bit.

    def as_dict(self):
        """The set as a JSON-ready dict that :meth:`from_dict` restores bit for bit.

        The MSONable convention of pymatgen and matminer (``@module``, ``@class``), so
        matminer's ``store_dataframe_as_json`` / ``load_dataframe_from_json`` and monty's
        ``MontyEncoder`` / ``MontyDecoder`` save and restore a column of sets.

        Examples
        --------
        >>> from sklearn_atomsets import WeightedSet
        >>> s = WeightedSet([[0.1, 0.2]], [0.5])
        >>> d = s.as_dict()
        >>> d["@class"], WeightedSet.from_dict(d) == s
        ('WeightedSet', True)
        """
        return {
            "@module": "sklearn_atomsets",
            "@class": "WeightedSet",
            "features": self.features.tolist(),
            "weights": self.weights.tolist(),
        }

    @classmethod
    def from_dict(cls, d):
        """The set that :meth:`as_dict` described (``@`` keys are optional)."""
        if not isinstance(d, dict) or "features" not in d or "weights" not in d:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"WeightedSet.from_dict needs a dict with 'features' and 'weights', got {got}.")
        try:
            features = np.asarray(d["features"])
        except ValueError as exc:  # ragged rows
            raise ValueError(f"WeightedSet.from_dict: 'features' is not a table of rows ({exc}).") from None
        return cls(features, d["weights"])

    def to_json(self):
        """The set as JSON text (:meth:`as_dict`), which :meth:`from_str` reads back."""
        return json.dumps(self.as_dict(), separators=(",", ":"))

    def __str__(self):
        # DataFrame.to_csv, Series.astype(str) and other text exports write str(): the summary
        # then the lossless JSON, so a text export holds the data, never a summary that passes
        # for it, and a printed frame still starts each cell with the summary; repr() stays
        # the short summary alone (lists, the REPL, error messages).
        return f"{self!r} {self.to_json()}"

    @classmethod
    def from_str(cls, text):
        """The set whose ``str()`` (or :meth:`to_json`) is ``text``; an empty cell gives NaN.

        Made for ``pandas.read_csv(path, converters={column: WeightedSet.from_str})``:
        ``DataFrame.to_csv`` writes a set as its ``str()`` (its summary, then its JSON) and a
        row without a set (NaN) as an empty cell, which comes back as NaN.

        Examples
        --------
        >>> from sklearn_atomsets import WeightedSet
        >>> s = WeightedSet([[0.1, 0.2]], [0.5])
        >>> str(s)[:45]
        'WeightedSet(1 rows, 2 features) {"@module":"s'
        >>> WeightedSet.from_str(str(s)) == s
        True
        """
        if isinstance(text, float) and np.isnan(text) or (isinstance(text, str) and not text.strip()):
            return float("nan")
        if not isinstance(text, str):
            raise TypeError(f"WeightedSet.from_str needs text, got {type(text).__name__}.")
        body = text[text.find("{"):] if text.startswith("WeightedSet(") and "{" in text else text
        try:
            d = json.loads(body)
        except ValueError:
            raise ValueError(
                f"Not the text of a WeightedSet: {text!r:.80}. (A summary alone, such as "
                "'WeightedSet(22 rows, 32 features)', holds no data and cannot be read back.)"
            ) from None
        return cls.from_dict(d)


#: Suffixes of the two list columns that hold a column of sets in a parquet-friendly frame.
_FEATURES_SUFFIX, _WEIGHTS_SUFFIX = ".features", ".weights"


def _is_set_column(column):
    values = [v for v in column if not _is_missing(v)]
    return column.dtype == object and bool(values) and all(isinstance(v, WeightedSet) for v in values)


def sets_to_list_columns(frame):
    """A copy of ``frame`` with each column of :class:`WeightedSet` as two list columns.

    Column ``c`` becomes ``c.features`` (per row: the list of its float32 feature rows, or
    its atomic numbers) and ``c.weights`` (its float32 weights), in ``c``'s place; a row
    without a set (NaN, a :class:`FailedSet`) is null in both. Arrow stores these as
    ``list<list<float>>`` and ``list<float>``, so ``to_parquet`` (and feather) save the frame;
    :func:`sets_from_list_columns` restores the sets bit for bit. Other columns are kept
    as they are.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_atomsets import WeightedSet, sets_from_list_columns, sets_to_list_columns
    >>> frame = pd.DataFrame({"V1 set": [WeightedSet([[0.1, 0.2], [0.3, 0.4]]), float("nan")]})
    >>> flat = sets_to_list_columns(frame)
    >>> list(flat.columns)
    ['V1 set.features', 'V1 set.weights']
    >>> sets_from_list_columns(flat)["V1 set"].iloc[0] == frame["V1 set"].iloc[0]
    True
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"sets_to_list_columns needs a pandas DataFrame, got {type(frame).__name__}.")
    if frame.columns.duplicated().any():
        raise ValueError(f"sets_to_list_columns: duplicate column labels {sorted(map(str, frame.columns[frame.columns.duplicated()]))}.")
    columns = {}
    for name in frame.columns:
        column = frame[name]
        if not _is_set_column(column):
            if column.dtype == object and any(isinstance(v, WeightedSet) for v in column):
                kinds = sorted({type(v).__name__ for v in column if not isinstance(v, WeightedSet) and not _is_missing(v)})
                raise TypeError(f"Column {name!r} mixes WeightedSet with {kinds}; a column of sets holds sets and NaN only.")
            columns[name] = column
            continue
        if not isinstance(name, str):
            raise TypeError(f"Set columns need a string label to name their list columns, got {name!r}.")
        taken = [n for n in (name + _FEATURES_SUFFIX, name + _WEIGHTS_SUFFIX) if n in frame.columns]
        if taken:
            raise ValueError(f"Cannot split the set column {name!r}: the frame already has {taken}.")
        features, weights = [], []
        for value in column:
            if isinstance(value, WeightedSet):
                features.append(value.features if value.is_atomic_numbers else list(value.features))
                weights.append(value.weights)
            else:
                features.append(None)
                weights.append(None)
        columns[name + _FEATURES_SUFFIX] = pd.Series(features, index=frame.index, dtype=object)
        columns[name + _WEIGHTS_SUFFIX] = pd.Series(weights, index=frame.index, dtype=object)
    return pd.DataFrame(columns, index=frame.index)


def sets_from_list_columns(frame):
    """The inverse of :func:`sets_to_list_columns`: ``c.features`` and ``c.weights`` become
    the column ``c`` of :class:`WeightedSet` again (NaN where they are null), in place.

    Works on the frame as ``read_parquet`` returns it (cells as NumPy arrays) and on the
    one :func:`sets_to_list_columns` returned. The sets are equal bit for bit to those saved.
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"sets_from_list_columns needs a pandas DataFrame, got {type(frame).__name__}.")
    if frame.columns.duplicated().any():
        raise ValueError(f"sets_from_list_columns: duplicate column labels {sorted(map(str, frame.columns[frame.columns.duplicated()]))}.")
    names = list(frame.columns)
    columns = {}
    for name in names:
        if isinstance(name, str) and name.endswith(_WEIGHTS_SUFFIX):
            base = name[: -len(_WEIGHTS_SUFFIX)]
            if base + _FEATURES_SUFFIX not in names:
                raise ValueError(f"Column {name!r} has no {base + _FEATURES_SUFFIX!r} column to make sets with.")
            continue  # read with its features column
        if not (isinstance(name, str) and name.endswith(_FEATURES_SUFFIX)):
            columns[name] = frame[name]
            continue
        base = name[: -len(_FEATURES_SUFFIX)]
        if base + _WEIGHTS_SUFFIX not in names:
            raise ValueError(f"Column {name!r} has no {base + _WEIGHTS_SUFFIX!r} column to make sets with.")
        if base in names:
            raise ValueError(f"Cannot restore the sets of {name!r}: the frame already has a column {base!r}.")
        sets = []
        for i, (features, weights) in enumerate(zip(frame[name], frame[base + _WEIGHTS_SUFFIX])):
            if _is_missing_cell(features) or _is_missing_cell(weights):
                if not (_is_missing_cell(features) and _is_missing_cell(weights)):
                    raise ValueError(f"Row {i} of {base!r}: one of its features and weights is null, not both.")
                sets.append(float("nan"))
                continue
            rows = list(features)
            try:
                if rows and isinstance(rows[0], (np.ndarray, list, tuple)):
                    array = np.stack([np.asarray(row) for row in rows])
                else:
                    array = np.asarray(rows)
                sets.append(WeightedSet(array, np.asarray(weights)))
            except ValueError as exc:
                raise ValueError(f"Row {i} of {base!r} is not a valid set: {exc}") from None
        columns[base] = pd.Series(sets, index=frame.index, dtype=object)
    return pd.DataFrame(columns, index=frame.index)


def _is_missing_cell(value):
    return value is None or (np.ndim(value) == 0 and _is_missing(value))


def _from_pandas(X):
    """Unwrap pandas containers, and the one-element rows that a matminer featurizer's
    ``transform`` returns for a set-valued feature."""
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        X = X.iloc[:, 0] if X.shape[1] == 1 and X.dtypes.iloc[0] == object else X.to_numpy()
    if isinstance(X, pd.Series):
        X = X.to_numpy()
    if (
        isinstance(X, list)
        and all(isinstance(row, (list, tuple)) and len(row) == 1 for row in X)
        and any(isinstance(row[0], WeightedSet) for row in X)
    ):
        # every row is checked, not only the first: its row may be a failure (NaN)
        X = [row[0] for row in X]
    return X


def _numeric_rows(X):
    rows = X.astype(np.float32)
    if not np.isfinite(rows).all():
        bad = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
        raise ValueError(f"X contains NaN or infinite values (first in sample {bad}).")
    if len(rows) == 0 or rows.shape[1] == 0:
        raise ValueError(f"X is empty: shape {X.shape}.")
    return rows


def _describe(item):
    return "None" if item is None else type(item).__name__


def as_sets(X):
    """Validate ``X`` and return it as a list of :class:`WeightedSet`.

    Accepted: a list / tuple / 1-D object array / pandas Series of ``WeightedSet``; a
    one-column DataFrame of them; a sequence of 2-D arrays (rows, uniform weights) or of
    1-D integer arrays (atomic numbers); or a 2-D numeric array ``(n_samples, n_features)``,
    read as one single-row set per sample (so a fixed-length vector such as the readout f
    works, and so do scikit-learn's estimator checks).
    """
    X = _from_pandas(X)
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim != 2:
            raise ValueError(
                f"A numeric X must be 2-D (n_samples, n_features), got shape {X.shape}; give sets "
                "as a sequence of WeightedSet."
            )
        if X.dtype.kind not in "biuf":
            raise ValueError(f"X must be numeric or a sequence of sets, got dtype {X.dtype}.")
        return [WeightedSet(row[None, :]) for row in _numeric_rows(X)]
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(f"An object X must be 1-D (one set per sample), got shape {X.shape}.")
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__"):
        raise TypeError(f"X must be a sequence of sets or a 2-D array, got {type(X).__name__}.")
    sets = []
    for i, item in enumerate(X):
        if isinstance(item, WeightedSet):
            sets.append(item)
            continue
        if item is None or (isinstance(item, numbers.Real) and np.isnan(item)):
            if isinstance(item, FailedSet):
                raise ValueError(
                    f"Sample {i} of X has no set: the featurizer could not featurize it ({item.reason}). "
                    "Drop it or fix it, or pass handle_missing='ignore' to the estimator."
                )
            raise ValueError(
                f"Sample {i} has no set ({_describe(item) if item is None else 'NaN'}): a row the "
                "featurizer could not handle? Drop it or fix it before fitting, or pass "
                "handle_missing='ignore' to the estimator."
            )
        try:
            sets.append(WeightedSet(np.asarray(item)))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"Sample {i} is not a valid set ({_describe(item)}): {exc}") from None
    if not sets:
        raise ValueError("X holds no samples.")
    kinds = {s.is_atomic_numbers for s in sets}
    if len(kinds) > 1:
        raise ValueError("X mixes sets of atomic numbers with sets of feature rows.")
    widths = {s.n_features for s in sets}
    if len(widths) > 1:
        raise ValueError(f"Feature rows have different widths across samples: {sorted(widths)}.")
    return sets


@dataclass
class PackedSets:
    """Many sets concatenated once: rows ``offsets[i]:offsets[i+1]`` belong to set i."""

    features: np.ndarray
    weights: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self):
        return np.diff(self.offsets)

    @property
    def n_sets(self):
        return len(self.offsets) - 1

    @property
    def n_features(self):
        return 0 if self.features.ndim == 1 else self.features.shape[1]

    def rows_of(self, sets):
        """Row indices and set-within-batch index for the sets ``sets`` (no Python loop)."""
        lengths = self.offsets[sets + 1] - self.offsets[sets]
        ends = np.cumsum(lengths)
        rows = np.arange(ends[-1] if len(ends) else 0) + np.repeat(self.offsets[sets] - (ends - lengths), lengths)
        return rows, np.repeat(np.arange(len(sets)), lengths)


def pack_sets(sets):
    """Concatenate a list of :class:`WeightedSet` into one :class:`PackedSets`.

    The packed arrays are checked again (finite rows, positive weights), so that no invalid
    set reaches training whatever happened to it after construction.
    """
    lengths = np.fromiter((len(s) for s in sets), dtype=np.int64, count=len(sets))
    packed = PackedSets(
        features=np.concatenate([s.features for s in sets]),
        weights=np.concatenate([s.weights for s in sets]),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
    )
    bad_rows = ~(np.isfinite(packed.weights) & (packed.weights > 0))
    if packed.features.ndim == 2:
        bad_rows |= ~np.isfinite(packed.features).all(axis=1)
    if bad_rows.any():
        first = int(np.searchsorted(packed.offsets, np.flatnonzero(bad_rows)[0], side="right") - 1)
        raise ValueError(f"Sample {first} holds NaN/infinite features or a weight that is not finite and positive.")
    return packed


def _is_table(X):
    """Plain arrays and nested lists of numbers are tables (one row per sample); a
    sequence whose items are WeightedSet or NumPy arrays is a sequence of sets."""
    import scipy.sparse

    if scipy.sparse.issparse(X):
        return True
    if isinstance(X, np.ndarray):
        return X.dtype != object or (X.ndim == 2 and X.shape[1] != 1)
    if isinstance(X, (list, tuple)):
        # judged on the first present sample: a failed row (NaN) comes as a number in a
        # sequence of sets too
        first = next((item for item in X if not _is_missing(item)), None)
        return first is not None and isinstance(first, (list, tuple, numbers.Number))
    return hasattr(X, "__array__")


def as_packed_sets(X):
    """Validate ``X`` (see :func:`as_sets`) and pack it. A table (2-D array, nested lists
    of numbers) is validated by scikit-learn's ``check_array`` and packed directly, one
    row per set, without making a ``WeightedSet`` per sample."""
    from sklearn.utils import check_array

    X = _from_pandas(X)
    if _is_table(X):
        rows = check_array(X, dtype=np.float32, accept_sparse=False, ensure_2d=True)
        return PackedSets(rows, np.ones(len(rows), np.float32), np.arange(len(rows) + 1, dtype=np.int64))
    return pack_sets(as_sets(X))



#: Rows of one set merge when every feature differs by at most ``ROW_RTOL`` times the largest
#: absolute feature value of that set, never of the whole data (about 12 float32 ulps of it).
#: Measured on the V1 sets
#: of the MatBench dielectric crystals: 93 % of symmetry-equivalent site pairs (spglib,
#: symprec 1e-3; first 400 crystals) agree within 1e-6 and 96 % within 1e-5 (float32 sums in
#: another order); the rest differ by up to 2e-3 (crystals symmetric only approximately) and
#: stay apart. Over all 4764 crystals (largest |value| 7.65: tolerance 1.15e-5) the 80,487
#: rows become 32,629; exact equality would keep 79,983.
ROW_RTOL = 1.5e-6

#: Bound on the (groups, rows, rows) distance block computed at once by ``merge_equal_rows``.
_PAIR_BLOCK = 1 << 22
#: Groups larger than this are split by peeling off the rows close to their first row.
_PAIRWISE_MAX = 64


def _first_close(rows, offsets, tolerance):
    """For each row, a row of its group (``offsets``) within ``tolerance`` (the largest
    difference over features), as an index into ``rows``: the first such row for small
    groups; in large groups, the first row not yet taken. ``tolerance``: one per group."""
    lengths = np.diff(offsets)
    tolerance = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), lengths.shape)
    leader = np.arange(len(rows))
    for n in np.unique(lengths[lengths > 1]):
        starts = offsets[:-1][lengths == n]
        tols = tolerance[lengths == n]
        if n > _PAIRWISE_MAX:  # few large groups (one element over a data set, say)
            for start, tol in zip(starts, tols):
                left = np.arange(start, start + n)
                for _ in range(_PAIRWISE_MAX):  # the rest of a run this mixed stays unmerged
                    close = np.abs(rows[left] - rows[left[0]]).max(axis=1) <= tol
                    leader[left[close]] = left[0]
                    left = left[~close]
                    if not len(left):
                        break
            continue
        per_block = max(1, _PAIR_BLOCK // (n * n))
        for chunk in range(0, len(starts), per_block):
            block = starts[chunk : chunk + per_block, None] + np.arange(n)
            group = rows[block]  # (groups, n, d)
            distance = np.zeros((len(block), n, n), dtype=group.dtype)
            for k in range(group.shape[2]):
                column = group[:, :, k]
                np.maximum(distance, np.abs(column[:, :, None] - column[:, None, :]), out=distance)
            leader[block] = block[:, :1] + (distance <= tols[chunk : chunk + per_block, None, None]).argmax(axis=2)
    return leader


def _leaders(features, offsets, tolerance):
    """For each row, the row of its set it merges into: a row within ``tolerance`` (a number,
    or one per set).

    Rows are projected on a random direction and sorted within their set; rows within the
    tolerance project within ``tolerance * sum|direction|`` (plus rounding) of each other,
    so they lie in one run of the sorted projections whose gaps are all that small. Only
    rows of a run are compared: distinct rows rarely share a run, so the cost stays near
    that of one sort. Everything is decided per set: no set's rows depend on another set.
    """
    rows = features[:, None] if features.ndim == 1 else features
    n_sets = len(offsets) - 1
    segment = np.repeat(np.arange(n_sets), np.diff(offsets))
    tolerance = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), (n_sets,))
    direction = np.random.default_rng(20211130).uniform(0.5, 1.0, size=rows.shape[1])
    direction *= np.where(np.arange(rows.shape[1]) % 2, -1.0, 1.0)
    projection = (rows @ direction.astype(np.float32) if rows.dtype == np.float32 else rows @ direction).astype(np.float64)
    biggest = np.zeros(n_sets)
    if len(projection):
        np.maximum.at(biggest, segment, np.abs(projection))
    # slack for rounding in the float32 dot products, per set; a close pair that rounding
    # still puts apart just stays unmerged, which is exact
    bound = tolerance * np.abs(direction).sum() * (1 + 1e-6) + np.where(tolerance > 0, 1e-6, 1e-7) * biggest
    order = np.lexsort((projection, segment))  # sets stay in order; rows sorted within each set
    new_run = np.ones(len(order), dtype=bool)
    new_run[1:] = (segment[order[1:]] != segment[order[:-1]]) | (
        projection[order[1:]] - projection[order[:-1]] > bound[segment[order[1:]]])
    run = np.cumsum(new_run) - 1
    order = order[np.argsort(run * len(order) + order, kind="stable")]  # each run in row order
    run_offsets = np.concatenate([np.flatnonzero(new_run), [len(order)]])
    leader = np.empty(len(order), dtype=np.int64)
    leader[order] = order[_first_close(rows[order], run_offsets, tolerance[segment[order[run_offsets[:-1]]]])]
    return leader


def merge_equal_rows(packed, rtol=ROW_RTOL):
    """Merge the rows of each set that are equal (within a tolerance), summing their weights.

    Both AtomSets readouts are unchanged by this: the weighted mean (eq. 4) and the weighted
    set2set attention ``w_i exp(e_i)`` (eqs. 5-9) see one row of weight ``w_i + w_j``
    exactly as two equal rows. A crystal's symmetry-equivalent sites become one row
    weighted by the orbit size, and a structure's V0 rows one row per element.

    A float row merges into an earlier row of its set (the first, for sets of a few dozen
    equal rows) whose every feature is within ``rtol * max|features of the set|`` (see ``ROW_RTOL``);
    atomic numbers only when equal. The kept row is one of the merged rows, so no feature
    moves by more than the tolerance.

    Returns a new :class:`PackedSets`: the same sets, in the same order, with fewer rows.

    Examples
    --------
    >>> from sklearn_atomsets import WeightedSet
    >>> from sklearn_atomsets._sets import merge_equal_rows, pack_sets
    >>> packed = pack_sets([WeightedSet([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]]), WeightedSet([[1.0, 2.0]])])
    >>> merged = merge_equal_rows(packed)
    >>> merged.features.tolist(), merged.weights.tolist(), merged.offsets.tolist()
    ([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]], [2.0, 1.0, 1.0], [0, 2, 3])
    """
    features = packed.features
    tolerance = np.zeros(packed.n_sets)
    if features.ndim == 2 and features.size:  # per set: no set's merging depends on another set
        row_max = np.abs(features).max(axis=1).astype(np.float64)
        nonempty = packed.lengths > 0
        tolerance[nonempty] = rtol * np.maximum.reduceat(row_max, packed.offsets[:-1][nonempty])
    leader = _leaders(features, packed.offsets, tolerance)
    kept, group = np.unique(leader, return_inverse=True)  # leaders are sorted: sets stay in order
    weights = np.bincount(group.reshape(-1), weights=packed.weights, minlength=len(kept)).astype(np.float32)
    counts = np.bincount(np.repeat(np.arange(packed.n_sets), packed.lengths)[kept], minlength=packed.n_sets)
    return PackedSets(features[kept], weights, np.concatenate([[0], np.cumsum(counts)]))


def row_table(features):
    """The distinct rows of ``features`` (equal values) and the index of each row into them.

    ``table[index]`` equals ``features``. Across a whole dataset V0 has at most one row per
    element, so the per-row network need only run on the table.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_atomsets._sets import row_table
    >>> table, index = row_table(np.array([8, 26, 8, 8, 1]))
    >>> table.tolist(), index.tolist()
    ([8, 26, 1], [0, 1, 0, 0, 2])
    """
    leader = _leaders(features, np.array([0, len(features)]), 0)
    first = np.unique(leader)
    return features[first], np.searchsorted(first, leader)
