"""MatBench runner: the paper's models and an AutoMatminer-style baseline on official folds.

Every model is a scikit-learn ``Pipeline(featurizer -> estimator)``. For each fold the
featurizer runs on the training and test inputs (timed; the process-wide feature cache
means later models and folds reuse the frozen-encoder outputs), the estimator is fitted on
the training part (its own 90/10 split drives early stopping) and scored on the test part.
Results go to ``<out>/<task>.json`` with per-fold scores, times and test predictions.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, roc_auc_score
from sklearn.pipeline import Pipeline

from ._baseline import automatminer_style_pipeline
from ._estimators import AtomSetsClassifier, AtomSetsRegressor, MLPfClassifier, MLPfRegressor
from ._featurizers import (
    AtomicNumberSetFeaturizer,
    MEGNetCompositionFeaturizer,
    MEGNetElementSetFeaturizer,
    MEGNetSiteSetFeaturizer,
    MEGNetStructureFeaturizer,
)
from ._matbench import ANCHORS, load_matbench_task

__all__ = [
    "MODELS",
    "TrainingSettings",
    "classification_scores",
    "make_model",
    "model_label",
    "models_for",
    "run_matbench_task",
]

#: matbench's probability -> label threshold (``matbench.constants.CLF_THRESH``): a sample is
#: predicted positive when its probability is strictly above it.
MATBENCH_THRESHOLD = 0.5

LEAKAGE_NOTE = (
    "The parent model (Eform_MP_2019) was trained on 133,420 Materials Project formation "
    "energies (2019); structures in the mp_* tasks' test folds overlap its training set, so "
    "transfer-learned scores on those tasks are optimistic."
)


@dataclass
class TrainingSettings:
    """How the AtomSets-family estimators are trained in a benchmark run."""

    max_epochs: int = 1000
    patience: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    readout: str = "mean"
    loss: str = "auto"  # regressors: "mse" (auto), "mae" or "huber"
    n_estimators: int = 500  # random forest of the baseline


def _loss(kind, settings):
    return settings.loss if kind == "regression" else "auto"  # classifiers: cross-entropy


def _set_estimator(kind, settings, seed, **params):
    cls = AtomSetsRegressor if kind == "regression" else AtomSetsClassifier
    return cls(max_epochs=settings.max_epochs, patience=settings.patience, batch_size=settings.batch_size,
               lr=settings.lr, readout=settings.readout, loss=_loss(kind, settings), random_state=seed, **params)


def _mlpf(kind, settings, seed):
    cls = MLPfRegressor if kind == "regression" else MLPfClassifier
    return cls(max_epochs=settings.max_epochs, patience=settings.patience, batch_size=settings.batch_size,
               lr=settings.lr, loss=_loss(kind, settings), random_state=seed)


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
    return automatminer_style_pipeline(info.kind, info.input, extra_featurizers=extra,
                                       n_estimators=settings.n_estimators, random_state=seed)


def model_label(name, settings):
    """A model's name in the results: set models with the set2set readout are told apart."""
    if MODELS[name][1] == "sets" and settings.readout != "mean":
        return f"{name} ({settings.readout})"
    return name


def _model_settings(name, info, settings):
    """The training settings that matter for one model (the baselines ignore the net's)."""
    if MODELS[name][1].startswith("baseline"):
        return {"n_estimators": settings.n_estimators}
    out = asdict(settings)
    out.pop("n_estimators")
    if MODELS[name][1] == "mlpf":
        out.pop("readout")  # MLP-f reads one fixed-length vector: no readout
    out["loss"] = _loss(info.kind, settings)
    if info.kind == "classification":
        out["loss"] = "cross_entropy"
    elif out["loss"] == "auto":
        out["loss"] = "mse"
    return out


def classification_scores(y_true, proba):
    """A binary test fold's ROC-AUC two ways, from the positive class's probabilities.

    ``"rocauc"`` is ROC-AUC *as scored by matbench* (0.6, the package that scores leaderboard
    submissions): ``matbench.data_ops.score_array`` turns probabilities into labels at 0.5
    (positive when strictly above) before its first label metric and then computes every
    later metric, ROC-AUC included, on those labels (upstream issues materialsproject/matbench
    #137 and #181). On labels, ROC-AUC equals balanced accuracy, and that is the number every
    leaderboard entry reports, so it is the one to compare with the anchors.
    ``"rocauc_proba"`` is ROC-AUC from the probabilities themselves (the usual definition).
    ``"balanced_accuracy"`` is given for reference.

    The labels are the estimators' own ``predict`` (the most probable class, i.e. the same
    0.5 threshold); no threshold is tuned, on test or elsewhere.

    Examples
    --------
    >>> from sklearn_atomsets._benchmark import classification_scores
    >>> s = classification_scores([False, False, True, True], [0.1, 0.6, 0.4, 0.9])
    >>> s["rocauc"], s["rocauc_proba"]
    (0.5, 0.75)
    """
    y_true = np.asarray(y_true).astype(bool)
    proba = np.asarray(proba, dtype=float)
    labels = proba > MATBENCH_THRESHOLD
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
    scores = classification_scores(y_true, proba)
    return scores.pop("rocauc"), scores, proba


