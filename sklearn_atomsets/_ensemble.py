"""Seed ensembles of AtomSets-family nets: averaged predictions and their spread.

``AtomSetsEnsembleRegressor`` fits ``n_estimators`` clones of one regressor that differ
only in ``random_state`` (initialisation, batch order and, with early stopping, the inner
validation split) and averages their predictions; ``predict(X, return_std=True)`` also
returns the standard deviation over the members, as
:class:`sklearn.gaussian_process.GaussianProcessRegressor` returns its predictive standard
deviation (``VotingRegressor`` gives no spread). ``AtomSetsEnsembleClassifier`` averages
class probabilities the same way.
"""

from __future__ import annotations

import copy
import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._calibration import calibrated_std, fit_std_calibration, interval_coverage, interval_quantile
from ._descriptors import take_samples
from ._estimators import AtomSetsClassifier, AtomSetsRegressor
from ._stacked import fit_stacked, unsupported, unsupported_data

__all__ = ["AtomSetsEnsembleClassifier", "AtomSetsEnsembleRegressor"]


def _weights(sample_weight):
    """``fit`` keywords for the members: none without weights (members need not take them)."""
    return {} if sample_weight is None else {"sample_weight": sample_weight}


class _SeedEnsemble(BaseEstimator):
    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "set_params"]), None],
        "n_estimators": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "stacked": [StrOptions({"auto"}), "boolean"],
    }

    def __init__(self, estimator=None, *, n_estimators=5, random_state=None, stacked="auto"):
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.random_state = random_state
        self.stacked = stacked

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None):
        """Fit ``n_estimators`` clones of ``estimator``, each with its own ``random_state``
        (``sample_weight``, when given, is passed to every member's ``fit``)."""
        base = self._default() if self.estimator is None else self.estimator
        if "random_state" not in base.get_params():
            raise ValueError(f"estimator {type(base).__name__} has no random_state parameter to vary.")
        base = self._member_template(base)
        self.seeds_ = self._draw_seeds()
        self.estimators_ = self._fit_members(base, self.seeds_, X, y, sample_weight)
        self._calibrate(X, y)
        return self._fitted()

    @_fit_context(prefer_skip_nested_validation=False)
    def fit_from(self, fitted, X, y, sample_weight=None):
        """Fit the ensemble around ``fitted``, a member already trained on ``X, y``.

        ``fitted`` becomes the first member as it is (its ``random_state`` is the first of
        ``seeds_``); only the other ``n_estimators - 1`` members are trained, clones of it
        with the seeds ``fit`` would give them. For a net chosen among candidates (a
        configuration selected on its inner validation split): the ensemble of the selection
        costs ``n_estimators - 1`` more fits, not ``n_estimators`` per candidate. ``estimator``
        is not used.
        """
        check_is_fitted(fitted)
        seed = fitted.get_params().get("random_state")
        if not isinstance(seed, numbers.Integral):
            raise ValueError(f"fitted needs an integer random_state (its seed as a member), got {seed!r}.")
        self.seeds_ = [int(seed)] + self._draw_seeds()[1:]
        template = self._member_template(fitted, fitted=fitted)
        self.estimators_ = [fitted] + self._fit_members(template, self.seeds_[1:], X, y, sample_weight)
        self._calibrate(X, y)
        return self._fitted()

    def _fit_members(self, base, seeds, X, y, sample_weight):
        """Clones of ``base`` with the ``seeds`` as ``random_state``, fitted: in one stack
        (``_stacked.fit_stacked``) or one by one (``stacked_`` says which)."""
        members = [clone(base).set_params(random_state=s) for s in seeds]
        reason = unsupported(base) or unsupported_data(X)
        if self.stacked != "auto" and self.stacked and reason is not None:
            raise ValueError(f"stacked=True, but {type(base).__name__} cannot be trained stacked: {reason}. "
                             "Use stacked='auto' (fit the members one by one then) or change the estimator.")
        self.stacked_ = bool(members) and reason is None and (self.stacked == "auto" or bool(self.stacked))
        if self.stacked_:
            return fit_stacked(members, X, y, sample_weight)
        return [m.fit(X, y, **_weights(sample_weight)) for m in members]

    def _draw_seeds(self):
        seeds = check_random_state(self.random_state).randint(np.iinfo(np.int32).max, size=self.n_estimators)
        return [int(s) for s in seeds]

    def _fitted(self):
        return self

    def _member_template(self, base, fitted=None):
        """The estimator the members are clones of (the regressor's ``calibrate`` changes it)."""
        return base

    def _calibrate(self, X, y):
        """Fit what the ensemble learns from the members' held-out rows (the regressor's std calibration)."""

    @property
    def best_validation_scores_(self):
        """Each member's ``best_validation_score_`` (None where a member has no validation split).

        Members hold out different inner splits, so these are not one ensemble score."""
        check_is_fitted(self, "estimators_")
        return [getattr(e, "best_validation_score_", None) for e in self.estimators_]


