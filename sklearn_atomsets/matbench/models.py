"""The models a MatBench run can fit: each a ``Pipeline(featurizer -> estimator)`` named in :data:`MODELS`,
and the labels its results are written under."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from .._baseline import automatminer_style_pipeline
from .._ensemble import AtomSetsEnsembleClassifier, AtomSetsEnsembleRegressor
from .._estimators import AtomSetsClassifier, AtomSetsRegressor, MLPfClassifier, MLPfRegressor
from .._descriptors import SetsAndDescriptors
from .._featurizers import (
    AtomicNumberSetFeaturizer,
    CompositionFeaturizer,
    ElementSetFeaturizer,
    SiteSetFeaturizer,
    StructureFeaturizer,
)
from .._preset import descriptor_preset
from .._selection import MutualInfoSelector
from ..parents import DEFAULT_PARENT
from .protocol import TrainingSettings, _loss, _lr_schedule

__all__ = ["MODELS", "ModelLabel", "ModelSpec", "make_model", "model_label", "models_for", "parse_model_label"]


def _seed_ensemble(net, settings, seed):
    """``net`` itself, or with ``settings.ensemble`` > 1 a seed ensemble of it whose members'
    seeds are drawn from ``seed`` (so every candidate of a selection gets the same members' seeds)."""
    if settings.ensemble == 1:
        return net
    cls = AtomSetsEnsembleClassifier if is_classifier(net) else AtomSetsEnsembleRegressor
    return cls(net, n_estimators=settings.ensemble, random_state=seed)


def _network(spec, kind, settings, seed):
    """The estimator of a network spec for a task kind: AtomSets (its readout; for a descriptor model the
    NMI selection of ``settings.n_descriptors`` columns inside the net, so that its size is a setting) or
    MLP-f, a seed ensemble of it where ``settings.ensemble`` asks for one."""
    regression = kind == "regression"
    if spec.has_readout:
        cls = AtomSetsRegressor if regression else AtomSetsClassifier
        extra = {"readout": settings.readout}
        if spec.descriptors:
            extra["descriptor_selector"] = MutualInfoSelector(n_features=settings.n_descriptors)
    else:
        cls, extra = (MLPfRegressor if regression else MLPfClassifier), {}
    return _seed_ensemble(cls(
        max_epochs=settings.max_epochs, patience=settings.patience, batch_size=settings.batch_size, lr=settings.lr,
        loss=_loss(kind, settings), weight_decay=settings.weight_decay, dropout=settings.dropout,
        lr_schedule=_lr_schedule(settings), standardize_features=settings.standardize_features,
        random_state=seed, **extra), settings, seed)


#: What a spec's ``estimator`` can be: a set model with a readout (AtomSets), an MLP on the parent's
#: readout vector f (MLP-f), or the AutoMatminer-style random forest on matminer features.
ESTIMATORS = ("atomsets", "mlp", "forest")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the benchmark, as data: what it featurizes with, what it fits, where it applies.

    ``layers``: the parent outputs an AtomSets model's set rows are made of (``("V1",)``, or
    ``("V0", "V1")`` for rows that join two layers; empty for the atomic-number sets of the plain
    ``AtomSets``); MLP-f reads ``("f",)``. ``parent``: the frozen parent those come from.
    ``megnet_features``: a forest that also reads the default parent's readouts (``f`` and V1
    statistics of structures, the element-embedding statistics of compositions).
    ``descriptors``: an AtomSets model that also reads descriptor columns (issue 33): the
    :func:`~sklearn_atomsets.descriptor_preset` of its parent (matminer's standard descriptors and
    the parent's readouts) beside its sets, missing values imputed with the training fold's
    medians, and inside the net (``descriptor_selector``) the ``TrainingSettings.n_descriptors``
    most informative kept by :class:`~sklearn_atomsets.MutualInfoSelector`, both fitted on the
    training fold only.

    Examples
    --------
    >>> from sklearn_atomsets.matbench import MODELS
    >>> spec = MODELS["AtomSets-V2 [CHGNet-0.3.0]"]
    >>> spec.estimator, spec.layers, spec.parent, spec.is_network, spec.has_readout
    ('atomsets', ('V2',), 'CHGNet-0.3.0', True, True)
    """

    name: str
    estimator: str
    inputs: tuple = ("structure",)
    layers: tuple = ()
    parent: str = DEFAULT_PARENT
    megnet_features: bool = False
    descriptors: bool = False

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"{self.name}: estimator should be one of {ESTIMATORS}, got {self.estimator!r}.")
        if self.estimator == "mlp" and self.layers != ("f",):
            raise ValueError(f"{self.name}: an MLP reads the readout vector, layers=('f',), got {self.layers}.")
        if "composition" in self.inputs and self.estimator == "atomsets" and self.layers not in ((), ("V0",)):
            raise ValueError(f"{self.name}: compositions have element sets only (layers () or ('V0',)).")
        if self.descriptors and not self.has_readout:
            raise ValueError(f"{self.name}: descriptor columns join a set model's readout (estimator 'atomsets').")

    @property
    def is_network(self):
        """Whether it is a net (trained with an inner validation split, selectable, ensembled)."""
        return self.estimator != "forest"

    @property
    def has_readout(self):
        """Whether it is a set model, whose readout (mean or set2set) is a training choice."""
        return self.estimator == "atomsets"

    def featurizer(self, info):
        """The pipeline's featurizer for a task (``None`` for a forest: its pipeline has its own)."""
        if self.estimator == "forest":
            return None
        if self.estimator == "mlp":
            return StructureFeaturizer(layers=self.layers, parent=self.parent)
        if not self.layers:
            sets = AtomicNumberSetFeaturizer()
        elif info.input == "composition":
            sets = ElementSetFeaturizer(parent=self.parent)
        else:
            sets = SiteSetFeaturizer(self.layers[0] if len(self.layers) == 1 else self.layers, parent=self.parent)
        if self.descriptors:
            return SetsAndDescriptors(sets, descriptor_preset(info.input, parents=(self.parent,)))
        return sets


def _imputed_descriptors():
    """The descriptors of a ``SetsAndDescriptors`` frame with their missing values imputed (the training
    fold's medians), the set column passed through."""
    imputer = SimpleImputer(strategy="median", keep_empty_features=True)
    return ColumnTransformer([("descriptors", imputer, make_column_selector(dtype_include=np.number))],
                             remainder="passthrough", verbose_feature_names_out=False).set_output(transform="pandas")


def _specs():
    both = ("composition", "structure")
    yield ModelSpec("AtomSets", "atomsets", both)
    yield ModelSpec("AtomSets-V0", "atomsets", both, ("V0",))
    for layer in ("V1", "V2", "V3"):
        yield ModelSpec(f"AtomSets-{layer}", "atomsets", layers=(layer,))
    yield ModelSpec("AtomSets-V0+V1", "atomsets", layers=("V0", "V1"))
    # richer sets: the readout vector f of the parent appended to every site's V0+V1 row
    yield ModelSpec("AtomSets-V0+V1+f", "atomsets", layers=("V0", "V1", "f"))
    yield ModelSpec("MLP-f", "mlp", layers=("f",))
    # the same models on the CHGNet parent (optional [chgnet] extra); f is CHGNet's crystal feature
    chgnet = "CHGNet-0.3.0"
    yield ModelSpec(f"AtomSets-V0 [{chgnet}]", "atomsets", both, ("V0",), chgnet)
    for k in range(1, 5):
        yield ModelSpec(f"AtomSets-V{k} [{chgnet}]", "atomsets", layers=(f"V{k}",), parent=chgnet)
    yield ModelSpec(f"MLP-f [{chgnet}]", "mlp", layers=("f",), parent=chgnet)
    # the same structure models on the SevenNet parents (optional [sevennet] extra): their five blocks' invariant
    # channels; f is their mean over the sites (issue 31). SevenNet-0 is the plan's; the other checkpoints of
    # the sevenn wheel (l_max = 3; multi-fidelity through its PBE channel) are compared with it on inner validation
    for sevennet in ("SevenNet-0", "SevenNet-l3i5", "SevenNet-MF-0"):
        for k in range(1, 6):
            yield ModelSpec(f"AtomSets-V{k} [{sevennet}]", "atomsets", layers=(f"V{k}",), parent=sevennet)
        yield ModelSpec(f"MLP-f [{sevennet}]", "mlp", layers=("f",), parent=sevennet)
    # sets plus descriptors (issue 33): the paper's recommended layers with the preset beside them
    yield ModelSpec("AtomSets-V0 + descriptors", "atomsets", both, ("V0",), descriptors=True)
    yield ModelSpec("AtomSets-V1 + descriptors", "atomsets", layers=("V1",), descriptors=True)
    # and on the parent whose sets won dielectric's and phonons' first-pass inner validation (SevenNet-0: V2 on
    # dielectric, V1 on phonons), the preset's readouts then SevenNet-0's
    for k in (1, 2):
        yield ModelSpec(f"AtomSets-V{k} + descriptors [SevenNet-0]", "atomsets", layers=(f"V{k}",),
                        parent="SevenNet-0", descriptors=True)
    yield ModelSpec("AMM-style", "forest", both)
    yield ModelSpec("AMM-style + MEGNet", "forest", both, megnet_features=True)


#: Every model a run can name, as :class:`ModelSpec`. A model on another parent is one more spec
#: (its name says the parent in brackets).
MODELS = {spec.name: spec for spec in _specs()}


def models_for(info, names=None):
    """The models of ``names`` (default all) that apply to a task's input kind."""
    names = list(MODELS) if names is None else list(names)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"Unknown models {unknown}; choose from {list(MODELS)}.")
    return [n for n in names if info.input in MODELS[n].inputs]


