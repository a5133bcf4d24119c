"""AtomSets estimators: scikit-learn estimators that train a skorch-wrapped AtomSetsModule.

Each estimator is a plain scikit-learn estimator whose ``__init__`` only stores its
parameters (so ``clone``, ``get_params``/``set_params``, ``GridSearchCV`` and pickling work
as for any scikit-learn model). ``fit`` validates the input, packs all sets once, and then
configures and trains a ``skorch`` net: the module, the optimizer (Adam), the criterion
(MSE / cross-entropy), the batch iterator and the inner validation split are parameters of
that net, the validation score is skorch's ``EpochScoring`` (on the predictions of the
validation pass, no second forward pass), and early stopping with restoration of the best
epoch is skorch's own ``EarlyStopping`` callback. The fitted net is ``net_``, its PyTorch
module ``module_``.

Hand-written parts that stay, and why: ``_PackedDataset`` / ``_SetBatches`` cut a batch of
variable-size sets with one gather from arrays packed once (``PackedSets.rows_of``), where
torch's ``DataLoader`` with a collate function would build every batch from per-material
tensors in a Python loop (the difference between minutes and hours on MatBench).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import numbers
import time
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import _check_feature_names, _check_sample_weight, check_is_fitted, column_or_1d
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, EpochScoring, LRScheduler
from skorch.dataset import ValidSplit
from skorch.utils import to_numpy

from ._atomsets import ACTIVATIONS, READOUTS, AtomSetsModule
from ._descriptors import describe_missing, missing_descriptors, split_descriptors
from ._sets import _from_pandas, _is_table, _take, as_packed_sets, find_missing, merge_equal_rows, row_table
from ._threads import torch_threads

#: Regression losses (on standardised targets); classifiers train on cross-entropy.
LOSSES = {"mse": torch.nn.MSELoss, "mae": torch.nn.L1Loss, "huber": torch.nn.HuberLoss}

__all__ = ["AtomSetsClassifier", "AtomSetsRegressor", "MLPfClassifier", "MLPfRegressor"]


#: Merge equal rows within each set and run phi once per distinct row of the dataset (both
#: exact for the AtomSets readouts; see ``_sets.merge_equal_rows``). Off only to measure.
_MERGE_ROWS = True

#: Adam and AdamW run as torch's fused kernel (one call per step for all parameters instead
#: of about ten ops per parameter tensor) where the device supports it: the same update up to
#: rounding; a mean-readout training step about 1.35x faster on the CPU
#: (benchmarks/training_step_speed.py). Off only to measure.
_FUSED_ADAM = True


@functools.lru_cache(maxsize=None)
def _fused_supported(optimizer, device):
    """Whether ``optimizer(..., fused=True)`` works for parameters on ``device`` (torch >= 2.4 on the CPU)."""
    if optimizer not in (torch.optim.Adam, torch.optim.AdamW):
        return False
    try:
        optimizer([torch.zeros(1, device=device, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


#: A dataset-wide table of distinct rows is used when it has at most this fraction of the
#: rows (V0 and atomic numbers: <= 94 elements; site sets rarely repeat across crystals).
_TABLE_FRACTION = 0.25


class _SetBatch:
    """A batch ``(X, y)``, unpacked like a pair; its ``len`` is its number of sets.

    skorch sizes a batch by the common length of everything in ``X`` (and weights the
    epoch's mean loss by it); ``X`` holds rows, or a table and an index of different
    lengths, so the batch says how many sets (samples) it holds itself.
    """

    __slots__ = ("X", "y")

    def __init__(self, X, y):
        self.X, self.y = X, y

    def __iter__(self):
        return iter((self.X, self.y))

    def __getitem__(self, i):
        return (self.X, self.y)[i]

    def __len__(self):
        return len(self.y)


class _PackedDataset(torch.utils.data.Dataset):
    """All sets packed once; ``batch(sets)`` gathers the rows of a batch without a loop.

    Equal rows of a set are merged (weights summed) and, when the whole dataset has few
    distinct rows, a batch carries the distinct rows it uses plus an index, so phi runs
    once per distinct row. ``X`` (material positions) and ``y`` are exposed the way
    skorch's validation split and scoring expect of a dataset.
    """

    def __init__(self, packed, y=None, sample_weight=None, descriptors=None):
        self.index = None  # with an index, features is the table of distinct rows
        features = packed.features
        if _MERGE_ROWS:
            packed = merge_equal_rows(packed)
            features = packed.features
            sample = features[np.random.default_rng(0).choice(len(features), min(len(features), 2000), replace=False)]
            if len(row_table(sample)[0]) <= _TABLE_FRACTION * len(sample):  # worth a table (V0, elements)
                table, index = row_table(features)
                if len(table) <= _TABLE_FRACTION * len(index):
                    features, self.index = table, index
        self.packed = packed
        # torch refuses to share read-only memory (a memory-mapped X, say) without a warning
        self.features = torch.from_numpy(np.require(features, requirements="W"))
        self.weights = torch.from_numpy(np.require(packed.weights, requirements="W"))
        self.X = np.arange(packed.n_sets)
        self.y = y
        # per-sample loss weights (float32), travelling in each batch's X as "sample_weight"
        self.sample_weight = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float32)
        # one fixed-length descriptor row per set (rho's extra input), or None
        self.descriptors = None if descriptors is None else torch.from_numpy(np.asarray(descriptors, dtype=np.float32))

    def __len__(self):
        return self.packed.n_sets

    def __getitem__(self, i):
        return self.batch(np.array([i]))

    def batch(self, sets):
        rows, segment = self.packed.rows_of(sets)
        X = {"weights": self.weights.index_select(0, torch.from_numpy(rows)), "segment": torch.from_numpy(segment)}
        if self.index is None:
            X["features"] = self.features.index_select(0, torch.from_numpy(rows))
        elif len(self.features) <= len(rows):  # a small table: phi on all of it
            X["features"] = self.features
            X["index"] = torch.from_numpy(self.index[rows])
        else:
            used, index = np.unique(self.index[rows], return_inverse=True)
            X["features"] = self.features.index_select(0, torch.from_numpy(used))
            X["index"] = torch.from_numpy(index.reshape(-1))
        if self.descriptors is not None:
            X["descriptors"] = self.descriptors.index_select(0, torch.from_numpy(np.asarray(sets, dtype=np.int64)))
        if self.sample_weight is not None:
            X["sample_weight"] = torch.from_numpy(self.sample_weight[sets])
        y = torch.zeros(len(sets)) if self.y is None else torch.from_numpy(self.y[sets])
        return _SetBatch(X, y)


class _SetBatches:
    """skorch iterator over a (subset of a) ``_PackedDataset``, one contiguous gather a batch."""

    def __init__(self, dataset, batch_size=128, shuffle=False, seed=None):
        if isinstance(dataset, torch.utils.data.Subset):
            self.base, self.sets = dataset.dataset, np.asarray(dataset.indices)
        else:
            self.base, self.sets = dataset, np.arange(len(dataset))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return -(-len(self.sets) // self.batch_size)

    def __iter__(self):
        order = self.rng.permutation(self.sets) if self.shuffle else self.sets
        for start in range(0, len(order), self.batch_size):
            yield self.base.batch(order[start : start + self.batch_size])


class _FiniteLoss(Callback):
    """Stop a fit whose training loss is no longer finite, with an error, instead of
    returning a model whose every prediction is NaN (a diverging fit, e.g. ``lr=1e10``)."""

    def on_batch_end(self, net, batch=None, training=False, loss=None, **kwargs):
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else loss
        if training and value is not None and not math.isfinite(value):
            raise FloatingPointError(
                f"The training loss became {value} in epoch {len(net.history)}: the fit diverged "
                f"(is lr={net.lr} too large?) or the training data hold non-finite values. No model is returned."
            )


class _AtomSetsNet(NeuralNet):
    """skorch's ``NeuralNet`` with per-sample loss weights, by skorch's own recipe: the weights
    travel in each batch's ``X`` (key ``"sample_weight"``), the criterion is built with
    ``reduction="none"``, and ``get_loss`` takes their weighted mean. Only the two narrow hooks
    are overridden; without weights in ``X`` both are skorch's."""

    def infer(self, x, **fit_params):
        if isinstance(x, Mapping) and "sample_weight" in x:
            x = {key: value for key, value in x.items() if key != "sample_weight"}  # not a module input
        return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if not isinstance(X, Mapping) or "sample_weight" not in X:
            return loss
        # sum_i w_i l_i / sum_i w_i over the batch (l_i: sample i's loss, averaged over its targets), so
        # an integer weight counts a sample that many times; a batch of zero weights gives 0, not NaN
        per_sample = loss.reshape(len(loss), -1).mean(dim=1)
        weights = X["sample_weight"].to(per_sample.device)
        return (weights * per_sample).sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)


