"""An AutoMatminer-style baseline built from today's libraries.

automatminer itself pins scikit-learn 0.22 and matminer 0.6 and no longer installs; its
"express" recipe is rebuilt here as one scikit-learn ``Pipeline``:

    matminer featurizers -> cleaning (drop mostly-missing columns, impute, drop constants)
    -> feature reduction (drop one of each highly correlated pair, keep the features a
    tree ensemble finds important) -> random forest

Any matminer ``BaseFeaturizer`` -- including this package's MEGNet featurizers -- can be
added to the featurizer list, which is how the transfer-learned features are compared with
the hand-made ones.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from pymatgen.core import Composition, Structure
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.feature_selection import SelectFromModel, VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "CorrelationFilter",
    "MatminerFeatures",
    "MissingColumnFilter",
    "automatminer_style_pipeline",
    "default_matminer_featurizers",
]


def default_matminer_featurizers(input_kind):
    """Matminer's standard featurizer sets (AutoMatminer's fast ones).

    Compositions: Magpie element statistics, stoichiometry, valence orbitals, ion property
    and band centre. Structures add density, symmetry and site-statistics (AGNI) features;
    slower Voronoi/CrystalNN site featurizers are left out to keep MatBench runs within a
    2-core machine's budget.
    """
    from matminer.featurizers.composition import BandCenter, ElementProperty, IonProperty, Stoichiometry, ValenceOrbital

    featurizers = [
        ElementProperty.from_preset("magpie"),
        Stoichiometry(),
        ValenceOrbital(),
        IonProperty(fast=True),
        BandCenter(),
    ]
    if input_kind == "structure":
        from matminer.featurizers.site import AGNIFingerprints
        from matminer.featurizers.structure import DensityFeatures, GlobalSymmetryFeatures, SiteStatsFingerprint

        featurizers += [
            DensityFeatures(),
            GlobalSymmetryFeatures(["spacegroup_num", "crystal_system_int", "is_centrosymmetric", "n_symmetry_ops"]),
            SiteStatsFingerprint(AGNIFingerprints(directions=[None]), stats=("mean", "std_dev", "minimum", "maximum")),
        ]
    elif input_kind != "composition":
        raise ValueError(f"input_kind must be 'composition' or 'structure', got {input_kind!r}.")
    return featurizers


def _is_composition_featurizer(featurizer):
    return type(featurizer).__module__.startswith("matminer.featurizers.composition")


def _as_composition(item):
    if isinstance(item, Structure):
        return item.composition
    if isinstance(item, str):
        return Composition(item)
    return item


class MatminerFeatures(TransformerMixin, BaseEstimator):
    """Run matminer featurizers on compositions or structures into one numeric table.

    Composition featurizers receive a ``Composition`` made from whatever the input is
    (formula string, ``Composition`` or ``Structure``); the others receive the input as is.
    Rows that a featurizer cannot handle get NaN (matminer's ``ignore_errors``), which the
    cleaning steps of the pipeline then deal with.

    Parameters
    ----------
    featurizers : list of matminer BaseFeaturizer, optional
        Default: :func:`default_matminer_featurizers` for ``input_kind``.
    input_kind : {"composition", "structure"}, default="composition"
    """

    def __init__(self, featurizers=None, input_kind="composition"):
        self.featurizers = featurizers
        self.input_kind = input_kind

    def _featurizers(self):
        if self.featurizers is None:
            return default_matminer_featurizers(self.input_kind)
        return list(self.featurizers)

    def fit(self, X, y=None):
        items = list(np.asarray(X, dtype=object).ravel()) if not isinstance(X, list) else X
        self.featurizers_ = [clone(f) if hasattr(f, "get_params") else f for f in self._featurizers()]
        for f in self.featurizers_:
            f.fit(self._inputs(f, items))
        self.feature_names_out_ = np.array([label for f in self.featurizers_ for label in f.feature_labels()], dtype=object)
        self.n_features_in_ = 1
        return self

    def _inputs(self, featurizer, items):
        return [_as_composition(x) for x in items] if _is_composition_featurizer(featurizer) else items

    def transform(self, X):
        check_is_fitted(self, "featurizers_")
        items = list(np.asarray(X, dtype=object).ravel()) if not isinstance(X, list) else X
        blocks = []
        for f in self.featurizers_:
            f.set_n_jobs(1)
            with warnings.catch_warnings():
                # only the NumPy noise of statistics over a failed row's empty values; every
                # other warning (a featurizer's own, a deprecation) reaches the user
                warnings.filterwarnings("ignore", message="(Mean of empty slice|invalid value encountered)",
                                        category=RuntimeWarning)
                rows = f.featurize_many(self._inputs(f, items), ignore_errors=True, pbar=False)
            blocks.append(_numeric_block(f, rows, len(items)))
        return np.hstack(blocks)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_


def _numeric_block(featurizer, rows, n_items):
    """The featurizer's rows as a float table, or an error naming a featurizer whose
    features are not numbers (a set-valued one, say)."""
    try:
        return np.asarray(rows, dtype=float).reshape(n_items, -1)
    except (TypeError, ValueError):
        value = next(v for row in rows for v in row if not isinstance(v, (numbers.Real, np.number)))
        raise TypeError(
            f"{type(featurizer).__name__} gives {type(value).__name__} features, not numbers: this pipeline "
            "needs fixed-length numeric features. For sets (WeightedSet) use an AtomSets estimator; here, "
            "their fixed-length statistics (StructureFeaturizer, CompositionFeaturizer)."
        ) from None


class MissingColumnFilter(TransformerMixin, BaseEstimator):
    """Drop features missing in more than ``max_missing`` of the training rows."""

    def __init__(self, max_missing=0.05):
        self.max_missing = max_missing

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        self.keep_ = np.isnan(X).mean(axis=0) <= self.max_missing
        if not self.keep_.any():
            raise ValueError("Every feature is missing in more than max_missing of the rows.")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "keep_")
        return np.asarray(X, dtype=float)[:, self.keep_]


class CorrelationFilter(TransformerMixin, BaseEstimator):
    """Keep one feature of each group whose absolute Pearson correlation exceeds ``threshold``."""

    def __init__(self, threshold=0.95):
        self.threshold = threshold

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.abs(np.corrcoef(X, rowvar=False))
        corr = np.nan_to_num(np.atleast_2d(corr))
        keep = np.ones(X.shape[1], dtype=bool)
        for j in range(X.shape[1]):
            if keep[j]:
                dup = corr[j] > self.threshold
                dup[: j + 1] = False
                keep &= ~dup
        self.keep_ = keep
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "keep_")
        return np.asarray(X, dtype=float)[:, self.keep_]


def automatminer_style_pipeline(task_kind, input_kind, extra_featurizers=(), n_estimators=500,
                                random_state=0, include_default=True, n_jobs=None):
    """The baseline ``Pipeline``: featurize -> clean -> reduce -> random forest.

    AutoMatminer's "express" recipe rebuilt with today's matminer and scikit-learn: matminer's
    standard featurizer sets (:func:`default_matminer_featurizers`), then dropping mostly
    missing columns, median imputation, dropping constant and highly correlated features,
    keeping those an extra-trees ensemble finds important, and a random forest.

    Parameters
    ----------
    task_kind : {"regression", "classification"}
    input_kind : {"composition", "structure"}
    extra_featurizers : list of matminer featurizers
        Added after matminer's standard sets (e.g. this package's
        :class:`CompositionFeaturizer` or :class:`StructureFeaturizer`). They must give
        numbers: a set-valued featurizer (``SiteSetFeaturizer``...) is refused at ``fit``.
    n_estimators : int, default=500
        Trees of the final random forest.
    random_state : int, default=0
    include_default : bool, default=True
        ``False`` keeps only ``extra_featurizers``.
    n_jobs : int or None, default=None
        Processes of the feature selector and of the forest (scikit-learn's meaning: None is
        1 unless in a ``joblib.parallel_backend`` context; -1 all CPUs).

    Returns
    -------
    sklearn.pipeline.Pipeline

    See Also
    --------
    load_matbench_task : MatBench data with the official folds, for the comparison.

    Examples
    --------
    The baseline against AtomSets-V0 on the first fold of MatBench steels, kept small here
    (100 training and 50 test alloys, a few trees and epochs; the benchmarks use all):

    >>> from sklearn.metrics import mean_absolute_error
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_atomsets import (AtomSetsRegressor, ElementSetFeaturizer,
    ...                               automatminer_style_pipeline, load_matbench_task)
    >>> task = load_matbench_task("matbench_steels", download=False)
    >>> X_train, y_train, X_test, y_test = task.split(0)
    >>> X_train, y_train, X_test, y_test = X_train[:100], y_train[:100], X_test[:50], y_test[:50]
    >>> baseline = automatminer_style_pipeline("regression", "composition", n_estimators=20)
    >>> atomsets = make_pipeline(ElementSetFeaturizer(), AtomSetsRegressor(max_epochs=20, random_state=0))
    >>> for model in (baseline, atomsets):  # doctest: +ELLIPSIS
    ...     error = mean_absolute_error(y_test, model.fit(X_train, y_train).predict(X_test))
    ...     print(f"{type(model[-1]).__name__}: {error:.0f} MPa")
    RandomForestRegressor: ... MPa
    AtomSetsRegressor: ... MPa
    """
    featurizers = (default_matminer_featurizers(input_kind) if include_default else []) + list(extra_featurizers)
    if task_kind == "regression":
        selector, model = ExtraTreesRegressor, RandomForestRegressor
    elif task_kind == "classification":
        selector, model = ExtraTreesClassifier, RandomForestClassifier
    else:
        raise ValueError(f"task_kind must be 'regression' or 'classification', got {task_kind!r}.")
    return Pipeline([
        ("featurize", MatminerFeatures(featurizers, input_kind=input_kind)),
        ("drop_missing", MissingColumnFilter(0.05)),
        ("impute", SimpleImputer(strategy="median")),
        ("drop_constant", VarianceThreshold(0.0)),
        ("drop_correlated", CorrelationFilter(0.95)),
        ("select", SelectFromModel(selector(n_estimators=100, random_state=random_state, n_jobs=n_jobs),
                                   threshold="0.5*mean")),
        ("model", model(n_estimators=n_estimators, random_state=random_state, n_jobs=n_jobs)),
    ])
