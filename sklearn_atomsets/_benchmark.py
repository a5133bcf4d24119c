"""MatBench runner: the paper's models and an AutoMatminer-style baseline on official folds.

Every model is a scikit-learn ``Pipeline(featurizer -> estimator)``. For each seed and fold
the featurizer runs on the training and test inputs (timed; the process-wide feature cache
means later models, seeds and folds reuse the frozen-encoder outputs), the estimator is
fitted on the training part (its own 90/10 split, drawn from the seed, drives early
stopping) and scored on the test part. With a selection grid (:func:`select_protocol`)
every candidate training configuration is fitted on the training part and the one with the
best inner-validation score is the one scored on the test part. Results go to
``<out>/<task>.json`` (``<task>_composition_only.json`` for the composition-only copies)
with per-fit scores, times, epochs, selection candidates and test predictions.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pickle
import platform
import re
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.base import is_classifier
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, roc_auc_score
from sklearn.model_selection import TunedThresholdClassifierCV
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing

from ._baseline import automatminer_style_pipeline
from ._ensemble import AtomSetsEnsembleClassifier, AtomSetsEnsembleRegressor
from ._estimators import AtomSetsClassifier, AtomSetsRegressor, MLPfClassifier, MLPfRegressor
from ._featurizers import (
    _CACHE,
    AtomicNumberSetFeaturizer,
    MEGNetCompositionFeaturizer,
    MEGNetElementSetFeaturizer,
    MEGNetSiteSetFeaturizer,
    MEGNetStructureFeaturizer,
    SiteSetFeaturizer,
    StructureFeaturizer,
    _StructureBase,
)
from ._matbench import ANCHORS, load_matbench_composition_task, load_matbench_task
from ._stacked import fit_stacked, stack_groups

__all__ = [
    "DEFAULT_SELECTION",
    "MODELS",
    "TrainingSettings",
    "candidate_configs",
    "classification_scores",
    "make_model",
    "merge_results",
    "model_label",
    "models_for",
    "parse_selection",
    "run_matbench_task",
    "select_protocol",
    "summarise_fits",
]

#: matbench's probability -> label threshold (``matbench.constants.CLF_THRESH``): a sample is
#: predicted positive when its probability is strictly above it.
MATBENCH_THRESHOLD = 0.5

LEAKAGE_NOTE = (
    "The parent model (Eform_MP_2019) was trained on 133,420 Materials Project formation "
    "energies (2019); structures in the mp_* tasks' test folds overlap its training set, so "
    "transfer-learned scores on those tasks are optimistic."
)

COMPOSITION_ONLY_NOTE = (
    "Composition only: structures of this task are not available here, so it runs on the "
    "formulas of composition_only/<task>.crabnet.csv.gz with the official folds; polymorphs "
    "share a formula, and the scores are not comparable with structure-based entries."
)


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


def _seed_ensemble(net, settings, seed):
    """``net`` itself, or with ``settings.ensemble`` > 1 a seed ensemble of it whose members'
    seeds are drawn from ``seed`` (so every candidate of a selection gets the same members' seeds)."""
    if settings.ensemble == 1:
        return net
    cls = AtomSetsEnsembleClassifier if is_classifier(net) else AtomSetsEnsembleRegressor
    return cls(net, n_estimators=settings.ensemble, random_state=seed)


def _set_estimator(kind, settings, seed, **params):
    cls = AtomSetsRegressor if kind == "regression" else AtomSetsClassifier
    return _seed_ensemble(cls(
        max_epochs=settings.max_epochs, patience=settings.patience, batch_size=settings.batch_size, lr=settings.lr,
        readout=settings.readout, loss=_loss(kind, settings), weight_decay=settings.weight_decay,
        dropout=settings.dropout, lr_schedule=_lr_schedule(settings),
        standardize_features=settings.standardize_features, random_state=seed, **params), settings, seed)


def _mlpf(kind, settings, seed):
    cls = MLPfRegressor if kind == "regression" else MLPfClassifier
    return _seed_ensemble(cls(
        max_epochs=settings.max_epochs, patience=settings.patience, batch_size=settings.batch_size, lr=settings.lr,
        loss=_loss(kind, settings), weight_decay=settings.weight_decay, dropout=settings.dropout,
        lr_schedule=_lr_schedule(settings), standardize_features=settings.standardize_features,
        random_state=seed), settings, seed)


def _site_sets(layer):
    return lambda info: MEGNetSiteSetFeaturizer(layer) if info.input == "structure" else None


MODELS = {
    # name: (featurizer factory or None when not applicable, estimator factory, inputs it applies to)
    "AtomSets": (lambda info: AtomicNumberSetFeaturizer(), "sets", ("composition", "structure")),
    "AtomSets-V0": (
        lambda info: MEGNetElementSetFeaturizer() if info.input == "composition" else MEGNetSiteSetFeaturizer("V0"),
        "sets",
        ("composition", "structure"),
    ),
    "AtomSets-V1": (_site_sets("V1"), "sets", ("structure",)),
    "AtomSets-V2": (_site_sets("V2"), "sets", ("structure",)),
    "AtomSets-V3": (_site_sets("V3"), "sets", ("structure",)),
    "AtomSets-V0+V1": (_site_sets(("V0", "V1")), "sets", ("structure",)),
    # richer sets: the readout vector f of the parent appended to every site's V0+V1 row
    "AtomSets-V0+V1+f": (_site_sets(("V0", "V1", "f")), "sets", ("structure",)),
    "MLP-f": (lambda info: MEGNetStructureFeaturizer(layers=("f",)), "mlpf", ("structure",)),
    # the same models on the CHGNet parent (optional [chgnet] extra); f is CHGNet's crystal feature
    "AtomSets-V0 [CHGNet-0.3.0]": (
        lambda info: MEGNetElementSetFeaturizer(parent="CHGNet-0.3.0") if info.input == "composition"
        else MEGNetSiteSetFeaturizer("V0", parent="CHGNet-0.3.0"),
        "sets",
        ("composition", "structure"),
    ),
    **{
        f"AtomSets-V{k} [CHGNet-0.3.0]": (
            lambda info, layer=f"V{k}": MEGNetSiteSetFeaturizer(layer, parent="CHGNet-0.3.0"), "sets", ("structure",)
        )
        for k in range(1, 5)
    },
    "MLP-f [CHGNet-0.3.0]": (
        lambda info: MEGNetStructureFeaturizer(layers=("f",), parent="CHGNet-0.3.0"), "mlpf", ("structure",)
    ),
    # the same structure models on the SevenNet parent (optional [sevennet] extra): its five blocks' invariant
    # channels; f is their mean over the sites (issue 31)
    **{
        f"AtomSets-V{k} [SevenNet-0]": (
            lambda info, layer=f"V{k}": SiteSetFeaturizer(layer, parent="SevenNet-0"), "sets", ("structure",)
        )
        for k in range(1, 6)
    },
    "MLP-f [SevenNet-0]": (lambda info: StructureFeaturizer(layers=("f",), parent="SevenNet-0"), "mlpf", ("structure",)),
    "AMM-style": (None, "baseline", ("composition", "structure")),
    "AMM-style + MEGNet": (None, "baseline+megnet", ("composition", "structure")),
}


def models_for(info, names=None):
    """The models of ``names`` (default all) that apply to a task's input kind."""
    names = list(MODELS) if names is None else list(names)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"Unknown models {unknown}; choose from {list(MODELS)}.")
    return [n for n in names if info.input in MODELS[n][2]]