def make_model(name, info, settings=None, seed=0):
    """The ``Pipeline(featurizer -> estimator)`` of a named model for a task."""
    settings = settings or TrainingSettings()
    spec = MODELS[name]
    if info.input not in spec.inputs:
        raise ValueError(f"{name} does not apply to {info.input} inputs.")
    if spec.is_network:
        impute = [("impute", _imputed_descriptors())] if spec.descriptors else []
        return Pipeline([("featurize", spec.featurizer(info)), *impute,
                         ("model", _network(spec, info.kind, settings, seed))])
    extra = []
    if spec.megnet_features:
        extra = (
            [CompositionFeaturizer()]
            if info.input == "composition"
            else [StructureFeaturizer(layers=("f", "V1"), stats=("mean", "std"))]
        )
    # every core for the forest and the selector, as the runner always ran them (results unchanged)
    return automatminer_style_pipeline(info.kind, info.input, extra_featurizers=extra,
                                       n_estimators=settings.n_estimators, random_state=seed, n_jobs=-1)


THRESHOLD_SUFFIX = " (validation threshold)"  # network classifiers whose threshold was chosen on inner validation


@dataclass(frozen=True)
class ModelLabel:
    """What a results label says (:func:`model_label`, read back by :func:`parse_model_label`)."""

    model: str  # the name in MODELS
    readout: str | None = None  # a set model's fixed readout when it is not the mean's and not selected
    ensemble: int = 1  # nets in the seed ensemble
    threshold: bool = False  # a network classifier whose decision threshold was chosen on inner validation

    @property
    def spec(self):
        return MODELS[self.model]