class _PreparedFit(NamedTuple):
    """What ``_AtomSetsBase._prepare_fit`` hands to training."""

    net: NeuralNet
    dataset: _PackedDataset
    y_for_split: np.ndarray | None
    seed: int
    warm_weights: dict | None
    missing: np.ndarray
    score: object  # the validation score: score(net, X_valid, y_valid)


def _require_y(estimator, y):
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target y is None.")


# Validation scores for skorch's EpochScoring(use_caching=True): ``net.forward`` there
# returns the predictions of the validation pass that skorch already ran (moved to the CPU),
# and ``y`` is the validation targets as skorch batched them. skorch's ``to_numpy`` brings any
# tensor to the host, whatever device it was left on.
def _validation_weights(X):
    """The loss weights of the validation samples ``X`` (skorch's Subset of a ``_PackedDataset``,
    in the order ``iterator_valid`` batched them), or None for an unweighted fit."""
    if isinstance(X, torch.utils.data.Subset):
        weights = X.dataset.sample_weight
        weights = None if weights is None else weights[np.asarray(X.indices)]
    else:
        weights = getattr(X, "sample_weight", None)
    if weights is not None and not weights.sum() > 0:
        raise ValueError(
            "The samples of the inner validation split all have sample weight 0, so early stopping has "
            "nothing to score: give them weight, use another random_state, or validation_fraction=None."
        )
    return weights


def _mae_in_target_units(net, X, y, scale):
    """MAE of standardised predictions, in the units of the original target (x target_scale_);
    weighted by the validation samples' weights in a weighted fit."""
    y_pred = to_numpy(net.forward(X, training=False)).reshape(len(y), -1)
    errors = (np.abs(y_pred - to_numpy(y).reshape(len(y), -1)) * scale).mean(axis=1)
    return float(np.average(errors, weights=_validation_weights(X)))


def _roc_auc(net, X, y):
    proba = to_numpy(torch.softmax(net.forward(X, training=False), dim=-1))
    y = to_numpy(y)
    weights = _validation_weights(X)
    if proba.shape[1] == 2:
        return roc_auc_score(y, proba[:, 1], sample_weight=weights)
    return roc_auc_score(y, proba, multi_class="ovr", labels=np.arange(proba.shape[1]), sample_weight=weights)


def _positions(positions, limit=10):
    shown = ", ".join(str(int(i)) for i in positions[:limit])
    return shown + (f", ... ({len(positions) - limit} more)" if len(positions) > limit else "")


def _readout_ok(value):
    names = (value,) if isinstance(value, str) else tuple(value)
    return len(names) > 0 and set(names) <= set(READOUTS) and len(set(names)) == len(names)


def _widths_ok(value):
    return isinstance(value, (tuple, list)) and all(isinstance(v, numbers.Integral) and v > 0 for v in value)


#: Prefixes of the skorch parameters an estimator passes through to its net (skorch's routing:
#: ``optimizer__momentum``, ``iterator_train__batch_size``, ``callbacks__early_stopping__threshold``,
#: ``criterion__delta`` ...), and skorch's ``train_split`` (e.g. ``ValidSplit(0.1, random_state=0)``:
#: one inner validation split whatever ``random_state``, which an ensemble's members share to
#: calibrate on). The module is configured by the estimator's own parameters.
ROUTED_PREFIXES = ("optimizer__", "criterion__", "iterator_train__", "iterator_valid__", "callbacks__", "train_split")


def _routed(params):
    return {name: value for name, value in params.items() if name.startswith(ROUTED_PREFIXES)}