class AtomSetsEnsembleRegressor(RegressorMixin, _SeedEnsemble):
    """A seed ensemble of AtomSets-family regressors with a predictive standard deviation.

    Parameters
    ----------
    estimator : estimator, default=None
        The regressor to repeat (``AtomSetsRegressor()`` when None); any estimator with a
        ``random_state`` parameter works (e.g. ``MLPfRegressor``).
    n_estimators : int, default=5
        Number of members.
    random_state : int, RandomState or None, default=None
        Draws the members' ``random_state`` values (``seeds_``).
    stacked : "auto" or bool, default="auto"
        Train the members together, as one net with stacked weights (one batched step for
        all members; each member has its own initialisation, batch order, inner split and
        early stopping, and equals the member trained alone up to float32 rounding).
        "auto": when the estimator allows it (an AtomSets or MLP-f estimator with the mean
        readout, no dropout, Adam or AdamW, no schedule, callbacks or skorch-routed
        parameters), else one fit per member. True: always, an error when not possible.
        False: one fit per member.
    calibrate : bool, default=False
        Recalibrate ``predict(X, return_std=True)``'s std on held-out rows the fit already
        has. The members then share one inner validation split (skorch's ``train_split``,
        drawn from ``random_state``; with ``fit_from``, the fitted member's), so on those
        rows the ensemble's mean and spread are what they are on new data: no member trained
        on them (early stopping watched them). The std becomes ``std_scale_ * sqrt(std**2 +
        std_floor_**2)``, fitted per target on these rows: ``std_floor_`` (the error the
        members' spread does not show, in the units of y) by the normal likelihood of their
        errors, ``std_scale_`` so that the fraction of their errors within ``z`` calibrated
        std matches the normal central intervals (see :func:`fit_std_calibration`). Needs
        members with ``validation_fraction`` (AtomSets-family estimators) and
        ``n_estimators >= 2``; a larger ``validation_fraction`` gives it more rows. With
        heavy-tailed errors one std cannot match both 68 % and 95 %: on MatBench the 1-std
        coverage comes out near 68 % and the 2-std coverage short of 95 %
        (``benchmarks/README.md``); ``calibration_coverage_`` shows it on the held-out rows.
        For an interval at a chosen probability use :meth:`predict_interval`, which reads
        the held-out rows' own error distribution instead of the normal one.

    Attributes
    ----------
    estimators_ : list of fitted estimators
        Ordinary fitted estimators, also when trained stacked (each ``net_`` holds its own
        weights, history and best epoch).
    seeds_ : list of int
        The ``random_state`` of each member.
    stacked_ : bool
        Whether the members were trained in one stack (those ``fit_from`` trains).
    best_validation_scores_ : list of float or None
        Each member's inner-validation score (their inner splits differ, unless
        ``calibrate=True``).
    std_scale_, std_floor_ : float, ndarray of shape (n_targets,) or None
        The std's calibration (``calibrate=True``), else None.
    validation_indices_ : ndarray or None
        With ``calibrate=True``: positions in the ``X`` given to ``fit`` of the shared
        inner validation rows that ``std_scale_`` was fitted on; else None.
    calibration_coverage_ : dict or None
        With ``calibrate=True``: on those rows, the fraction of errors within 1 and 2
        calibrated std (keys 1 and 2); optimistic, as early stopping chose each member's
        epoch on these rows.
    calibration_scores_ : ndarray of shape (n_rows,) or (n_rows, n_targets), or None
        With ``calibrate=True``: those rows' errors in calibrated std, ``|y - mean| / std``,
        which :meth:`predict_interval` takes its quantiles from; else None.

    See Also
    --------
    sklearn.gaussian_process.GaussianProcessRegressor : ``predict(X, return_std=True)``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_atomsets import AtomSetsRegressor
    >>> from sklearn_atomsets import AtomSetsEnsembleRegressor
    >>> X = [np.array([z, z + 1]) for z in range(1, 41)]
    >>> y = np.array([float(x.sum()) for x in X])
    >>> model = AtomSetsEnsembleRegressor(AtomSetsRegressor(max_epochs=5, validation_fraction=None),
    ...                                   n_estimators=3, random_state=0).fit(X, y)
    >>> mean, std = model.predict(X[:2], return_std=True)
    >>> mean.shape, std.shape, bool((std > 0).all())
    ((2,), (2,), True)
    """

    _parameter_constraints = {**_SeedEnsemble._parameter_constraints, "calibrate": ["boolean"]}

    def __init__(self, estimator=None, *, n_estimators=5, random_state=None, stacked="auto", calibrate=False):
        super().__init__(estimator, n_estimators=n_estimators, random_state=random_state, stacked=stacked)
        self.calibrate = calibrate

    def _default(self):
        return AtomSetsRegressor()

    def _member_template(self, base, fitted=None):
        """With ``calibrate``: ``base`` with one inner validation split for every member (skorch's
        ``train_split``; ``fitted``'s own split in ``fit_from``)."""
        if not self.calibrate:
            return base
        fraction = base.get_params().get("validation_fraction")
        if not fraction or "random_state" not in base.get_params():
            raise ValueError(
                f"calibrate=True fits the std on the members' inner validation split; {type(base).__name__} "
                f"has validation_fraction={fraction!r}. Use an AtomSets-family estimator with a validation_fraction."
            )
        if self.n_estimators < 2:
            raise ValueError("calibrate=True needs n_estimators >= 2: one member has no spread to scale.")
        if fitted is not None:
            split = copy.deepcopy(fitted.net_.train_split)
        else:
            from skorch.dataset import ValidSplit

            split = ValidSplit(fraction, stratified=False, random_state=self._draw_seeds()[0])
        return clone(base).set_params(train_split=split)

    def _calibrate(self, X, y):
        """``std_scale_`` from the ensemble's errors and spread on the shared held-out rows only."""
        self.std_scale_ = self.std_floor_ = self.validation_indices_ = self.calibration_coverage_ = None
        self.calibration_scores_ = None
        if not self.calibrate:
            return
        splits = [getattr(e, "validation_indices_", None) for e in self.estimators_]
        if any(s is None for s in splits) or any(not np.array_equal(s, splits[0]) for s in splits[1:]):
            raise RuntimeError("The members do not share one inner validation split: there are no rows to calibrate on.")
        rows = splits[0]
        mean, std = self._mean_std(take_samples(X, rows))
        y_valid = np.asarray(y, dtype=float)[rows].reshape(mean.shape)
        self.std_scale_, self.std_floor_ = fit_std_calibration(y_valid - mean, std)
        self.validation_indices_ = rows
        calibrated = calibrated_std(std, self.std_scale_, self.std_floor_)
        coverage = {k: interval_coverage(y_valid, mean, calibrated, k=k) for k in (1, 2)}
        self.calibration_coverage_ = {k: float(c) if np.ndim(c) == 0 else c for k, c in coverage.items()}
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero std: an infinite score, never covered
            self.calibration_scores_ = np.abs(y_valid - mean) / calibrated

    def _mean_std(self, X):
        predictions = np.stack([np.asarray(e.predict(X), dtype=float) for e in self.estimators_])
        return predictions.mean(axis=0), predictions.std(axis=0)

    def predict(self, X, return_std=False):
        """Mean of the members' predictions, and with ``return_std=True`` their standard deviation.

        The standard deviation is over the members (``ddof=0``): the spread that training
        randomness alone produces, not a calibrated error bar -- unless ``calibrate=True``,
        where it is ``std_scale_ * sqrt(std**2 + std_floor_**2)``, fitted on held-out rows.
        """
        check_is_fitted(self, "estimators_")
        mean, std = self._mean_std(X)
        if getattr(self, "std_scale_", None) is not None:
            std = calibrated_std(std, self.std_scale_, self.std_floor_)
        return (mean, std) if return_std else mean

    def predict_interval(self, X, coverage=0.95):
        """Lower and upper bounds that cover ``coverage`` of new errors (``calibrate=True`` only).

        The interval is ``mean +- q * std`` with ``std`` the calibrated std and ``q`` the
        split-conformal quantile of the shared held-out rows' ``calibration_scores_``
        (:func:`interval_quantile`): it holds for at least ``coverage`` of new rows that are
        exchangeable with those rows, whatever the errors' distribution (heavy tails widen
        the 95 % interval beyond 1.96 std). The held-out rows also chose each member's best
        epoch, which makes the intervals a little optimistic (``benchmarks/README.md``
        measures them on MatBench test folds). Infinite bounds when the held-out rows are
        too few for ``coverage`` (fewer than ``coverage / (1 - coverage)``: 19 for 0.95).

        Parameters
        ----------
        X : sets, as for :meth:`predict`
        coverage : float in (0, 1), default=0.95

        Returns
        -------
        lower, upper : ndarrays of the shape of ``predict(X)``
        """
        check_is_fitted(self, "estimators_")
        if getattr(self, "calibration_scores_", None) is None:
            raise ValueError("predict_interval needs the held-out rows of a fit with calibrate=True; this "
                             "ensemble has no calibration_scores_ (fitted with calibrate=False, or by a version before them).")
        q = interval_quantile(self.calibration_scores_, coverage)
        mean, std = self.predict(X, return_std=True)
        return mean - q * std, mean + q * std


