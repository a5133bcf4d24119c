"""The protocol's settings: how the AtomSets-family estimators are trained in a MatBench run, and the
selection grids the runner chooses among on inner validation (``--select``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["DEFAULT_SELECTION", "TrainingSettings", "parse_selection", "step_epochs", "train_steps"]


@dataclass
class TrainingSettings:
    """How the AtomSets-family estimators are trained in a benchmark run.

    The defaults are the paper's protocol: patience 200, and an epoch cap (``max_epochs``,
    2000) meant to be high enough that few fits reach it; every fit records whether it did
    (``hit_cap``), so the cap can be raised where the count says so.

    ``ensemble`` > 1 makes every network model (AtomSets-*, MLP-*) a seed ensemble of that
    many nets (:class:`~sklearn_atomsets.AtomSetsEnsembleRegressor` / ``Classifier``, whose
    ``random_state`` is the run's seed); 1 is a single net, and is not recorded. With a
    selection, the configuration is chosen on single nets and the chosen net then grows into
    the ensemble (``fit_from``: K - 1 more fits), whose validation score stays the chosen net's.

    ``threshold`` is how a network classifier turns probabilities into the labels the
    leaderboard scores: ``"0.5"`` leaves it to matbench (positive above 0.5; not recorded),
    ``"validation"`` chooses the threshold that maximises balanced accuracy (the leaderboard's
    labels ROC-AUC) on the net's own inner validation split (:func:`tune_threshold`).
    """

    max_epochs: int = 2000
    patience: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    readout: str = "mean"
    loss: str = "auto"  # regressors: "mse" (auto: the runner's, kept for its recorded runs), "mae" or "huber"
    weight_decay: float = 0.0
    dropout: float = 0.0
    lr_schedule: str = "none"  # "none" (constant learning rate) or "plateau" (halved when validation stalls)
    standardize_features: bool = False  # network inputs (set rows, f) standardised on the training fold
    n_estimators: int = 500  # random forest of the baseline
    ensemble: int = 1  # members of each network model's seed ensemble (1: a single net)
    threshold: str = "0.5"  # network classifiers' decision threshold: "0.5" (matbench's) or "validation"
    #: patience and cap counted in optimizer steps instead (the composition-only tasks' protocol): the
    #: runner turns them into ``patience`` / ``max_epochs`` of the task's training folds (:func:`step_epochs`)
    patience_steps: int | None = None
    max_steps: int | None = None
    #: descriptor columns a sets-plus-descriptors model keeps (MutualInfoSelector inside the estimator,
    #: fitted on the training fold; selectable: ``--select n_descriptors=32,64,128``)
    n_descriptors: int = 64


def train_steps(n_train, batch_size=128, validation_fraction=0.1):
    """Optimizer steps of one epoch on ``n_train`` rows once the estimators' inner split holds out
    ``validation_fraction`` of them (skorch's ``ValidSplit`` rounds the held-out part up)."""
    return math.ceil((n_train - math.ceil(validation_fraction * n_train)) / batch_size)


def step_epochs(settings, n_samples):
    """``settings`` with ``patience_steps`` / ``max_steps`` (where set) turned into epochs of a
    training fold of an ``n_samples`` task (MatBench's 5-fold split: ``n_samples - ceil(n_samples / 5)``
    training rows, the smallest fold's), at least one epoch each; the step counts stay recorded."""
    per_epoch = train_steps(n_samples - math.ceil(n_samples / 5), settings.batch_size)
    out = {}
    for name, field in (("patience_steps", "patience"), ("max_steps", "max_epochs")):
        steps = getattr(settings, name)
        if steps is not None:
            if steps < 1:
                raise ValueError(f"{name} should be a positive number of optimizer steps, got {steps}.")
            out[field] = max(1, math.ceil(steps / per_epoch))
    return replace(settings, **out)


def _loss(kind, settings):
    # the runner's "auto" stays squared error, as its recorded runs were trained (the estimators'
    # own default became L1); classifiers: cross-entropy
    if kind != "regression":
        return "auto"
    return "mse" if settings.loss == "auto" else settings.loss


def _lr_schedule(settings):
    return None if settings.lr_schedule == "none" else settings.lr_schedule


#: The selection grid of ``--select`` without values: each protocol choice the runner makes
#: per fit on inner-validation scores (regressors' loss, set models' readout).
DEFAULT_SELECTION = {"loss": ("mse", "mae", "huber"), "readout": ("mean", "set2set")}


def _flag(value):
    """A yes/no value of a selection entry: true/false, yes/no or 1/0."""
    flags = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if value.lower() not in flags:
        raise ValueError(f"{value!r} is not one of true/false, yes/no, 1/0")
    return flags[value.lower()]


_SELECTABLE = {"loss": str, "readout": str, "lr": float, "weight_decay": float, "dropout": float, "lr_schedule": str,
               "standardize_features": _flag, "n_descriptors": int}


_CHOICES = {"loss": ("mse", "mae", "huber"), "readout": ("mean", "set2set"), "lr_schedule": ("none", "plateau")}


def parse_selection(specs):
    """A selection grid from ``["loss=mse,mae", "lr=1e-3,3e-4"]`` (empty: :data:`DEFAULT_SELECTION`).

    Examples
    --------
    >>> from sklearn_atomsets.matbench import parse_selection
    >>> parse_selection(["loss=mse,mae", "weight_decay=0,1e-5"])
    {'loss': ('mse', 'mae'), 'weight_decay': (0.0, 1e-05)}
    >>> parse_selection([]) == DEFAULT_SELECTION
    True
    """
    if not specs:
        return dict(DEFAULT_SELECTION)
    grid = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or key not in _SELECTABLE or not values:
            raise ValueError(
                f"Selection entry {spec!r} should be NAME=V1,V2,... with NAME one of {sorted(_SELECTABLE)}."
            )
        try:
            grid[key] = tuple(_SELECTABLE[key](v) for v in values.split(","))
        except ValueError as exc:
            raise ValueError(f"Selection entry {spec!r}: {exc}") from None
        wrong = [v for v in grid[key] if key in _CHOICES and v not in _CHOICES[key]]
        if wrong:
            raise ValueError(f"Selection entry {spec!r}: {wrong} not among {list(_CHOICES[key])}.")
    return grid
