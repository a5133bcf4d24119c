"""Feature selection by normalised mutual information with redundancy (MODNet's idea).

MODNet (De Breuck et al., npj Comput. Mater. 7, 83 (2021)) feeds hundreds of matminer
descriptors to small networks after choosing a few by relevance to the target and
redundancy with what is already chosen, both measured by normalised mutual information
(NMI). :class:`MutualInfoSelector` does the same as a scikit-learn transformer, fitted on the
training rows alone (in a ``Pipeline``, on each fold's training part), so that the number of
features can be chosen by ``GridSearchCV`` on inner validation.

NMI here is that of the features and the target discretised into equal-count (quantile) bins,
``I(a; b) / sqrt(H(a) H(b))`` (:func:`sklearn.metrics.normalized_mutual_info_score`'s
geometric normalisation, computed for all candidates at once). Discrete NMI is exact and cheap
for any number of rows; MODNet estimates it with k-nearest-neighbour mutual information
instead. A class label is its own discretisation; a missing value is a bin of its own.

Greedy selection (mRMR with the maximum redundancy): the first feature is the most relevant;
each next one maximises ``NMI(f, y) - max_{s chosen} NMI(f, s)``.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.feature_selection import SelectorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["MutualInfoSelector"]


def _bins(X, n_bins):
    """Each column of ``X`` as integer bin labels 0..n_bins (quantile edges; NaN: label n_bins)."""
    X = np.asarray(X, dtype=np.float64)
    labels = np.empty(X.shape, dtype=np.int64)
    quantiles = np.linspace(0, 1, n_bins + 1)[1:-1]
    for j in range(X.shape[1]):
        column = X[:, j]
        finite = ~np.isnan(column)
        edges = np.unique(np.quantile(column[finite], quantiles)) if finite.any() else np.zeros(0)
        # searchsorted right: equal values share a bin, and a constant column is one bin
        labels[:, j] = np.where(finite, np.searchsorted(edges, np.where(finite, column, 0.0), side="right"), n_bins)
    return labels


def _entropy(counts, n):
    p = counts / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)


class _NMI:
    """NMI of every column of ``labels`` (bin labels < n_labels) with one vector at a time:
    ``I / sqrt(H_a H_b)``, 0 where either is constant. The columns' offsets into one joint
    histogram and their entropies are computed once: each call is one ``bincount``."""

    def __init__(self, labels, n_labels):
        self.n, self.d = labels.shape
        self.labels, self.n_labels = labels, n_labels
        self.h_a = _entropy(np.stack([np.bincount(c, minlength=n_labels) for c in labels.T]).astype(np.float64), self.n)

    def of(self, other, n_other):
        d, L = self.d, self.n_labels
        # joint histogram of (column, its label, other's label) for all columns at once
        index = (np.arange(d, dtype=np.int64) * (L * n_other) + self.labels * n_other + other[:, None]).ravel()
        joint = np.bincount(index, minlength=d * L * n_other).reshape(d, L * n_other).astype(np.float64)
        h_b = _entropy(np.bincount(other, minlength=n_other)[None].astype(np.float64), self.n)
        mutual = self.h_a + h_b - _entropy(joint, self.n)
        norm = np.sqrt(self.h_a * h_b)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(norm > 0, np.clip(mutual / norm, 0.0, 1.0), 0.0)


class MutualInfoSelector(SelectorMixin, BaseEstimator):
    """Keep the ``n_features`` descriptors most relevant to the target and least redundant
    with each other (normalised mutual information, MODNet's criterion; see the module notes).

    Parameters
    ----------
    n_features : int, default=64
        How many features to keep (all, if fewer are given). Choose it on inner validation,
        e.g. ``GridSearchCV`` over ``mutualinfoselector__n_features``.
    n_bins : int, default=16
        Equal-count bins each feature (and a continuous target) is discretised into.
    target : {"auto", "continuous", "classes"}, default="auto"
        How ``y`` is read: ``"auto"`` bins a continuous target and takes any other as class
        labels (sklearn's ``type_of_target``).

    Attributes
    ----------
    ranking_ : ndarray of shape (n_features,)
        Indices of the kept features, in the order they were chosen.
    relevance_ : ndarray, one value per input feature
        NMI of each input feature with the target.
    scores_ : ndarray of shape (n_features,)
        Relevance minus the largest redundancy of each kept feature when it was chosen.
    n_features_in_ : int
        Number of input features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Their names, when ``X`` is a DataFrame with string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_atomsets import MutualInfoSelector
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 1))
    >>> X = np.hstack([x, x + 1e-3 * rng.normal(size=(500, 1)), rng.normal(size=(500, 3))])
    >>> y = x[:, 0] ** 2 + 0.3 * X[:, 2]
    >>> selector = MutualInfoSelector(n_features=2).fit(X, y)
    >>> sorted(selector.get_support(indices=True).tolist())  # x, not its copy, and the next signal
    [0, 2]
    """

    _parameter_constraints = {
        "n_features": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_bins": [Interval(numbers.Integral, 2, None, closed="left")],
        "target": [StrOptions({"auto", "continuous", "classes"})],
    }

    def __init__(self, n_features=64, *, n_bins=16, target="auto"):
        self.n_features = n_features
        self.n_bins = n_bins
        self.target = target

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Choose the features on ``X, y`` (the training rows only)."""
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64, y_numeric=False)
        kind = self.target
        if kind == "auto":
            kind = "continuous" if type_of_target(y) in ("continuous", "continuous-multioutput") else "classes"
        if kind == "continuous":
            y = np.asarray(y, dtype=np.float64)
            if y.ndim != 1 or np.isnan(y).any():
                raise ValueError("MutualInfoSelector needs one finite target value per row.")
            target = _bins(y[:, None], self.n_bins)[:, 0]
        else:
            target = np.unique(np.asarray(y), return_inverse=True)[1].ravel()
        n_target = int(target.max()) + 1
        n_labels = self.n_bins + 1
        nmi = _NMI(_bins(X, self.n_bins), n_labels)
        self.relevance_ = nmi.of(target, n_target)
        k = min(self.n_features, X.shape[1])
        chosen, scores = [], []
        redundancy = np.zeros(X.shape[1])
        available = np.ones(X.shape[1], dtype=bool)
        for _ in range(k):
            score = np.where(available, self.relevance_ - redundancy, -np.inf)
            best = int(np.argmax(score))  # ties: the first column
            chosen.append(best)
            scores.append(float(score[best]))
            available[best] = False
            redundancy = np.maximum(redundancy, nmi.of(nmi.labels[:, best], n_labels))
        self.ranking_ = np.asarray(chosen, dtype=np.int64)
        self.scores_ = np.asarray(scores)
        return self

    def _get_support_mask(self):
        check_is_fitted(self, "ranking_")
        mask = np.zeros(self.n_features_in_, dtype=bool)
        mask[self.ranking_] = True
        return mask

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.required = True
        return tags