class _AtomSetsBase(BaseEstimator):
    _parameter_constraints = {
        "n_neurons": [callable, "array-like"],
        "n_neurons_final": [callable, "array-like"],
        "readout": [StrOptions(set(READOUTS)), tuple, list],
        "n_set2set_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "embedding_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_elements": [Interval(numbers.Integral, 2, None, closed="left")],
        "standardize_features": ["boolean"],
        "optimizer": [callable],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "lr_schedule": [StrOptions({"plateau"}), None],
        "loss": [StrOptions(set(LOSSES) | {"auto", "cross_entropy"})],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "patience": [Interval(numbers.Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither"), None],
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "n_jobs": [numbers.Integral, None],
        "handle_missing": [StrOptions({"error", "ignore"})],
        "descriptor_selector": [HasMethods(["fit", "transform"]), None],
        "verbose": ["verbose"],
        "callbacks": [list, tuple, None],
        "warm_start": ["boolean"],
    }

    def __init__(
        self,
        n_neurons=(64, 64),
        n_neurons_final=(64, 64),
        readout="mean",
        n_set2set_steps=3,
        activation="relu",
        dropout=0.0,
        embedding_dim=32,
        n_elements=95,
        standardize_features=False,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        weight_decay=0.0,
        lr_schedule=None,
        loss="auto",
        batch_size=128,
        max_epochs=1000,
        patience=200,
        validation_fraction=0.1,
        random_state=None,
        device="cpu",
        n_jobs=None,
        handle_missing="error",
        descriptor_selector=None,
        verbose=0,
        callbacks=None,
        warm_start=False,
        **kwargs,
    ):
        self.n_neurons = n_neurons
        self.n_neurons_final = n_neurons_final
        self.readout = readout
        self.n_set2set_steps = n_set2set_steps
        self.activation = activation
        self.dropout = dropout
        self.embedding_dim = embedding_dim
        self.n_elements = n_elements
        self.standardize_features = standardize_features
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.loss = loss
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.n_jobs = n_jobs
        self.handle_missing = handle_missing
        self.descriptor_selector = descriptor_selector
        self.verbose = verbose
        self.callbacks = callbacks
        self.warm_start = warm_start
        for name, value in kwargs.items():  # stored as given, like every parameter; checked in fit
            setattr(self, name, value)

    def _extra_params(self):
        """The parameters given through ``**kwargs`` (fitted attributes end in ``_``)."""
        named = set(self._get_param_names())
        return {k: v for k, v in vars(self).items() if k not in named and not k.endswith("_") and not k.startswith("_")}

    def get_params(self, deep=True):
        """The estimator's parameters, with the skorch-routed ones (``optimizer__momentum`` ...)."""
        params = super().get_params(deep=deep)
        params.update(self._extra_params())
        return params

    def set_params(self, **params):
        """Set parameters; a skorch-routed one (``optimizer__momentum=0.9`` ...) may be new."""
        routed = _routed(params)
        super().set_params(**{name: value for name, value in params.items() if name not in routed})
        for name, value in routed.items():
            setattr(self, name, value)
        return self

    # -- validation -----------------------------------------------------------------------
    def _check_params(self):
        self._validate_params()
        unknown = sorted(set(self._extra_params()) - set(_routed(self._extra_params())))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected parameter(s) {unknown}; parameters for the skorch net "
                f"take one of the prefixes {list(ROUTED_PREFIXES)}."
            )
        for name in ("n_neurons", "n_neurons_final"):
            if not _widths_ok(getattr(self, name)):
                raise ValueError(f"{name} must be a tuple of positive integers, got {getattr(self, name)!r}.")
        if not _readout_ok(self.readout):
            raise ValueError(f"readout must be 'mean', 'set2set' or a tuple of both, got {self.readout!r}.")
        allowed = ("auto", *LOSSES) if isinstance(self, RegressorMixin) else ("auto", "cross_entropy")
        if self.loss not in allowed:
            raise ValueError(f"{type(self).__name__} cannot train with loss={self.loss!r}; choose from {list(allowed)}.")
        try:  # a CPU-only torch fails on "cuda" only at first use, with a bare AssertionError
            torch.empty(0, device=self.device)
        except (AssertionError, RuntimeError, ValueError) as exc:
            raise ValueError(
                f"device={self.device!r} cannot be used with this torch ({torch.__version__}; CUDA available: "
                f"{torch.cuda.is_available()}): {exc}. Pass device='cpu' or a device this torch has."
            ) from None

    def _split_missing(self, X, y=None, fitting=False, descriptors=None, descriptor_names=None):
        """``X`` (and ``y``) without the samples that have no set, and the positions of those.

        With ``handle_missing="error"`` nothing is dropped: a row that a featurizer's
        ``transform`` marked as failed raises here with the featurizer's reason; other
        missing values are refused by the usual validation. A sample with a NaN among its
        ``descriptors`` counts as one without a set (it raises, or is dropped); the caller
        drops the returned positions from ``descriptors``.
        """
        positions, reasons = find_missing(X)
        gaps = np.zeros(0, dtype=np.int64) if descriptors is None else missing_descriptors(descriptors)
        if len(gaps) and self.handle_missing == "ignore":
            positions = np.union1d(positions, gaps).astype(np.int64)
        if not len(positions) and not len(gaps):
            return X, y, positions
        if self.handle_missing == "error":
            if reasons:
                first = min(reasons)
                others = f" ({len(positions)} of the {len(_from_pandas(X))} samples have no set.)" if len(positions) > 1 else ""
                raise ValueError(
                    f"Sample {first} of X has no set: the featurizer could not featurize it ({reasons[first]}).{others} "
                    "Drop or fix such rows, or pass handle_missing='ignore' to fit without them."
                )
            if _is_table(_from_pandas(X)):  # an all-NaN row: not the bare "Input contains NaN."
                first = int(positions[0])
                others = f" ({len(positions)} of the {len(_from_pandas(X))} samples have none.)" if len(positions) > 1 else ""
                raise ValueError(
                    f"Sample {first} has no set (its row of X is all NaN): a row the featurizer could not "
                    f"handle?{others} Drop or fix such rows, or pass handle_missing='ignore' to fit without "
                    "them (predict gives them the training prior)."
                )
            if len(gaps):
                raise ValueError(describe_missing(descriptors, gaps, descriptor_names))
            return X, y, positions[:0]
        X = _from_pandas(X)
        n = X.shape[0] if hasattr(X, "shape") else len(X)
        if y is not None and len(y) != n:
            raise ValueError(f"X has {n} samples but y has {len(y)}.")
        keep = np.setdiff1d(np.arange(n), positions)
        if fitting and not len(keep):
            raise ValueError(f"None of the {n} samples of X has a set: nothing to fit.")
        what = "fit skips them" if fitting else "their prediction is the training prior"
        nothing = "no set or NaN descriptors" if descriptors is not None else "no set"
        warnings.warn(
            f"{type(self).__name__}: {len(positions)} of {n} samples have {nothing} (rows the featurizer could "
            f"not featurize), at positions {_positions(positions)}; {what} (handle_missing='ignore').",
            UserWarning,
            stacklevel=3 if fitting else 4,  # the user's call of fit / predict
        )
        return _take(X, keep), (None if y is None else _safe_indexing(y, keep)), positions

    def _pack(self, X, fitting):
        packed = as_packed_sets(X)
        if fitting:
            self.input_kind_ = "atomic_numbers" if packed.n_features == 0 else "features"
            if packed.n_features:
                self.n_features_in_ = packed.n_features
        else:
            kind = "atomic_numbers" if packed.n_features == 0 else "features"
            if kind != self.input_kind_:
                raise ValueError(f"The estimator was fitted on sets of {self.input_kind_}, not {kind}.")
            if packed.n_features and packed.n_features != self.n_features_in_:
                raise ValueError(
                    f"X has {packed.n_features} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input (features per row of each set)."
                )
        if self.input_kind_ == "atomic_numbers" and packed.features.max() >= self.n_elements:
            raise ValueError(f"Atomic number {packed.features.max()} is outside the embedding (n_elements={self.n_elements}).")
        return packed

    # -- training -------------------------------------------------------------------------
    def _fit(self, X, y, sample_weight=None):
        """The fit both estimators share; ``_encode_targets`` is what differs (scaled targets and
        an L1/L2/Huber loss, or class codes, cross-entropy and a stratified split)."""
        fit = self._prepare_fit(X, y, sample_weight)
        self.net_ = self._train(fit.net, fit.dataset, fit.y_for_split, fit.seed, fit.warm_weights)
        self._record_validation_split(fit.dataset, fit.y_for_split, fit.missing)
        return self

    def _prepare_fit(self, X, y, sample_weight=None):
        """Everything of ``fit`` before training: checks, packing, target encoding, the configured
        (untrained) net; also the hook by which ``_stacked`` trains several members at once."""
        self._check_params()
        _require_y(self, y)
        warm = bool(self.warm_start) and hasattr(self, "net_")
        previous = self._warm_state() if warm else None
        _check_feature_names(self, X, reset=not warm)
        X, descriptors, descriptor_names = split_descriptors(X)
        self.n_descriptors_in_ = 0 if descriptors is None else descriptors.shape[1]
        if sample_weight is not None:
            # sklearn's checks: length, finite, non-negative, not all zero
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        X, y, missing = self._split_missing(X, y, fitting=True, descriptors=descriptors,
                                            descriptor_names=descriptor_names)
        if descriptors is not None:
            descriptors = self._select_descriptors(np.delete(descriptors, missing, axis=0), y, fitting=previous is None)
        if sample_weight is not None and len(missing):
            sample_weight = np.delete(sample_weight, missing)
            if not sample_weight.any():
                raise ValueError("Sample weights must contain at least one non-zero number among the samples with a set.")
        packed = self._pack(X, fitting=True)
        if previous is not None:
            self._check_warm_input(previous)
        targets, n_outputs, criterion, score, y_for_split, loss_weights = self._encode_targets(
            y, packed.n_sets, sample_weight, previous
        )
        if previous is None:
            self._fit_feature_scaling(packed, sample_weight)
            self._fit_descriptor_scaling(descriptors, sample_weight)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        net = self._net(n_outputs, criterion, score, seed, stratified=y_for_split is not None,
                        weighted=loss_weights is not None)
        dataset = _PackedDataset(packed, targets, loss_weights, descriptors)
        return _PreparedFit(net, dataset, y_for_split, seed, None if previous is None else previous["module"],
                            missing, score)

    # -- warm start -------------------------------------------------------------------------
    _DESCRIPTOR_SCALING = ("descriptor_mean_", "descriptor_scale_", "descriptor_min_", "descriptor_max_")
    _WARM_KEPT = ("input_kind_", "n_features_in_", "feature_mean_", "feature_scale_", "n_descriptors_in_",
                  *_DESCRIPTOR_SCALING)

    def _warm_state(self):
        """What a ``warm_start`` fit keeps of the previous fit: its trained weights and the
        standardisations (so the net keeps computing the same function), the input kind and
        width and (classifiers) the classes or (regressors) the target scaling."""
        state = {name: getattr(self, name) for name in self._WARM_KEPT + self._WARM_KEPT_TARGETS if hasattr(self, name)}
        state["module"] = copy.deepcopy(self.net_.module_.state_dict())
        return state

    def _check_warm_input(self, previous):
        for name in ("input_kind_", "n_features_in_", "n_descriptors_in_"):
            if getattr(self, name, None) != previous.get(name):
                raise ValueError(
                    f"warm_start=True continues the previous fit, on {previous.get(name)!r} ({name}), but this X "
                    f"gives {getattr(self, name, None)!r}. Set warm_start=False to fit afresh."
                )
        self.feature_mean_, self.feature_scale_ = previous["feature_mean_"], previous["feature_scale_"]
        for name in self._DESCRIPTOR_SCALING:  # absent from a fit of an older version: None
            setattr(self, name, previous.get(name))

    def _fit_feature_scaling(self, packed, sample_weight=None):
        """``feature_mean_`` / ``feature_scale_``: with ``standardize_features``, every feature's mean
        and standard deviation over all rows of the training sets (sklearn's ``StandardScaler``:
        a constant feature keeps scale 1; each row weighted by its sample's ``sample_weight``);
        None otherwise and for sets of atomic numbers."""
        self.feature_mean_ = self.feature_scale_ = None
        if self.standardize_features and self.input_kind_ == "features":
            row_weight = None if sample_weight is None else np.repeat(sample_weight, packed.lengths)
            scaler = StandardScaler().fit(packed.features.astype(np.float64), sample_weight=row_weight)
            self.feature_mean_, self.feature_scale_ = scaler.mean_, scaler.scale_

    def _select_descriptors(self, descriptors, y=None, fitting=False):
        """The descriptor columns the net reads: all of them, or with ``descriptor_selector`` those it
        keeps, the selector (a clone) fitted on the training samples (``fitting``: not on a warm start,
        which keeps the previous fit's choice); ``descriptor_selector_`` is the fitted one."""
        if fitting:
            self.descriptor_selector_ = None
            if self.descriptor_selector is not None:
                self.descriptor_selector_ = clone(self.descriptor_selector).fit(descriptors, y)
        selector = getattr(self, "descriptor_selector_", None)
        if selector is None:
            return descriptors
        kept = np.asarray(selector.transform(descriptors), dtype=np.float64)
        if kept.ndim != 2 or kept.shape[0] != descriptors.shape[0] or kept.shape[1] == 0:
            raise ValueError(f"descriptor_selector {selector!r} gave {kept.shape} for {descriptors.shape} descriptors: "
                             "it should keep at least one column of every sample.")
        return kept

    def _fit_descriptor_scaling(self, descriptors, sample_weight=None):
        """``descriptor_mean_`` / ``descriptor_scale_``: each descriptor's (weighted) mean and standard
        deviation over the training samples (sklearn's ``StandardScaler``: a constant one keeps
        scale 1), applied inside the module; None without descriptors. Descriptors are always
        standardised: matminer's columns span many orders of magnitude (densities, volumes, counts).

        ``descriptor_min_`` / ``descriptor_max_``: each descriptor's range over the training samples
        (those of positive weight); the module clips a sample's descriptors to it before standardising.
        A column that is almost constant in training has a tiny scale, and one sample far outside
        it would otherwise enter rho millions of standard deviations out and give an absurd
        prediction (expt_gap: MagpieData minimum GSmagmom, below 2.3e-5 in every training row of a
        fold, is 1.55 for Fe9Co7, 2.9e6 std out; its predicted gap was 7221 eV)."""
        self.descriptor_mean_ = self.descriptor_scale_ = self.descriptor_min_ = self.descriptor_max_ = None
        if descriptors is not None:
            scaler = StandardScaler().fit(descriptors, sample_weight=sample_weight)
            self.descriptor_mean_, self.descriptor_scale_ = scaler.mean_, scaler.scale_
            seen = descriptors if sample_weight is None else descriptors[np.asarray(sample_weight) > 0]
            self.descriptor_min_, self.descriptor_max_ = seen.min(axis=0), seen.max(axis=0)

    def _net(self, n_outputs, criterion, score, seed, stratified, weighted=False):
        score_name, lower_is_better = self._score_name, self._lower_is_better
        callbacks = []
        train_split = None
        if self.validation_fraction:
            train_split = ValidSplit(self.validation_fraction, stratified=stratified, random_state=seed)
            callbacks = [
                ("valid_score", EpochScoring(score, lower_is_better=lower_is_better, name=score_name, use_caching=True)),
                *self._lr_scheduler(score_name, lower_is_better),
                ("early_stopping", EarlyStopping(
                    monitor=score_name, patience=self.patience, lower_is_better=lower_is_better,
                    threshold=0.0, load_best=True,  # its messages print at skorch's verbose only
                )),
            ]
        elif self.lr_schedule is not None:
            callbacks = list(self._lr_scheduler("train_loss", True))
        # the user's callbacks (copies: fit leaves its parameters as they are) go after the scoring and
        # the schedule, so they can read this epoch's score, and before early stopping ends the epoch
        n_before = 1 + bool(self.lr_schedule) if self.validation_fraction else len(callbacks)
        callbacks[n_before:n_before] = copy.deepcopy(list(self.callbacks or ()))
        own = dict(
            module=AtomSetsModule,
            module__n_features=self.n_features_in_ if self.input_kind_ == "features" else None,
            module__n_outputs=n_outputs,
            module__n_neurons=tuple(self.n_neurons),
            module__n_neurons_final=tuple(self.n_neurons_final),
            module__readout=self.readout if isinstance(self.readout, str) else tuple(self.readout),
            module__n_set2set_steps=self.n_set2set_steps,
            module__activation=self.activation,
            module__dropout=self.dropout,
            module__n_elements=self.n_elements,
            module__embedding_dim=self.embedding_dim,
            module__feature_mean=self.feature_mean_,
            module__feature_scale=self.feature_scale_,
            module__n_descriptors=0 if self.descriptor_mean_ is None else len(self.descriptor_mean_),
            module__descriptor_mean=self.descriptor_mean_,
            module__descriptor_scale=self.descriptor_scale_,
            module__descriptor_min=self.descriptor_min_,
            module__descriptor_max=self.descriptor_max_,
            criterion=criterion,
            optimizer=self.optimizer,
            optimizer__weight_decay=self.weight_decay,
            **({"optimizer__fused": True} if _FUSED_ADAM and _fused_supported(self.optimizer, self.device) else {}),
            lr=self.lr,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            iterator_train=_SetBatches,
            iterator_train__shuffle=True,
            iterator_train__seed=seed,
            iterator_valid=_SetBatches,
            train_split=train_split,
            callbacks=[*callbacks, ("finite_loss", _FiniteLoss())],
            device=self.device,
            verbose=int(self.verbose >= 2),  # skorch's per-epoch table
            **({"criterion__reduction": "none"} if weighted else {}),
        )
        # skorch-routed parameters given to the estimator (optimizer__momentum=0.9, ...) are passed on
        # and take precedence over the ones it derives from its own parameters
        return _AtomSetsNet(**{**own, **_routed(self.get_params(deep=False))})

    def _lr_scheduler(self, monitor, lower_is_better):
        """skorch's ``LRScheduler`` for ``lr_schedule`` ("plateau": torch's ``ReduceLROnPlateau`` on the
        score early stopping watches, placed after the callback that computes it), or nothing."""
        if self.lr_schedule is None:
            return ()
        return (("lr_scheduler", LRScheduler(
            policy=torch.optim.lr_scheduler.ReduceLROnPlateau, monitor=monitor, mode="min" if lower_is_better else "max",
            factor=0.5, patience=max(1, self.patience // 4), threshold=0.0, min_lr=self.lr / 100)),)

    def _train(self, net, dataset, y_for_split, seed, warm_weights=None):
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]), torch_threads(self.n_jobs):  # global RNG, threads restored
            torch.manual_seed(seed)
            if warm_weights is not None:  # skorch's warm start: fit does not initialise the module again
                net.set_params(warm_start=True)
                net.initialize()
                net.module_.load_state_dict(warm_weights)
            net.fit(dataset, y_for_split)
        self.net_ = net
        if self.verbose == 1:
            print(self._fit_summary(time.perf_counter() - start), flush=True)
        return net

    def _record_validation_split(self, dataset, y_for_split, missing):
        """``validation_indices_``: the inner validation samples' positions in the ``X`` given to
        fit, whose rows at the positions ``missing`` (no set) are not in ``dataset``.

        skorch's ``ValidSplit`` draws the split from its integer seed, so asking the net for
        its split again returns the one it trained with.
        """
        self.validation_indices_ = None
        if self.net_.train_split is not None:
            _, valid = self.net_.get_split_datasets(dataset, y_for_split)
            fitted = np.delete(np.arange(len(dataset) + len(missing)), missing)
            self.validation_indices_ = fitted[np.sort(np.asarray(valid.indices))]

    def _fit_summary(self, seconds):
        """verbose=1: one line per fit."""
        line = f"{type(self).__name__}: {len(self.net_.history)} epochs"
        if self.validation_fraction:
            line += f", best epoch {self.best_epoch_} ({self._score_name} {self.best_validation_score_:.4g})"
        return f"{line}, {seconds:.1f} s"

    def _forward(self, X):
        """Outputs for the samples of X that have a set, and the positions of the others."""
        check_is_fitted(self, "net_")
        _check_feature_names(self, X, reset=False)
        X, descriptors, descriptor_names = split_descriptors(X)
        n_descriptors = 0 if descriptors is None else descriptors.shape[1]
        if n_descriptors != getattr(self, "n_descriptors_in_", 0):
            raise ValueError(
                f"X has {n_descriptors} descriptor columns beside its sets, but {type(self).__name__} was fitted "
                f"with {getattr(self, 'n_descriptors_in_', 0)}."
            )
        X, _, missing = self._split_missing(X, descriptors=descriptors, descriptor_names=descriptor_names)
        if descriptors is not None:
            descriptors = self._select_descriptors(np.delete(descriptors, missing, axis=0))
        if len(missing) and not len(X):
            return torch.zeros((0, len(self._prior))), missing
        dataset = _PackedDataset(self._pack(X, fitting=False), descriptors=descriptors)
        with torch.no_grad(), torch_threads(self.n_jobs):
            return self.net_.forward(dataset, training=False).cpu(), missing

    @staticmethod
    def _with_prior(out, missing, prior):
        """Rows of ``out`` with the ``prior`` row put in at the ``missing`` positions."""
        if not len(missing):
            return out
        full = np.empty((len(out) + len(missing), *out.shape[1:]), dtype=out.dtype)
        present = np.ones(len(full), dtype=bool)
        present[missing] = False
        full[present] = out
        full[~present] = prior
        return full

    @property
    def module_(self):
        """The trained :class:`AtomSetsModule`."""
        check_is_fitted(self, "net_")
        return self.net_.module_

    @property
    def best_epoch_(self):
        """Epoch (1-based) whose weights were kept (skorch's ``EarlyStopping.best_epoch_``);
        the last one without a validation split."""
        check_is_fitted(self, "net_")
        if not self.validation_fraction:
            return len(self.net_.history)
        return int(dict(self.net_.callbacks_)["early_stopping"].best_epoch_)

    @property
    def best_validation_score_(self):
        """Validation score of the kept epoch (regressors: MAE in the units of ``y``;
        classifiers: ROC-AUC); None without a validation split."""
        check_is_fitted(self, "net_")
        if not self.validation_fraction:
            return None
        return float(self.net_.history[self.best_epoch_ - 1, self._score_name])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


_DOC_PARAMS = """
    Parameters
    ----------
    n_neurons : tuple of int, default=(64, 64)
        Widths of the MLP applied to every row (phi).
    n_neurons_final : tuple of int, default=(64, 64)
        Widths of the MLP after the readout (rho).
    readout : {"mean", "set2set"} or tuple of both, default="mean"
        Weighted mean (eq. 4) and/or weighted set2set (eqs. 5-9); several are concatenated.
    n_set2set_steps : int, default=3
    activation : {"relu", "softplus", "tanh", "silu", "gelu"}, default="relu"
    dropout : float, default=0.0
    embedding_dim : int, default=32
        Element-embedding width when X holds atomic numbers (the non-TL AtomSets model).
    n_elements : int, default=95
        Embedding vocabulary: atomic numbers 1..n_elements-1.
    standardize_features : bool, default=False
        Standardise the feature rows before phi: each feature minus its mean, divided by its
        standard deviation, both over all rows of the training sets (every site or element
        row counts once; a constant feature is only centred). Stored as
        ``feature_mean_`` / ``feature_scale_`` and inside the module, so ``predict`` applies
        the same. No effect on sets of atomic numbers (the embedding is trained).
    optimizer : torch optimizer class or callable, default=torch.optim.Adam
        Called as ``optimizer(params, lr=lr, weight_decay=weight_decay, **optimizer__*)``, so
        ``functools.partial(torch.optim.SGD, momentum=0.9)`` works too. Adam and AdamW run as torch's fused kernel where the device supports it (the same
        update, one kernel per step); other optimizers as given.
    lr : float, default=1e-3
    weight_decay : float, default=0.0
    lr_schedule : {"plateau"} or None, default=None
        None: a constant learning rate. "plateau": halve it whenever the score early stopping
        watches (the inner-validation score; without a validation split the training loss)
        has not improved for ``patience // 4`` epochs, down to ``lr / 100`` (torch's
        ``ReduceLROnPlateau`` through skorch's ``LRScheduler``).
    loss : {"auto", "mse", "mae", "huber", "cross_entropy"}, default="auto"
        Training loss. "auto": mean absolute error (L1) for regressors, on standardised
        targets, and cross-entropy for classifiers. L1 is the default because inner
        validation chose it: in the MatBench runs' selections among L1, squared error and
        Huber (``benchmarks/results``, each fit's choice made on its own inner split, never
        on test folds) L1 won 714 of 855 regression fits, on every regression task; it
        trains on the metric MatBench reports and is robust to heavy-tailed targets.
        Regressors also take "mse" (squared error; the default before 0.2) and "huber"
        (delta 1 standard deviation); classifiers only take cross-entropy.
    batch_size : int, default=128
    max_epochs : int, default=1000
    patience : int, default=200
        Epochs without improvement of the validation score before training stops (the
        paper uses 200); the best epoch's weights are restored.
    validation_fraction : float or None, default=0.1
        Inner validation split for early stopping; None trains ``max_epochs`` epochs.
    random_state : int, RandomState or None, default=None
        Seeds weight initialisation, shuffling and the validation split: two fits with the
        same integer give identical models on the CPU.
    device : str or torch.device, default="cpu"
        Where the module trains and predicts (``"cuda"``, ``torch.device("cuda", 1)``, ...);
        predictions and validation scores come back on the host.
    n_jobs : int or None, default=None
        torch CPU threads during ``fit`` and ``predict`` (restored afterwards). None means
        1, also inside a :func:`joblib.parallel_backend` context (a Dask cluster's worker
        count is not a thread count for this process); -1 all cores. The networks are
        small, so one thread loses little on a quiet machine and is much faster on a busy
        one, where OpenMP threads stall each other; scale out with processes instead.
    handle_missing : {"error", "ignore"}, default="error"
        What to do with samples that have no set: a row a featurizer could not featurize
        (NaN in ``featurize_dataframe``'s output, a :class:`FailedSet` in ``transform``'s,
        e.g. a structure with an atom without neighbours within the cutoff), None, or an
        all-NaN row of a table; and with descriptor columns, a sample with a NaN descriptor. "error": ``fit`` and ``predict`` raise, naming the sample and
        the featurizer's reason. "ignore": ``fit`` trains without them and ``predict`` gives
        them the training prior -- the mean target for regressors, the class frequencies of
        ``y`` for classifiers (what :class:`~sklearn.dummy.DummyRegressor` and
        ``DummyClassifier(strategy="prior")`` predict) -- so a ``Pipeline`` of featurizer
        and estimator can be fitted and scored by ``cross_val_score`` or ``GridSearchCV``
        on data with a few unfeaturizable rows, which count as uninformed predictions;
        ``fit`` and ``predict`` then warn, naming how many samples and their positions.
    descriptor_selector : scikit-learn transformer, default=None
        With descriptor columns: a clone of it is fitted on the training samples' descriptors and
        targets (after ``handle_missing``; before the inner validation split, so it sees those rows
        too, as a selector in a ``Pipeline`` would) and the net reads only the columns it keeps,
        e.g. ``MutualInfoSelector(n_features=32)`` (MODNet's criterion), so the number kept can be
        chosen by ``GridSearchCV`` or on inner validation like any other parameter;
        ``descriptor_selector_`` is the fitted clone. None: every descriptor column.
    verbose : int, default=0
        0: silent. 1: one line per fit (epochs, best epoch, its validation score, time).
        2: skorch's per-epoch table and the early-stopping messages.
    callbacks : list of skorch callbacks or (name, callback) pairs, default=None
        Added to the net's own (validation score, schedule, early stopping); copies train,
        the fitted ones are in ``net_.callbacks_``.
    warm_start : bool, default=False
        When fitted before, ``fit`` starts from the previous weights (and keeps the
        previous feature and target standardisation and classes) instead of a new
        initialisation; the optimizer starts afresh.
    **kwargs
        skorch's prefixed parameters, passed to the net and reachable by ``set_params`` and
        ``GridSearchCV``: ``optimizer__*`` (e.g. ``optimizer=torch.optim.SGD,
        optimizer__momentum=0.9``), ``criterion__*``, ``iterator_train__*``,
        ``iterator_valid__*``, ``callbacks__<name>__*``, and skorch's ``train_split`` (e.g.
        ``skorch.dataset.ValidSplit(0.1, random_state=0)``: the inner validation split drawn
        with its own seed, whatever ``random_state``; early stopping still needs
        ``validation_fraction``). They override what the estimator sets itself (e.g.
        ``iterator_train__shuffle=False``). Classifiers also take
        ``class_weight`` (None, "balanced" or a dict class -> weight, as scikit-learn's
        classifiers), multiplying ``sample_weight`` in the loss.
"""


def _public_init(init, extra=None, **defaults):
    """An ``__init__`` with the parameters of ``init``, some defaults changed (``defaults``) and
    keyword-only parameters added (``extra``: name -> default), stored as given.

    scikit-learn reads an estimator's parameters and defaults from its ``__init__``
    signature, so MLP-f (one default differs) and the classifiers (``class_weight``) need an
    ``__init__`` of their own; deriving it from the base's keeps the parameter list and its
    defaults in one place instead of repeating all of them. A wrong argument is a
    ``TypeError`` naming the public class.
    """
    signature = inspect.signature(init)
    unknown = set(defaults) - set(signature.parameters)
    if unknown:
        raise TypeError(f"{init.__qualname__} has no parameters {sorted(unknown)}")
    params = [p.replace(default=defaults.get(p.name, p.default)) for p in signature.parameters.values()]
    var_keyword = [p for p in params if p.kind is p.VAR_KEYWORD]
    params = [p for p in params if p.kind is not p.VAR_KEYWORD]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value) for name, value in (extra or {}).items()]
    signature = signature.replace(parameters=params + var_keyword)

    def __init__(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{type(self).__name__}.__init__(): {exc}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"]
        routed = arguments.pop(var_keyword[0].name, {}) if var_keyword else {}
        for name in extra or {}:
            setattr(self, name, arguments.pop(name))
        init(self, **arguments, **routed)

    __init__.__signature__ = signature
    __init__.__doc__ = init.__doc__
    return __init__


class AtomSetsRegressor(RegressorMixin, _AtomSetsBase):
    __doc__ = (
        """AtomSets regressor: per-row MLP -> weighted readout -> MLP (Chen & Ong 2021).

    ``X`` is a sequence of :class:`WeightedSet` (feature rows such as V0/V1 of the frozen
    MEGNet, or atomic numbers for the trainable embedding), or a 2-D array read as one-row
    sets; a DataFrame with one set column beside numeric descriptor columns (matminer's),
    or a tuple ``(sets, descriptors)``, adds the descriptors to the readout (rho's input;
    see ``n_descriptors_in_``). Targets are standardised inside and predictions returned in the original units;
    early stopping watches the validation MAE, which is reported in the original units too
    (the history's ``valid_mae_in_y_units``; its ``train_loss`` / ``valid_loss`` are the
    training loss on the standardised target).
"""
        + _DOC_PARAMS
        + """
    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained net. ``net_.history`` holds per epoch the losses (on the standardised
        target) and ``valid_mae_in_y_units``, the validation MAE in the units of ``y``.
    module_ : AtomSetsModule
    n_features_in_ : int
        Row width (feature mode only).
    feature_names_in_ : ndarray of str
        Column names of a DataFrame ``X`` (a set column's name, or a table's columns, or a
        set column and descriptor columns), checked by ``predict``; absent for other ``X``.
    n_descriptors_in_ : int
        Descriptor columns beside the sets (0 without), concatenated to the readout.
    descriptor_mean_, descriptor_scale_ : ndarray or None
        Their standardisation, fitted on the training samples (None without descriptors).
    descriptor_min_, descriptor_max_ : ndarray or None
        Their range over the training samples: a sample's descriptors are clipped to it before
        standardising, so that one far outside a nearly constant column cannot blow up rho.
    input_kind_ : {"features", "atomic_numbers"}
    target_mean_, target_scale_ : ndarray
        The target standardisation.
    feature_mean_, feature_scale_ : ndarray or None
        The feature-row standardisation (``standardize_features``), else None.
    best_epoch_ : int
        Epoch whose weights were kept.
    best_validation_score_ : float or None
        Validation MAE of that epoch, in the units of ``y``.
    validation_indices_ : ndarray or None
        Positions in the ``X`` given to ``fit`` of the inner validation samples (held out
        for early stopping); None without a validation split.

    Examples
    --------
    >>> from sklearn_atomsets import AtomSetsRegressor, WeightedSet
    >>> X = [WeightedSet.from_composition(f) for f in ["NaCl", "KCl", "MgO", "CaO"] * 5]
    >>> y = [1.0, 1.2, 3.0, 3.2] * 5
    >>> model = AtomSetsRegressor(max_epochs=30, validation_fraction=None, random_state=0).fit(X, y)
    >>> model.predict(X[:2]).shape
    (2,)

    See Also
    --------
    AtomSetsClassifier, MLPfRegressor
    """
    )

    _score_name = "valid_mae_in_y_units"
    _lower_is_better = True
    __init__ = _public_init(_AtomSetsBase.__init__)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y may be (n_samples, n_targets)
        return tags

    def fit(self, X, y, sample_weight=None):
        """Train on sets ``X`` and targets ``y`` (raw units: eV, GPa, log10 GPa, ...).

        Parameters
        ----------
        X : sequence of WeightedSet, one-column DataFrame of them, or 2-D array
            Or a DataFrame of one set column and numeric descriptor columns, or a tuple
            ``(sets, descriptors)``: the descriptors join after the readout (a NaN
            descriptor is a missing sample, see ``handle_missing``).
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample in the training loss (a weighted mean over
            each batch), the target and feature standardisation and the validation MAE
            early stopping watches; an integer weight counts a sample that many times.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight)

    _WARM_KEPT_TARGETS = ("target_mean_", "target_scale_", "_y_ndim")

    def _encode_targets(self, y, n_sets, sample_weight=None, previous=None):
        """Targets standardised per column (the net's outputs are scaled back in ``predict``),
        with the (weighted) mean and standard deviation of ``y``, or on a warm start those of
        the previous fit."""
        y = self._check_targets(y, n_sets)
        y2 = y.reshape(len(y), -1)
        # statistics and the subtraction run in units of max|y|: y near the float64 limit must not
        # overflow in the squares (y * 1e200 used to give an inf std and an inf model) nor in y - mean
        unit = np.abs(y2).max(axis=0, initial=0.0)
        unit = np.where(unit > 0, unit, 1.0)
        y_unit = y2 / unit
        if previous is not None:
            if y.ndim != previous["_y_ndim"] or y2.shape[1] != len(previous["target_mean_"]):
                raise ValueError(
                    f"warm_start=True continues the previous fit, on {len(previous['target_mean_'])} target(s) "
                    f"of y.ndim={previous['_y_ndim']}; this y has shape {y.shape}. Set warm_start=False to fit afresh."
                )
            self.target_mean_, self.target_scale_ = previous["target_mean_"], previous["target_scale_"]
        else:  # mean and std of y / max|y| are at most 1, so finite; scaled back
            mean = np.average(y_unit, axis=0, weights=sample_weight)
            scale = np.sqrt(np.average((y_unit - mean) ** 2, axis=0, weights=sample_weight))
            self.target_mean_ = mean * unit
            self.target_scale_ = np.where(scale > 0, scale * unit, 1.0)
        self._y_ndim = y.ndim
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = ((y_unit - self.target_mean_ / unit) / (self.target_scale_ / unit)).astype(np.float32)
        if not np.isfinite(scaled).all():
            rows = np.flatnonzero(~np.isfinite(scaled).all(axis=1))
            raise ValueError(
                f"y is not representable after standardising (mean {self.target_mean_.tolist()!r:.100}, "
                f"scale {self.target_scale_.tolist()!r:.100}): samples {rows[:10].tolist()} overflow float32."
            )
        score = functools.partial(_mae_in_target_units, scale=self.target_scale_)
        return scaled, scaled.shape[1], LOSSES[self.loss if self.loss != "auto" else "mae"], score, None, sample_weight

    @property
    def _prior(self):
        return self.target_mean_

    @staticmethod
    def _check_targets(y, n_samples):
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            raise ValueError(
                f"Unknown label type for a regressor: it needs numeric targets, y has dtype {y.dtype} "
                "(class labels? use AtomSetsClassifier)."
            )
        y = y.astype(np.float64)
        if y.ndim not in (1, 2) or len(y) != n_samples:
            raise ValueError(f"X has {n_samples} samples but y has shape {y.shape}.")
        if y.ndim == 2 and y.shape[1] == 0:
            raise ValueError(f"y has shape {y.shape}: it needs at least one target column.")
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinite values.")
        return y

    def predict(self, X):
        """Predicted targets in the units of ``y`` (see ``handle_missing`` for samples without a set)."""
        out, missing = self._forward(X)
        out = out.numpy().astype(np.float64) * self.target_scale_ + self.target_mean_
        out = self._with_prior(out, missing, self._prior)
        return out.ravel() if self._y_ndim == 1 else out


class AtomSetsClassifier(ClassifierMixin, _AtomSetsBase):
    __doc__ = (
        """AtomSets classifier (binary or multi-class): per-row MLP -> readout -> MLP -> softmax.

    Trained with cross-entropy; early stopping watches the validation ROC-AUC (one-vs-rest
    for more than two classes); the inner validation split is stratified.
"""
        + _DOC_PARAMS
        + """
    Attributes
    ----------
    classes_ : ndarray
    class_prior_ : ndarray
        Frequency of each class in ``y`` (the prediction for samples without a set when
        ``handle_missing="ignore"``).
    net_ : skorch.NeuralNet
        ``net_.history`` holds per epoch the losses and ``valid_roc_auc``.
    module_ : AtomSetsModule
    feature_mean_, feature_scale_ : ndarray or None
        The feature-row standardisation (``standardize_features``), else None.
    n_descriptors_in_ : int
        Descriptor columns beside the sets (0 without); see :class:`AtomSetsRegressor`.
    best_epoch_ : int
    best_validation_score_ : float or None
        Validation ROC-AUC of the kept epoch.
    validation_indices_ : ndarray or None
        Positions in the ``X`` given to ``fit`` of the inner validation samples (held out
        for early stopping; stratified); None without a validation split. E.g. to choose a
        decision threshold on them: ``TunedThresholdClassifierCV(clf, cv="prefit",
        refit=False).fit(X[clf.validation_indices_], y[clf.validation_indices_])``.

    Examples
    --------
    >>> from sklearn_atomsets import AtomSetsClassifier, WeightedSet
    >>> X = [WeightedSet.from_composition(f) for f in ["Cu", "Fe", "NaCl", "MgO"] * 5]
    >>> y = ["metal", "metal", "insulator", "insulator"] * 5
    >>> clf = AtomSetsClassifier(max_epochs=30, validation_fraction=None, random_state=0).fit(X, y)
    >>> clf.classes_.tolist(), clf.predict_proba(X[:1]).shape
    (['insulator', 'metal'], (1, 2))

    See Also
    --------
    AtomSetsRegressor, MLPfClassifier
    """
    )

    _score_name = "valid_roc_auc"
    _lower_is_better = False
    _parameter_constraints = {
        **_AtomSetsBase._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }
    __init__ = _public_init(_AtomSetsBase.__init__, extra={"class_weight": None})

    def fit(self, X, y, sample_weight=None):
        """Train on sets ``X`` and class labels ``y``.

        Parameters
        ----------
        X : sequence of WeightedSet, one-column DataFrame of them, or 2-D array
            Or a DataFrame of one set column and numeric descriptor columns, or a tuple
            ``(sets, descriptors)`` (see :class:`AtomSetsRegressor`).
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample in the cross-entropy (a weighted mean over
            each batch), multiplied by ``class_weight``, and in the validation ROC-AUC early
            stopping watches; an integer weight counts a sample that many times.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight)

    _WARM_KEPT_TARGETS = ("classes_",)

    def _encode_targets(self, y, n_sets, sample_weight=None, previous=None):
        """Class codes (``classes_`` order); the inner validation split is stratified on them.
        The loss weights are ``sample_weight`` times the ``class_weight`` of each sample's class."""
        y = column_or_1d(y, warn=True)
        if len(y) != n_sets:
            raise ValueError(f"X has {n_sets} samples but y has {len(y)}.")
        if type_of_target(y) == "continuous":
            raise ValueError("Unknown label type: continuous. AtomSetsClassifier needs class labels.")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinite values.")
        if y.dtype.kind == "O" and any(v is None for v in y):
            raise ValueError("y contains None.")
        encoder = LabelEncoder().fit(y)
        if previous is not None and not np.array_equal(encoder.classes_, previous["classes_"]):
            raise ValueError(
                f"warm_start=True continues the previous fit, on the classes {previous['classes_'].tolist()}; this y "
                f"has {encoder.classes_.tolist()}. Set warm_start=False to fit afresh."
            )
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"Classification needs at least 2 classes; y has 1 class: {self.classes_.tolist()}.")
        codes = encoder.transform(y).astype(np.int64)
        counts = np.bincount(codes, weights=sample_weight, minlength=len(self.classes_))
        self.class_prior_ = counts / counts.sum()
        loss_weights = sample_weight
        if self.class_weight is not None:
            # sklearn's helper; "balanced" counts the classes with the sample weights
            per_class = compute_class_weight(self.class_weight, classes=self.classes_, y=y, sample_weight=sample_weight)
            loss_weights = per_class[codes] * (1.0 if sample_weight is None else sample_weight)
        if self.validation_fraction:
            n_valid = int(np.ceil(self.validation_fraction * len(codes)))
            smallest = np.bincount(codes).min()
            if n_valid < len(self.classes_) or smallest < 2:
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} of {len(codes)} samples cannot hold every "
                    f"one of the {len(self.classes_)} classes in a stratified validation split (smallest class: "
                    f"{smallest} samples). Use more data, a larger validation_fraction, or "
                    "validation_fraction=None (no early stopping)."
                )
        return codes, len(self.classes_), torch.nn.CrossEntropyLoss, _roc_auc, codes, loss_weights

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_`` (see ``handle_missing``
        for samples without a set)."""
        out, missing = self._forward(X)
        return self._with_prior(torch.softmax(out, dim=-1).numpy().astype(np.float64), missing, self._prior)

    @property
    def _prior(self):
        return self.class_prior_

    def predict(self, X):
        """Most probable class of each sample."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]


