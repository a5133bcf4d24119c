"""Results: the leaderboard's scores of a fold, the schema of the result files (settings as recorded,
per-model summaries over seeds and folds), merging runs made in parts, and the printed summary."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import numpy as np
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, roc_auc_score

from .models import MODELS
from .protocol import _loss

__all__ = ["VALIDATION_UNITS", "classification_scores", "merge_results", "summarise_fits", "summary_lines"]


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
    out.pop("n_descriptors")  # a setting of the models with descriptors only (_model_settings)
    return out


def _model_settings(name, info, settings):
    """The training settings that matter for one model (the baselines ignore the net's)."""
    if not MODELS[name].is_network:
        return {"n_estimators": settings.n_estimators}  # never an ensemble
    out = _settings_record(settings)
    out.pop("n_estimators")
    if info.kind == "regression":
        out.pop("threshold", None)
    if not MODELS[name].has_readout:
        out.pop("readout")  # MLP-f reads one fixed-length vector: no readout
    if MODELS[name].descriptors:
        out["n_descriptors"] = settings.n_descriptors
    out["loss"] = _loss(info.kind, settings)
    if info.kind == "classification":
        out["loss"] = "cross_entropy"
    elif out["loss"] == "auto":
        out["loss"] = "mse"
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
    >>> from sklearn_atomsets.matbench import classification_scores
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
    >>> from sklearn_atomsets.matbench import summarise_fits
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


def _write_atomically(path, data):
    """Write ``data`` (bytes) to ``path`` whole or not at all: written beside it, then moved into
    place, so a process killed while writing leaves the old file (or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
