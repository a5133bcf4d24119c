"""Selection on inner validation: each candidate configuration fitted on the training fold, the best
inner-validation score chosen (the test fold is never an argument), checkpointed per candidate; the
decision threshold of a network classifier chosen on the same inner split; selections recorded by
earlier runs read back."""

from __future__ import annotations

import itertools
import json
import math
import pickle
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import TunedThresholdClassifierCV
from sklearn.utils import _safe_indexing

from .._ensemble import AtomSetsEnsembleClassifier, AtomSetsEnsembleRegressor
from .._stacked import fit_stacked, stack_groups, unsupported_data
from .models import MODELS, make_model
from .protocol import TrainingSettings
from .results import _write_atomically

__all__ = ["candidate_configs", "recorded_selections", "select_protocol", "tune_threshold"]


def candidate_configs(name, info, selection):
    """The training configurations a selection grid offers one model on one task.

    Only the choices that apply are kept: classifiers always train on cross-entropy (no
    ``loss``), MLP-f reads one vector (no ``readout``), the tree baselines have no
    validation split and are not selected (an empty list).

    Examples
    --------
    >>> from sklearn_atomsets.matbench import MATBENCH_TASKS, candidate_configs
    >>> grid = {"loss": ("mse", "mae"), "readout": ("mean", "set2set")}
    >>> len(candidate_configs("AtomSets-V0", MATBENCH_TASKS["matbench_steels"], grid))
    4
    >>> candidate_configs("AtomSets-V0", MATBENCH_TASKS["matbench_glass"], grid)
    [{'readout': 'mean'}, {'readout': 'set2set'}]
    >>> candidate_configs("AMM-style", MATBENCH_TASKS["matbench_glass"], grid)
    []
    """
    spec = MODELS[name]
    if not spec.is_network:
        return []
    grid = {k: v for k, v in selection.items()
            if not (k == "loss" and info.kind == "classification") and not (k == "readout" and not spec.has_readout)
            and not (k == "n_descriptors" and not spec.descriptors)}
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
    # descriptor columns join rho's input, which a stack does not have: such candidates fit one by one
    groups = stack_groups(models) if unsupported_data(F_train) is None else [[i] for i in range(len(models))]
    for group in groups:
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