def make_model(name, info, settings=None, seed=0):
    """The ``Pipeline(featurizer -> estimator)`` of a named model for a task."""
    settings = settings or TrainingSettings()
    featurizer, estimator, inputs = MODELS[name]
    if info.input not in inputs:
        raise ValueError(f"{name} does not apply to {info.input} inputs.")
    if estimator == "sets":
        return Pipeline([("featurize", featurizer(info)), ("model", _set_estimator(info.kind, settings, seed))])
    if estimator == "mlpf":
        return Pipeline([("featurize", featurizer(info)), ("model", _mlpf(info.kind, settings, seed))])
    extra = []
    if estimator == "baseline+megnet":
        extra = (
            [MEGNetCompositionFeaturizer()]
            if info.input == "composition"
            else [MEGNetStructureFeaturizer(layers=("f", "V1"), stats=("mean", "std"))]
        )
    # every core for the forest and the selector, as the runner always ran them (results unchanged)
    return automatminer_style_pipeline(info.kind, info.input, extra_featurizers=extra,
                                       n_estimators=settings.n_estimators, random_state=seed, n_jobs=-1)


def model_label(name, settings, selection=None, kind=None):
    """A model's name in the results: set models with the set2set readout are told apart
    (unless the readout is one of the selection's choices, made per fit), seed ensembles
    of K nets end in `` xK`` (``settings.ensemble``), and network classifiers whose decision
    threshold was chosen on inner validation (``kind="classification"``) in `` (validation threshold)``."""
    label = name
    if MODELS[name][1] == "sets" and settings.readout != "mean" and "readout" not in (selection or {}):
        label = f"{name} ({settings.readout})"
    if MODELS[name][1] in ("sets", "mlpf") and settings.ensemble > 1:
        label = f"{label} x{settings.ensemble}"
    if _tunes_threshold(name, settings, kind):
        label = f"{label} (validation threshold)"
    return label


def _tunes_threshold(name, settings, kind):
    return kind == "classification" and settings.threshold == "validation" and MODELS[name][1] in ("sets", "mlpf")


def tune_threshold(model, X_train, y_train):
    """A fitted network classifier with its decision threshold chosen on its inner validation split.

    scikit-learn's :class:`~sklearn.model_selection.TunedThresholdClassifierCV` (``cv="prefit"``,
    ``refit=False``) searches the threshold that maximises balanced accuracy, the number the
    leaderboard's labels ROC-AUC equals, on the samples ``model.validation_indices_`` of the
    training data: the split that early stopping already held out. The test fold is not an
    argument. The returned classifier predicts positive where the probability is at least
    ``best_threshold_``.
    """
    if getattr(model, "validation_indices_", None) is None:
        raise ValueError(f"{type(model).__name__} has no inner validation split to choose a threshold on "
                         "(a seed ensemble's members each hold out their own; a net needs validation_fraction).")
    idx = model.validation_indices_
    tuned = TunedThresholdClassifierCV(model, scoring="balanced_accuracy", cv="prefit", refit=False)
    return tuned.fit(_safe_indexing(X_train, idx), np.asarray(y_train)[idx])


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
               "standardize_features": _flag}
_CHOICES = {"loss": ("mse", "mae", "huber"), "readout": ("mean", "set2set"), "lr_schedule": ("none", "plateau")}