class AtomSetsEnsembleClassifier(ClassifierMixin, _SeedEnsemble):
    """A seed ensemble of AtomSets-family classifiers: averaged class probabilities.

    Parameters are those of :class:`AtomSetsEnsembleRegressor` (``estimator`` defaults to
    ``AtomSetsClassifier()``). ``predict_proba(X, return_std=True)`` also returns the
    standard deviation of each class probability over the members; ``predict`` is the
    class of highest mean probability.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_atomsets import AtomSetsClassifier
    >>> from sklearn_atomsets import AtomSetsEnsembleClassifier
    >>> X = [np.array([z, z + 1]) for z in range(1, 41)]
    >>> y = np.array([z > 20 for z in range(1, 41)])
    >>> clf = AtomSetsEnsembleClassifier(AtomSetsClassifier(max_epochs=5, validation_fraction=None),
    ...                                  n_estimators=3, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape, clf.classes_.tolist()
    ((2, 2), [False, True])
    """

    def _default(self):
        return AtomSetsClassifier()

    def _fitted(self):
        self.classes_ = self.estimators_[0].classes_
        for e in self.estimators_[1:]:
            if list(e.classes_) != list(self.classes_):  # cannot happen with the same y; checked anyway
                raise RuntimeError("Ensemble members disagree on the classes.")
        return self

    def predict_proba(self, X, return_std=False):
        """Mean class probabilities over the members (and, with ``return_std=True``, their std)."""
        check_is_fitted(self, "estimators_")
        probas = np.stack([e.predict_proba(X) for e in self.estimators_])
        mean = probas.mean(axis=0)
        return (mean, probas.std(axis=0)) if return_std else mean

    def predict(self, X):
        """The class of highest mean probability."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
