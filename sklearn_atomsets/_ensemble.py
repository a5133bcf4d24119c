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

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._estimators import AtomSetsClassifier, AtomSetsRegressor
from ._stacked import fit_stacked, unsupported

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
        self.seeds_ = self._draw_seeds()
        self.estimators_ = self._fit_members(base, self.seeds_, X, y, sample_weight)
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
        self.estimators_ = [fitted] + self._fit_members(fitted, self.seeds_[1:], X, y, sample_weight)
        return self._fitted()

    def _fit_members(self, base, seeds, X, y, sample_weight):
        """Clones of ``base`` with the ``seeds`` as ``random_state``, fitted: in one stack
        (``_stacked.fit_stacked``) or one by one (``stacked_`` says which)."""
        members = [clone(base).set_params(random_state=s) for s in seeds]
        reason = unsupported(base)
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
        Each member's inner-validation score (their inner splits differ).

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

    def _default(self):
        return AtomSetsRegressor()

    def predict(self, X, return_std=False):
        """Mean of the members' predictions, and with ``return_std=True`` their standard deviation.

        The standard deviation is over the members (``ddof=0``): the spread that training
        randomness alone produces, not a calibrated error bar.
        """
        check_is_fitted(self, "estimators_")
        predictions = np.stack([np.asarray(e.predict(X), dtype=float) for e in self.estimators_])
        mean = predictions.mean(axis=0)
        return (mean, predictions.std(axis=0)) if return_std else mean


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