def model_label(name, settings, selection=None, kind=None):
    """A model's name in the results: set models with the set2set readout are told apart
    (unless the readout is one of the selection's choices, made per fit), seed ensembles
    of K nets end in `` xK`` (``settings.ensemble``), and network classifiers whose decision
    threshold was chosen on inner validation (``kind="classification"``) in `` (validation threshold)``.

    Examples
    --------
    >>> from sklearn_atomsets.matbench import TrainingSettings, model_label, parse_model_label
    >>> label = model_label("AtomSets-V1 [CHGNet-0.3.0]", TrainingSettings(readout="set2set", ensemble=5))
    >>> label
    'AtomSets-V1 [CHGNet-0.3.0] (set2set) x5'
    >>> parse_model_label(label)
    ModelLabel(model='AtomSets-V1 [CHGNet-0.3.0]', readout='set2set', ensemble=5, threshold=False)
    """
    spec = MODELS[name]
    label = name
    if spec.has_readout and settings.readout != "mean" and "readout" not in (selection or {}):
        label = f"{name} ({settings.readout})"
    if spec.is_network and settings.ensemble > 1:
        label = f"{label} x{settings.ensemble}"
    if _tunes_threshold(name, settings, kind):
        label = f"{label}{THRESHOLD_SUFFIX}"
    return label


def parse_model_label(label):
    """The :class:`ModelLabel` of a results label that :func:`model_label` wrote; ``ValueError``
    names a label that is not one (a report's own rows, a model no longer in :data:`MODELS`)."""
    rest, threshold = (label[:-len(THRESHOLD_SUFFIX)], True) if label.endswith(THRESHOLD_SUFFIX) else (label, False)
    name, readout, members = re.fullmatch(r"(.+?)(?: \((set2set)\))?(?: x(\d+))?", rest).groups()
    ensemble = int(members or 1)
    spec = MODELS.get(name)
    if (spec is None or (readout and not spec.has_readout) or (members and (ensemble < 2 or not spec.is_network))
            or (threshold and not spec.is_network)):
        raise ValueError(f"{label!r} is not a model label of the runner (models: {list(MODELS)}).")
    return ModelLabel(name, readout, ensemble, threshold)


def _tunes_threshold(name, settings, kind):
    return kind == "classification" and settings.threshold == "validation" and MODELS[name].is_network