def run_matbench_task(task_name, models=None, folds=range(5), settings=None, out_dir=None, seed=0, log=print):
    """Run models on one MatBench task's official folds and return (and save) the results."""
    settings = settings or TrainingSettings()
    task = load_matbench_task(task_name)
    info = task.info
    names = models_for(info, models)
    result = {
        "task": task_name,
        "metric": info.metric,
        "unit": info.unit,
        "n_samples": len(task.inputs),
        "data_source": task.source,
        "approximate_structures": task.approximate,
        "settings": asdict(settings),
        "seed": seed,
        "anchors": ANCHORS.get(task_name, {}),
        "notes": [LEAKAGE_NOTE] if task_name.startswith("matbench_mp_") else [],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "models": {},
    }
    if out_dir is not None and (Path(out_dir) / f"{task_name}.json").is_file():
        # keep the models an earlier run recorded (each with its own settings); rerun ones are replaced
        earlier = json.loads((Path(out_dir) / f"{task_name}.json").read_text())
        if earlier.get("task") == task_name:
            labels = {model_label(name, settings) for name in names}
            result["models"] = {name: m for name, m in earlier.get("models", {}).items() if name not in labels}
    if task.approximate:
        result["notes"].append(
            "Structures rebuilt from 6-decimal text (../shared/data/matbench/approx); targets are exact."
        )
    for name in names:
        label = model_label(name, settings)
        folds_out = []
        for fold in folds:
            X_train, y_train, X_test, y_test = task.split(fold)
            pipe = make_model(name, info, settings, seed)
            featurize, model = pipe[:-1], pipe[-1]
            start = time.perf_counter()
            F_train = featurize.fit_transform(list(X_train), y_train.to_numpy())
            F_test = featurize.transform(list(X_test))
            t_featurize = time.perf_counter() - start
            start = time.perf_counter()
            model.fit(F_train, y_train.to_numpy())
            t_fit = time.perf_counter() - start
            score, other_scores, pred = _score(info, y_test.to_numpy(), model, F_test)
            entry = {"fold": fold, "score": score, **other_scores, "featurize_s": t_featurize, "fit_s": t_fit,
                     "n_train": len(y_train), "n_test": len(y_test),
                     "y_true": y_test.astype(float).tolist(), "y_pred": pred.tolist()}
            if hasattr(model, "best_epoch_"):
                entry["best_epoch"] = model.best_epoch_
                entry["validation_score"] = model.best_validation_score_  # inner 10% split: training data only
                entry["epochs_run"] = len(model.net_.history)
            folds_out.append(entry)
            log(f"{task_name} {label} fold {fold}: {info.metric} {score:.4f} "
                f"(featurize {t_featurize:.1f} s, fit {t_fit:.1f} s)")
        scores = [f["score"] for f in folds_out]
        result["models"][label] = {"mean": float(np.mean(scores)), "std": float(np.std(scores)),
                                  "settings": _model_settings(name, info, settings), "folds": folds_out}
        if out_dir is not None:  # after every model, so an interrupted run keeps what it finished
            out_dir = Path(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{task_name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def summary_lines(result):
    """Plain-text lines: each model's mean +- std next to the leaderboard anchors."""
    metric = result["metric"].upper() if result["metric"] == "mae" else "ROC-AUC as scored by matbench (labels)"
    lines = [f"{result['task']} ({metric}, mean +- std over {len(next(iter(result['models'].values()))['folds'])} folds)"]
    for name, m in result["models"].items():
        per_fold = " ".join(f"{f['score']:.4g}" for f in m["folds"])
        extra = ""
        if all("rocauc_proba" in f for f in m["folds"]):
            extra = f"   ROC-AUC from probabilities {np.mean([f['rocauc_proba'] for f in m['folds']]):.4f}"
        lines.append(f"  {name:<22} {m['mean']:10.4f} +- {m['std']:.4f}   folds: {per_fold}{extra}")
    for name, value in result["anchors"].items():
        lines.append(f"  {'[leaderboard] ' + name:<36} {value:10.4f}")
    return lines