_MLPF_HEAD = """The paper's MLP-f model: an MLP on the fixed-length readout vector f of the parent.

    ``X`` is a 2-D array (n_samples, n_features), e.g. the 96-d ``f`` of the frozen MEGNet;
    sets are refused. It is an AtomSets model on one-row sets, so the readout is the
    identity and ``n_neurons`` are the MLP's hidden layers; training (Adam, early stopping
    on the inner validation split, target scaling) is that of the AtomSets estimators,
    whose parameters it shares, except ``n_neurons_final=()`` by default: no further layers
    after the (identity) readout. ``readout``, ``embedding_dim`` and ``n_elements`` have no
    effect on one-row sets of features.
"""


class _MLPfMixin:
    def _pack(self, X, fitting):
        if not _is_table(_from_pandas(X)):
            raise ValueError("MLP-f takes a 2-D numeric array of fixed-length features (e.g. the readout f), not sets.")
        return super()._pack(X, fitting)


_MLPF_PARAMS = _DOC_PARAMS.replace("n_neurons_final : tuple of int, default=(64, 64)", "n_neurons_final : tuple of int, default=()")


class MLPfRegressor(_MLPfMixin, AtomSetsRegressor):
    __init__ = _public_init(_AtomSetsBase.__init__, n_neurons_final=())
    __doc__ = (
        _MLPF_HEAD
        + _MLPF_PARAMS
        + """
    Attributes
    ----------
    net_ : skorch.NeuralNet
    module_ : AtomSetsModule
    n_features_in_ : int
    target_mean_, target_scale_ : ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_atomsets import MLPfRegressor
    >>> f = np.random.default_rng(0).normal(size=(40, 8))
    >>> model = MLPfRegressor(max_epochs=5, validation_fraction=None, random_state=0).fit(f, f[:, 0])
    >>> model.predict(f[:3]).shape
    (3,)

    See Also
    --------
    MLPfClassifier, AtomSetsRegressor
    """
    )


class MLPfClassifier(_MLPfMixin, AtomSetsClassifier):
    __init__ = _public_init(_AtomSetsBase.__init__, n_neurons_final=(), extra={"class_weight": None})
    __doc__ = (
        _MLPF_HEAD
        + _MLPF_PARAMS
        + """
    Attributes
    ----------
    classes_ : ndarray
    net_ : skorch.NeuralNet
    module_ : AtomSetsModule
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_atomsets import MLPfClassifier
    >>> f = np.random.default_rng(0).normal(size=(40, 8))
    >>> clf = MLPfClassifier(max_epochs=5, validation_fraction=None, random_state=0).fit(f, f[:, 0] > 0)
    >>> clf.predict_proba(f[:3]).shape
    (3, 2)

    See Also
    --------
    MLPfRegressor, AtomSetsClassifier
    """
    )
