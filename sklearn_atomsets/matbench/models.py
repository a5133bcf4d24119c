"""The models a MatBench run can fit: each a ``Pipeline(featurizer -> estimator)`` named in :data:`MODELS`,
and the labels its results are written under."""

from __future__ import annotations

from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline

from .._baseline import automatminer_style_pipeline
from .._ensemble import AtomSetsEnsembleClassifier, AtomSetsEnsembleRegressor
from .._estimators import AtomSetsClassifier, AtomSetsRegressor, MLPfClassifier, MLPfRegressor
from .._featurizers import (
    AtomicNumberSetFeaturizer,
    MEGNetCompositionFeaturizer,
    MEGNetElementSetFeaturizer,
    MEGNetSiteSetFeaturizer,
    MEGNetStructureFeaturizer,
    SiteSetFeaturizer,
    StructureFeaturizer,
)
from .protocol import TrainingSettings, _loss, _lr_schedule

__all__ = ["MODELS", "make_model", "model_label", "models_for"]


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