def parse_selection(specs):
    """A selection grid from ``["loss=mse,mae", "lr=1e-3,3e-4"]`` (empty: :data:`DEFAULT_SELECTION`).

    Examples
    --------
    >>> from sklearn_atomsets._benchmark import parse_selection
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


def candidate_configs(name, info, selection):
    """The training configurations a selection grid offers one model on one task.

    Only the choices that apply are kept: classifiers always train on cross-entropy (no
    ``loss``), MLP-f reads one vector (no ``readout``), the tree baselines have no
    validation split and are not selected (an empty list).

    Examples
    --------
    >>> from sklearn_atomsets._benchmark import candidate_configs
    >>> from sklearn_atomsets._matbench import MATBENCH_TASKS
    >>> grid = {"loss": ("mse", "mae"), "readout": ("mean", "set2set")}
    >>> len(candidate_configs("AtomSets-V0", MATBENCH_TASKS["matbench_steels"], grid))
    4
    >>> candidate_configs("AtomSets-V0", MATBENCH_TASKS["matbench_glass"], grid)
    [{'readout': 'mean'}, {'readout': 'set2set'}]
    >>> candidate_configs("AMM-style", MATBENCH_TASKS["matbench_glass"], grid)
    []
    """
    estimator = MODELS[name][1]
    if estimator.startswith("baseline"):
        return []
    grid = {k: v for k, v in selection.items()
            if not (k == "loss" and info.kind == "classification") and not (k == "readout" and estimator == "mlpf")}
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _fit_record(model, max_epochs):
    """What a fitted net's training says: best epoch, inner-validation score, epochs, cap.

    A seed ensemble's ``validation_score`` is the mean of its members' ``best_validation_score_``
    (each member holds out its own inner split, drawn from its seed, so this is the members'
    average score, not the ensemble's score on one split); ``best_epoch`` and ``epochs_run``
    are the largest of the members', ``hit_cap`` whether any member hit the cap, and
    ``members`` lists each member's seed and record.
    """
    if isinstance(model, (AtomSetsEnsembleRegressor, AtomSetsEnsembleClassifier)):
        members = [{"seed": s, **_fit_record(e, max_epochs)} for s, e in zip(model.seeds_, model.estimators_)]
        return {"best_epoch": max(m["best_epoch"] for m in members),
                "validation_score": float(np.mean([m["validation_score"] for m in members])),
                "epochs_run": max(m["epochs_run"] for m in members),
                "hit_cap": any(m["hit_cap"] for m in members), "members": members}
    if not hasattr(model, "best_epoch_"):
        return {}
    epochs = len(model.net_.history)
    return {"best_epoch": model.best_epoch_,
            "validation_score": model.best_validation_score_,  # inner 10% split: training data only
            "epochs_run": epochs, "hit_cap": epochs >= max_epochs}


def _fit_config(name, info, F_train, y_train, config, settings, seed):
    """One net of ``config`` fitted on a training fold: ``(model, record)``, the record with the
    configuration, :func:`_fit_record`'s fields and the fit time."""
    model = make_model(name, info, replace(settings, **config), seed)[-1]
    start = time.perf_counter()
    model.fit(F_train, y_train)
    return model, {"config": config, **_fit_record(model, settings.max_epochs), "fit_s": time.perf_counter() - start}


def _fit_configs(name, info, F_train, y_train, configs, settings, seed, on_fitted=None):
    """:func:`_fit_config` of every configuration, in order; the nets that share an architecture
    (differing in loss, learning rate, weight decay or optimizer) train together in one stack
    (``_stacked.fit_stacked``: each equals its own fit up to float32 rounding). A stacked record
    has ``stack`` (the nets in its stack) and ``stack_fit_s`` (the stack's time); its ``fit_s``
    is its share of that time, so the records' times still add up to the time spent.
    ``on_fitted(i, model, record)`` is called as soon as configuration ``i`` is done (a stack's
    members once the stack is)."""
    models = [make_model(name, info, replace(settings, **config), seed)[-1] for config in configs]
    out = [None] * len(configs)
    for group in stack_groups(models):
        if len(group) == 1:
            out[group[0]] = _fit_config(name, info, F_train, y_train, configs[group[0]], settings, seed)
            if on_fitted is not None:
                on_fitted(group[0], *out[group[0]])
            continue
        start = time.perf_counter()
        fit_stacked([models[i] for i in group], F_train, y_train)
        seconds = time.perf_counter() - start
        for i in group:
            out[i] = (models[i], {"config": configs[i], **_fit_record(models[i], settings.max_epochs),
                                  "fit_s": seconds / len(group), "stack": len(group), "stack_fit_s": seconds})
            if on_fitted is not None:
                on_fitted(i, *out[i])
    return out


def select_protocol(name, info, F_train, y_train, selection, settings=None, seed=0, checkpoint=None, resume=False):
    """Choose a model's training configuration on the inner-validation split only.

    Each candidate of :func:`candidate_configs` is fitted on the training fold's features
    ``F_train`` (its estimator holds out the same inner 10%, drawn from ``seed``, for early
    stopping) and the candidate with the best inner-validation score (lowest MAE in target
    units for regressors, highest ROC-AUC from probabilities for classifiers; the first one
    on ties) wins. The test fold is not an argument: nothing here can read it.

    Returns ``(fitted estimator, chosen configuration, records)``, where ``records`` lists
    every candidate with its configuration, validation score, best epoch, epochs run,
    whether it hit the epoch cap, and its fit time.

    ``checkpoint`` (a folder): each fitted candidate is pickled there (model and record) as
    soon as it is done; with ``resume``, candidates found there (same configuration) are
    loaded instead of fitted again, so a selection that was stopped goes on with the next
    candidate. The largest fits of the plan (a 100,000-row task) take hours per selection:
    a candidate is the unit that is lost.
    """
    settings = settings or TrainingSettings()
    candidates = candidate_configs(name, info, selection)
    if not candidates:
        raise ValueError(f"{name} has no training configuration to select (no inner validation split).")
    lower = info.kind == "regression"
    records, best, best_model = [], None, None
    saved = [None if checkpoint is None else Path(checkpoint) / f"candidate{k}.pkl" for k in range(len(candidates))]
    done = {k: _read_candidate(saved[k], config) for k, config in enumerate(candidates) if resume and saved[k]}
    done = {k: v for k, v in done.items() if v is not None}
    todo = [k for k in range(len(candidates)) if k not in done]

    def keep(i, model, record):  # pickled as soon as it is done: a stopped selection goes on from here
        if saved[todo[i]] is not None:
            _write_candidate(saved[todo[i]], candidates[todo[i]], model, record)

    done.update(zip(todo, _fit_configs(name, info, F_train, y_train, [candidates[k] for k in todo], settings, seed,
                                       on_fitted=keep)))
    for k in range(len(candidates)):
        model, record = done[k]
        records.append(record)
        value = record["validation_score"]
        if value is None or math.isnan(value):
            continue
        if best is None or (value < best["validation_score"] if lower else value > best["validation_score"]):
            best, best_model = record, model
    if best is None:
        raise RuntimeError(f"No candidate of {name} produced a finite inner-validation score: {records}")
    return best_model, dict(best["config"]), records


def _write_candidate(path, config, model, record):
    """Pickle a fitted candidate whole or not at all."""
    _write_atomically(path, pickle.dumps({"config": config, "model": model, "record": record}))


def _read_candidate(path, config):
    """``(model, record)`` of a candidate pickled by :func:`_write_candidate`, or None (none there,
    another configuration, or a file that does not load)."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            saved = pickle.load(fh)
    except Exception:  # noqa: BLE001 - a checkpoint that does not load is fitted again
        return None
    return (saved["model"], saved["record"]) if saved.get("config") == config else None


def _settings_record(settings):
    """``asdict(settings)``; ``ensemble`` only where it is more than one net, ``lr_schedule`` only
    where there is one and ``standardize_features`` only where on (files of runs without them stay
    as they were)."""
    out = asdict(settings)
    if out["ensemble"] == 1:
        out.pop("ensemble")
    if out["lr_schedule"] == "none":
        out.pop("lr_schedule")
    if not out["standardize_features"]:
        out.pop("standardize_features")
    if out["threshold"] == "0.5":
        out.pop("threshold")
    for field in ("patience_steps", "max_steps"):
        if out[field] is None:
            out.pop(field)
    return out


def _model_settings(name, info, settings):
    """The training settings that matter for one model (the baselines ignore the net's)."""
    if MODELS[name][1].startswith("baseline"):
        return {"n_estimators": settings.n_estimators}  # never an ensemble
    out = _settings_record(settings)
    out.pop("n_estimators")
    if info.kind == "regression":
        out.pop("threshold", None)
    if MODELS[name][1] == "mlpf":
        out.pop("readout")  # MLP-f reads one fixed-length vector: no readout
    out["loss"] = _loss(info.kind, settings)
    if info.kind == "classification":
        out["loss"] = "cross_entropy"
    elif out["loss"] == "auto":
        out["loss"] = "mse"
    return out


def _recorded_settings(name, info, settings, selection):
    """A model's settings as the results record them, with its selection grid if any."""
    out = _model_settings(name, info, settings)
    candidates = candidate_configs(name, info, selection) if selection else []
    if candidates:
        out["selection"] = {k: sorted({c[k] for c in candidates}, key=str) for k in candidates[0]}
    return out


def classification_scores(y_true, proba, threshold=None):
    """A binary test fold's ROC-AUC two ways, from the positive class's probabilities.

    ``"rocauc"`` is ROC-AUC *as scored by matbench* (0.6, the package that scores leaderboard
    submissions): ``matbench.data_ops.score_array`` turns probabilities into labels at 0.5
    (positive when strictly above) before its first label metric and then computes every
    later metric, ROC-AUC included, on those labels (upstream issues materialsproject/matbench
    #137 and #181). On labels, ROC-AUC equals balanced accuracy, and that is the number every
    leaderboard entry reports, so it is the one to compare with the anchors.
    ``"rocauc_proba"`` is ROC-AUC from the probabilities themselves (the usual definition).
    ``"balanced_accuracy"`` is given for reference.

    The labels are matbench's (probability above 0.5, the estimators' own most probable
    class) unless ``threshold`` is given: a threshold chosen on inner validation
    (:func:`tune_threshold`), positive where the probability is at least it; those labels
    are then what a submission would hand matbench. No threshold is chosen on test.

    Examples
    --------
    >>> from sklearn_atomsets._benchmark import classification_scores
    >>> s = classification_scores([False, False, True, True], [0.1, 0.6, 0.4, 0.9])
    >>> s["rocauc"], s["rocauc_proba"]
    (0.5, 0.75)
    """
    y_true = np.asarray(y_true).astype(bool)
    proba = np.asarray(proba, dtype=float)
    labels = proba > MATBENCH_THRESHOLD if threshold is None else proba >= threshold
    return {
        "rocauc": float(roc_auc_score(y_true, labels)),
        "rocauc_proba": float(roc_auc_score(y_true, proba)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, labels)),
    }


def _score(info, y_true, model, X_test_features):
    """(the leaderboard's score, other scores, test predictions) of one fold."""
    if info.kind == "regression":
        y_pred = model.predict(X_test_features)
        return float(mean_absolute_error(y_true, y_pred)), {}, np.asarray(y_pred, dtype=float)
    proba = model.predict_proba(X_test_features)[:, list(model.classes_).index(True)]
    threshold = getattr(model, "best_threshold_", None)
    scores = classification_scores(y_true, proba, threshold)
    if threshold is not None:
        labels = model.predict(X_test_features)
        if not np.array_equal(np.asarray(labels, dtype=bool), proba >= threshold):  # scikit-learn's rule changed?
            raise RuntimeError("The tuned classifier's labels are not 'probability >= best_threshold_'.")
        scores.update(threshold=float(threshold), threshold_validation_balanced_accuracy=float(model.best_score_),
                      rocauc_at_half=classification_scores(y_true, proba)["rocauc"])
    return scores.pop("rocauc"), scores, proba


def _std(values):
    values = np.asarray(values, dtype=float)
    return float(values.std()) if len(values) else float("nan")


def summarise_fits(folds, max_epochs=None):
    """A model's summary from its fits (one entry per seed and fold).

    ``mean`` is the mean over seeds of each seed's mean over folds; ``seed_std`` the
    standard deviation over seeds of those fold means (None for one seed); ``std`` the
    standard deviation over folds (averaged over seeds; a single-seed file's old ``std``).
    ``n_fits`` and ``n_hit_cap`` count the network fits (selection candidates and seed
    ensembles' members included) and those that stopped at the epoch cap. Fits without a
    ``seed`` (single-seed files written before seeds were recorded) are one seed.

    Examples
    --------
    >>> from sklearn_atomsets._benchmark import summarise_fits
    >>> fits = [{"seed": s, "fold": k, "score": s + k} for s in (0, 2) for k in (0, 1)]
    >>> m = summarise_fits(fits)
    >>> m["mean"], m["seed_means"], m["seed_std"], m["std"]
    (1.5, {'0': 0.5, '2': 2.5}, 1.0, 0.5)
    """
    by_seed = {}
    for f in folds:
        by_seed.setdefault(f.get("seed"), []).append(f["score"])
    seed_means = {str(k): float(np.mean(v)) for k, v in by_seed.items()}
    out = {
        "mean": float(np.mean(list(seed_means.values()))),
        "std": float(np.mean([_std(v) for v in by_seed.values()])),
        "seed_means": seed_means,
        "seed_std": _std(list(seed_means.values())) if len(seed_means) > 1 else None,
        "n_seeds": len(seed_means),
    }
    counted = []
    fits = [m for f in folds for c in f.get("selection", {}).get("candidates", [f]) for m in c.get("members", [c])]
    fits += [m for f in folds if "selection" in f for m in f.get("ensemble", {}).get("members", [])]
    for c in fits:
        if "hit_cap" in c:
            counted.append(bool(c["hit_cap"]))
        elif max_epochs is not None and c.get("epochs_run") is not None:
            counted.append(c["epochs_run"] >= max_epochs)
    out["n_fits"], out["n_hit_cap"] = len(counted), int(sum(counted))
    return out


def _structure_featurizers(step):
    """The cached structure featurizers inside a pipeline step (itself, or nested in its parameters)."""
    found, todo = [], [step]
    while todo:
        obj = todo.pop()
        if isinstance(obj, (list, tuple)):
            todo.extend(obj)
        elif isinstance(obj, _StructureBase):
            if obj.cache:
                found.append(obj)
        elif hasattr(obj, "get_params"):
            todo.extend(obj.get_params(deep=False).values())
    return found


def _fill_feature_cache(inputs, steps):
    """Encode every input once per parent with all the outputs the steps' featurizers need.

    The process-wide feature cache merges the outputs of one structure, but each featurizer
    asks the parent only for its own layers, so a run of AtomSets-V1, -V2, -V3 and MLP-f would
    run the parent once per model. Asking once for the union fills the cache for all of them
    (their later calls are cache hits). Returns how many parents were run.
    """
    groups = {}
    for step in steps:
        for featurizer in _structure_featurizers(step):
            key = (featurizer._parent_key(), bool(featurizer.structure_only))
            groups.setdefault(key, (featurizer, set()))[1].update(featurizer._needed_outputs())
    inputs = list(inputs)
    n_sites = sum(len(x) if hasattr(x, "__len__") else 0 for x in inputs)
    filled = 0
    for featurizer, wanted in groups.values():
        encoder = featurizer._encoder()
        widths = encoder.output_widths()
        nbytes = 4 * sum(widths[n] * (n_sites if n in encoder.site_layers else len(inputs)) for n in wanted)
        if nbytes > _CACHE.max_bytes // 2:  # would not stay cached: each model encodes what it needs
            continue
        featurizer._encode(inputs, pbar=False, wanted=sorted(wanted))
        filled += 1
    return filled


def recorded_selections(paths, file, label, settings):
    """The per-fit selections that single-net runs recorded for one model: ``{(seed, fold): record}``.

    ``paths`` are result files or folders (searched recursively for ``file``, e.g.
    ``matbench_jdft2d.json``); a model counts where its label is ``label`` and its recorded
    settings (selection grid included) are ``settings``, so a selection made under another
    protocol is never reused. Each record holds the ``chosen`` configuration, the
    ``candidates`` with their inner-validation scores and the ``file`` it came from. Reading
    them again is exact caching of the selection step (it reads training folds only); a
    (seed, fold) that two files record with different choices raises ``ValueError``.
    """
    found = {}
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(path.rglob(file))
        for f in files:
            model = json.loads(f.read_text()).get("models", {}).get(label)
            if model is None or model.get("settings") != settings:
                continue
            for fit in model["folds"]:
                if "selection" not in fit or fit.get("seed") is None:
                    continue
                key = (int(fit["seed"]), int(fit["fold"]))
                record = {"chosen": fit["selection"]["chosen"], "candidates": fit["selection"]["candidates"],
                          "file": str(f)}
                if key in found and found[key]["chosen"] != record["chosen"]:
                    raise ValueError(f"{label} seed {key[0]} fold {key[1]}: {found[key]['file']} chose "
                                     f"{found[key]['chosen']}, {f} chose {record['chosen']}.")
                found.setdefault(key, record)
    return found


def run_matbench_task(task_name, models=None, folds=range(5), settings=None, out_dir=None, seed=0, log=print,
                      seeds=None, selection=None, composition_only=False, selected_from=None, resume=False):
    """Run models on one MatBench task's official folds and return (and save) the results.

    Parameters
    ----------
    task_name : str
        e.g. ``"matbench_steels"``.
    models : list of str, optional
        Names of :data:`MODELS` (default: all that apply to the task's inputs).
    folds : iterable of int, default=range(5)
    settings : TrainingSettings, optional
    out_dir : path-like, optional
        Where ``<task>.json`` goes, merged with what an earlier run recorded there: other
        models are kept; a model run again with other settings is replaced; a model run
        again with the same settings (and selection grid) keeps its earlier fits of other
        seeds and folds, so one table can be run in parts (e.g. ``--folds 0 1`` then
        ``--folds 2 3 4``).
    seed : int, default=0
        The seed of a single-seed run (``seeds`` overrides it).
    seeds : iterable of int, optional
        One full run per seed; the seed draws the inner validation split and the
        initialisation (the random forest's seed for the baselines).
    selection : dict, optional
        A selection grid (:func:`parse_selection`): each network fit becomes
        :func:`select_protocol` over its candidates, on inner-validation scores only;
        every candidate is recorded with its validation score.
    composition_only : bool, default=False
        Run on the task's composition-only copy (``load_matbench_composition_task``) with
        the composition models; results go to ``<task>_composition_only.json``.
    selected_from : list of path-like, optional
        With ``selection`` and ``settings.ensemble`` > 1: result files or folders of single-net
        runs of the same settings and grid. Where they record a fit's selection (same model,
        seed and fold; :func:`recorded_selections`) it is reused: only the chosen configuration
        is fitted again, as the first member (1 + K - 1 fits instead of every candidate + K - 1).
        Fits they do not record are selected as usual.
    resume : bool, default=False
        Resume an interrupted run: fits that ``out_dir``'s file already records for the same
        model, settings and selection grid (same seed and fold) are kept and not fitted again.
        The file is written after every fit (with or without ``resume``), so a run that is
        stopped loses at most the fit it was in. Without ``resume`` such fits are fitted again
        and replace the recorded ones.
    """
    settings = settings or TrainingSettings()
    if settings.threshold not in ("0.5", "validation"):
        raise ValueError(f"threshold should be '0.5' or 'validation', got {settings.threshold!r}.")
    seeds = [seed] if seeds is None else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds should be distinct integers, got {seeds}.")
    task = load_matbench_composition_task(task_name) if composition_only else load_matbench_task(task_name)
    info = task.info
    settings = step_epochs(settings, len(task.inputs))
    if settings.threshold == "validation" and settings.ensemble > 1 and info.kind == "classification":
        raise ValueError("A threshold chosen on inner validation needs single nets: a seed ensemble's members "
                         "each hold out their own split, so none is held out from the ensemble.")
    if selected_from and not (selection and settings.ensemble > 1):
        raise ValueError("selected_from reuses single-net selections for seed ensembles grown from the selected "
                         "net: it needs a selection grid and ensemble > 1.")
    names = models_for(info, models)
    file = f"{task_name}_composition_only.json" if composition_only else f"{task_name}.json"
    result = {
        "task": task_name,
        "metric": info.metric,
        "unit": info.unit,
        "n_samples": len(task.inputs),
        "data_source": task.source,
        "approximate_structures": task.approximate,
        "composition_only": bool(composition_only),
        "settings": _settings_record(settings),
        "seed": seeds[0],
        "seeds": seeds,
        "selection": {k: list(v) for k, v in selection.items()} if selection else None,
        # what the fits' inner-validation scores are (files before 2026-11-26 14:17: standardised targets)
        "validation_units": VALIDATION_UNITS[info.kind],
        "anchors": ANCHORS.get(task_name, {}),
        "notes": [LEAKAGE_NOTE] if task_name.startswith("matbench_mp_") else [],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "models": {},
    }
    if composition_only:
        result["notes"].insert(0, COMPOSITION_ONLY_NOTE)
    earlier_fits = {}
    if out_dir is not None and (Path(out_dir) / file).is_file():
        # keep the models an earlier run recorded (each with its own settings); rerun ones are replaced,
        # unless their settings are the same: then their fits of other seeds and folds are kept
        earlier = json.loads((Path(out_dir) / file).read_text())
        if earlier.get("validation_units") != result["validation_units"]:
            _annotate_fits(earlier)  # an older file: its fits carry their seed and units into this one
        if earlier.get("task") == task_name:
            labels = {model_label(name, settings, selection, info.kind): name for name in names}
            for label, m in earlier.get("models", {}).items():
                if label not in labels:
                    result["models"][label] = m
                elif m.get("settings") == _recorded_settings(labels[label], info, settings, selection):
                    earlier_fits[label] = m["folds"]
            result["seeds"] = sorted(set(seeds) | set(earlier.get("seeds", [earlier.get("seed", 0)])))
    if task.approximate:
        result["notes"].append(
            "Structures rebuilt from 6-decimal text (../shared/data/matbench/approx); targets are exact."
        )
    start = time.perf_counter()
    run_inputs = []
    for fold in folds:
        X_train, _, X_test, _ = task.split(fold)
        run_inputs += [*X_train, *X_test]
    if _fill_feature_cache(run_inputs, [make_model(name, info, settings)[0] for name in names]):
        result["encode_s"] = time.perf_counter() - start
        log(f"{task_name}: every structure encoded once per parent for all models ({result['encode_s']:.1f} s)")
    for name in names:
        label = model_label(name, settings, selection, info.kind)
        candidates = candidate_configs(name, info, selection) if selection else []
        recorded = {}
        if selected_from and candidates:
            single = replace(settings, ensemble=1)
            recorded = recorded_selections(selected_from, file, model_label(name, single, selection, info.kind),
                                           _recorded_settings(name, info, single, selection))
            log(f"{task_name} {label}: {sum((s, f) in recorded for s in seeds for f in folds)} of "
                f"{len(seeds) * len(folds)} fits reuse a recorded single-net selection")
        fits = []
        kept = {(f.get("seed"), f["fold"]): f for f in earlier_fits.get(label, [])} if resume else {}

        def record():
            done = {(f["seed"], f["fold"]) for f in fits}
            every = fits + [f for f in earlier_fits.get(label, []) if (f.get("seed"), f["fold"]) not in done]
            every.sort(key=lambda f: (f.get("seed") is None, f.get("seed") or 0, f["fold"]))
            result["models"][label] = {**summarise_fits(every, settings.max_epochs),
                                       "settings": _recorded_settings(name, info, settings, selection), "folds": every}
            if out_dir is not None:  # after every fit: a stopped run loses at most the fit it was in
                _write_atomically(Path(out_dir) / file, (json.dumps(result, indent=1) + "\n").encode())

        for fold in folds:
            shared = {}  # the featurizer step does not depend on the seed: computed once per fold
            for s in seeds:
                if (s, fold) in kept:
                    fits.append(kept[(s, fold)])
                    log(f"{task_name} {label} seed {s} fold {fold}: recorded, kept (resume)")
                    continue
                # the selection's candidates, pickled as each is done, until the fit is recorded
                checkpoint = None if out_dir is None else (
                    Path(out_dir) / "checkpoints" / Path(file).stem / re.sub(r"[^\w.-]+", "_", label) / f"seed{s}_fold{fold}")
                fits.append(_run_fold(task, name, fold, s, settings, selection if candidates else None, shared,
                                      recorded.get((s, fold)), checkpoint=checkpoint, resume=resume))
                f = fits[-1]
                chosen = f" chosen {f['selection']['chosen']}" if "selection" in f else ""
                log(f"{task_name} {label} seed {s} fold {fold}: {info.metric} {f['score']:.4f}{chosen} "
                    f"(featurize {f['featurize_s']:.1f} s, fit {f['fit_s']:.1f} s)")
                record()
                if checkpoint is not None:
                    shutil.rmtree(checkpoint, ignore_errors=True)
                    try:  # and the folders above it that this leaves empty, up to the results folder
                        os.removedirs(checkpoint.parent)
                    except OSError:
                        pass
        record()
    return result


def _write_atomically(path, data):
    """Write ``data`` (bytes) to ``path`` whole or not at all: written beside it, then moved into
    place, so a process killed while writing leaves the old file (or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _run_fold(task, name, fold, seed, settings, selection, shared=None, recorded=None, checkpoint=None, resume=False):
    """One fit (or one selection over candidates) on a fold's training part, scored on its test part.

    ``recorded`` (a seed ensemble grown from the selected net only): the selection a single-net
    run recorded for this seed and fold (:func:`recorded_selections`); its chosen configuration
    is fitted again as the first member instead of fitting every candidate again.

    ``shared`` (a dict, one per fold) keeps the output of the pipeline's first step, the
    featurizer, which has no seed, for the fold's other seeds; the later steps (the
    baseline's filters and tree-based selection) are fitted per seed. ``featurize_s`` is the
    time this fit spent featurizing (near 0 where the features were reused).
    """
    info = task.info
    X_train, y_train, X_test, y_test = task.split(fold)
    pipe = make_model(name, info, settings, seed)
    model = pipe[-1]
    start = time.perf_counter()
    reused = shared is not None and "train" in shared
    if reused:
        F_train, F_test = shared["train"], shared["test"]
    else:
        F_train = pipe[0].fit_transform(list(X_train), y_train.to_numpy())
        F_test = pipe[0].transform(list(X_test))
        if shared is not None:
            shared.update(train=F_train, test=F_test)
    if len(pipe) > 2:
        rest = pipe[1:-1]
        F_train = rest.fit_transform(F_train, y_train.to_numpy())
        F_test = rest.transform(F_test)
    t_featurize = time.perf_counter() - start
    start = time.perf_counter()
    grow = bool(selection) and settings.ensemble > 1  # select on single nets, then the ensemble of the pick
    if grow and recorded is not None:
        # the selection a single-net run of these settings recorded for this seed and fold: only its
        # chosen configuration is fitted again (same seed, same inner split), as the first member
        chosen, records = dict(recorded["chosen"]), recorded["candidates"]
        model, picked = _fit_config(name, info, F_train, y_train.to_numpy(), chosen, replace(settings, ensemble=1), seed)
    elif selection:
        single = replace(settings, ensemble=1) if grow else settings
        model, chosen, records = select_protocol(name, info, F_train, y_train.to_numpy(), selection, single, seed,
                                                 checkpoint=checkpoint, resume=resume)
        picked = next(r for r in records if r["config"] == chosen)
    else:
        model.fit(F_train, y_train.to_numpy())
    if grow:
        model = _seed_ensemble(model, settings, seed).fit_from(model, F_train, y_train.to_numpy())
    net = model
    if _tunes_threshold(name, settings, info.kind):
        model = tune_threshold(net, F_train, y_train.to_numpy())
    t_fit = time.perf_counter() - start
    # the test part is read here, once the model (and its configuration) is fixed
    score, other_scores, pred = _score(info, y_test.to_numpy(), model, F_test)
    entry = {"seed": seed, "fold": fold, "score": score, **other_scores, "featurize_s": t_featurize, "fit_s": t_fit,
             "features_reused": reused, "n_train": len(y_train), "n_test": len(y_test),
             "y_true": y_test.astype(float).tolist(), "y_pred": pred.tolist()}
    if settings.ensemble > 1 and MODELS[name][1] in ("sets", "mlpf"):
        entry["ensemble"] = {"n_estimators": settings.ensemble, "seeds": [int(s) for s in net.seeds_]}
    if selection:
        entry.update({k: picked[k] for k in ("best_epoch", "validation_score", "epochs_run", "hit_cap", "members")
                      if k in picked})
        entry["selection"] = {"chosen": chosen, "candidates": records}
        if grow and recorded is not None:
            entry["selection"]["recorded_in"] = recorded["file"]
        if grow:  # the selected net is the first member: its validation_score is on the seed's shared split
            entry["ensemble"]["of_selected"] = True
            entry["ensemble"]["members"] = _fit_record(net, settings.max_epochs)["members"][1:]
            # the chosen net alone on the same test fold: the ensemble's gain, paired (reported, never selected on)
            entry["ensemble"]["first_member_score"] = _score(info, y_test.to_numpy(), net.estimators_[0], F_test)[0]
    else:
        entry.update(_fit_record(net, settings.max_epochs))
    return entry


#: What the runner records as each fit's ``validation_score``: regressors' inner-validation MAE in
#: the target's units, classifiers' ROC-AUC from probabilities. Result files without this field
#: and with fits that carry no seed were written before the runner recorded either; their
#: regression scores are MAEs of standardised targets (``benchmarks/convert_validation_units.py``).
VALIDATION_UNITS = {"regression": "mae in target units", "classification": "roc_auc from probabilities"}


def _annotate_fits(result):
    """Give every fit what it needs to meet fits of other files, in place: its seed (fits of a
    file written before fits recorded their seed take the file's), so they merge with and are
    compared per (seed, fold) with fits of later runs; and the file's ``validation_units``
    (None where the file has none), so that scores in different units are never compared."""
    for m in result.get("models", {}).values():
        for f in m.get("folds", []):
            if f.get("seed") is None:
                f["seed"] = result.get("seed", 0)
            f.setdefault("validation_units", result.get("validation_units"))
    return result


def merge_results(results):
    """One result per task (and input kind) from results of runs made in parts.

    ``results`` in the order they were written (later ones win). Results of the same task
    and ``composition_only`` are merged: a model whose settings are the same in both keeps
    the fits of every (seed, fold) (a later fit of the same seed and fold replaces the
    earlier); a model with other settings replaces the earlier one. Summaries are
    recomputed from the fits. Returns the merged results, in order of first appearance.
    """
    merged = {}
    for r in results:
        key = (r["task"], bool(r.get("composition_only")))
        r = _annotate_fits(json.loads(json.dumps(r)))  # a copy
        if key not in merged:
            merged[key] = r
            continue
        into = merged[key]
        for field in ("settings", "selection", "machine", "data_source", "approximate_structures"):
            if field in r:
                into[field] = r[field]
        into["notes"] = list(dict.fromkeys(into.get("notes", []) + r.get("notes", [])))
        into["seeds"] = sorted(set(into.get("seeds", [into.get("seed", 0)])) | set(r.get("seeds", [r.get("seed", 0)])))
        for label, m in r["models"].items():
            old = into["models"].get(label)
            if old is None or old.get("settings") != m.get("settings"):
                into["models"][label] = m  # r is already this call's own copy
                continue
            fits = {(f.get("seed"), f["fold"]): f for f in old["folds"]}
            fits.update({(f.get("seed"), f["fold"]): f for f in m["folds"]})
            old["folds"] = sorted(fits.values(), key=lambda f: (f.get("seed") is None, f.get("seed") or 0, f["fold"]))
            old.update(summarise_fits(old["folds"], (m.get("settings") or {}).get("max_epochs")))
    return list(merged.values())


def summary_lines(result):
    """Plain-text lines: each model's mean +- std next to the leaderboard anchors."""
    metric = result["metric"].upper() if result["metric"] == "mae" else "ROC-AUC as scored by matbench (labels)"
    seeds = result.get("seeds", [result.get("seed", 0)])
    where = " composition only," if result.get("composition_only") else ""
    lines = [f"{result['task']} ({metric},{where} mean over {len(seeds)} seed(s) of the fold means; "
             "+- std over folds, [std over seeds])"]
    for name, m in result["models"].items():
        per_fold = " ".join(f"{f['score']:.4g}" for f in m["folds"])
        extra = ""
        if all("rocauc_proba" in f for f in m["folds"]):
            extra = f"   ROC-AUC from probabilities {np.mean([f['rocauc_proba'] for f in m['folds']]):.4f}"
        spread = f" [{m['seed_std']:.4f}]" if m.get("seed_std") is not None else ""
        cap = f"   at epoch cap: {m['n_hit_cap']}/{m['n_fits']} fits" if m.get("n_fits") else ""
        lines.append(f"  {name:<22} {m['mean']:10.4f} +- {m['std']:.4f}{spread}   fits: {per_fold}{extra}{cap}")
    for name, value in result["anchors"].items():
        lines.append(f"  {'[leaderboard] ' + name:<36} {value:10.4f}")
    return lines
