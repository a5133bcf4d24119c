"""Many AtomSets nets in one pass: K members of one architecture trained together.

The K members' weights are stacked (every ``nn.Linear`` of phi, rho and the output becomes a
``(K, out, in)`` tensor), so one training step runs each layer as one batched matmul for all
members instead of K small ones: on a CPU core the step of a small net is dominated by the
per-operation overhead, which the members now share. Each member keeps everything it would
have trained alone with its ``random_state``: its initialisation (the module skorch builds
under its seed), its inner validation split, its own batch order, its own Adam state (Adam is
elementwise, so one update over stacked tensors is K updates), its learning rate, weight
decay, loss and patience, and early stopping with its best epoch restored. A member that
stops is taken out of the stack at the end of that epoch with its best weights, so it is
frozen and costs nothing afterwards.

The data live on the training device once (rows, weights, targets); a batch is gathered
there from the members' set indices, which move once per epoch, so a step makes no host
synchronisation: losses and validation predictions come back once per epoch, where the
members' scores are computed by the estimator's own score function.

Given the same seeds, each member equals the net trained alone up to float32 rounding (the
batched matmuls and the unfused Adam round differently; tests/test_stacked.py).
:class:`~sklearn_atomsets.AtomSetsEnsembleRegressor` and ``...Classifier`` train their members
this way when :func:`unsupported` finds nothing against it.
"""

from __future__ import annotations

import inspect
import math
import time

import numpy as np
import torch
from sklearn.utils import check_random_state
from torch import nn

from ._atomsets import ACTIVATIONS, _segment_sum
from ._threads import torch_threads

__all__ = ["StackedAtomSetsModule", "fit_stacked", "stack_groups", "unsupported"]

#: Parameters the stacked loop implements as the skorch fit does. Any other parameter
#: (a skorch-routed ``optimizer__*``, ``callbacks__*``, or one added to the estimators later)
#: must keep its default, or the members train one by one.
_HANDLED = frozenset({
    "n_neurons", "n_neurons_final", "readout", "n_set2set_steps", "activation", "dropout", "embedding_dim",
    "n_elements", "standardize_features", "optimizer", "lr", "weight_decay", "lr_schedule", "loss",
    "batch_size", "max_epochs", "patience", "validation_fraction", "random_state", "device", "n_jobs",
    "handle_missing", "verbose", "callbacks", "warm_start", "class_weight",
})

#: What may differ between the members of one stack; the rest must be equal (one architecture,
#: one dataset, one batch structure).
_PER_MEMBER = frozenset({"random_state", "lr", "weight_decay", "optimizer", "loss", "patience", "max_epochs",
                         "verbose"})


def _stackable_types():
    from ._estimators import AtomSetsClassifier, AtomSetsRegressor, MLPfClassifier, MLPfRegressor

    return (AtomSetsRegressor, AtomSetsClassifier, MLPfRegressor, MLPfClassifier)


def _same(a, b):
    try:
        return a is b or (type(a) is type(b) and bool(a == b))
    except (TypeError, ValueError):  # arrays and the like: not comparable as one bool
        return False


def unsupported(estimator):
    """Why ``estimator`` cannot be trained in a stack (a short reason), or None when it can.

    Stacked: the plain AtomSets and MLP-f regressors and classifiers with the weighted-mean
    readout, no dropout, a constant learning rate, Adam or AdamW, no extra callbacks, no
    warm start and no skorch-routed parameters.
    """
    if type(estimator) not in _stackable_types():
        return f"{type(estimator).__name__} is not one of the AtomSets/MLP-f estimators"
    params = estimator.get_params(deep=False)
    defaults = {name: p.default for name, p in inspect.signature(type(estimator).__init__).parameters.items()}
    for name in sorted(set(params) - _HANDLED):
        if name not in defaults or not _same(params[name], defaults[name]):
            return f"parameter {name}={params[name]!r} is not implemented by the stacked loop"
    readout = (params["readout"],) if isinstance(params["readout"], str) else tuple(params["readout"])
    if readout != ("mean",):
        return f"readout={params['readout']!r} (only the weighted mean is stacked)"
    if params["dropout"]:
        return "dropout > 0"
    if params["lr_schedule"] is not None:
        return f"lr_schedule={params['lr_schedule']!r}"
    if params["callbacks"]:
        return "callbacks"
    if params["warm_start"]:
        return "warm_start=True"
    if params["optimizer"] not in (torch.optim.Adam, torch.optim.AdamW):
        return f"optimizer={params['optimizer']!r} (Adam and AdamW are stacked)"
    if params["verbose"] >= 2:
        return "verbose >= 2 (skorch's per-epoch table)"
    return None


def _mismatch(a, b):
    """What keeps ``a`` and ``b`` out of one stack (a short reason), or None."""
    if type(a) is not type(b):
        return "The members of a stack must be of one class"
    pa, pb = a.get_params(deep=False), b.get_params(deep=False)
    for name in sorted(set(pa) - _PER_MEMBER):
        if not _same(pa[name], pb[name]):
            return f"The members of a stack must share {name} (got {pa[name]!r} and {pb[name]!r})"
    return None


def _check_stack(estimators):
    if not estimators:
        raise ValueError("fit_stacked needs at least one estimator.")
    for e in estimators:
        reason = unsupported(e)
        if reason is not None:
            raise ValueError(f"{type(e).__name__} cannot be trained stacked: {reason}.")
    for e in estimators[1:]:
        reason = _mismatch(estimators[0], e)
        if reason is not None:
            raise ValueError(reason + ".")


def stack_groups(estimators):
    """The positions of ``estimators`` in groups that :func:`fit_stacked` can train together (the
    first of each group in order; an estimator that cannot be stacked is a group of its own).

    >>> from sklearn_atomsets import AtomSetsRegressor
    >>> stack_groups([AtomSetsRegressor(lr=1e-3), AtomSetsRegressor(readout="set2set"),
    ...               AtomSetsRegressor(lr=3e-4, loss="mae"), AtomSetsRegressor(batch_size=64)])
    [[0, 2], [1], [3]]
    """
    groups = []
    for i, e in enumerate(estimators):
        if unsupported(e) is None:
            for group in groups:
                first = estimators[group[0]]
                if unsupported(first) is None and _mismatch(first, e) is None:
                    group.append(i)
                    break
            else:
                groups.append([i])
        else:
            groups.append([i])
    return groups


class StackedAtomSetsModule(nn.Module):
    """K weighted-mean :class:`AtomSetsModule` nets of one architecture, weights stacked.

    Built from the K member modules (their current weights); ``member_state_dict(k)`` gives
    member k's weights back in ``AtomSetsModule``'s own layout, and ``keep(members)`` drops
    the other members from the stack.

    ``forward(x, weights, segment, index, n_sets)`` takes the members' batches packed together:
    ``x`` is one table of rows shared by all members (``(T, F)``, or ``(T,)`` atomic numbers) or
    one per member (``(K, R, F)`` / ``(K, R)``); ``index`` picks the rows of the batch from the
    flattened ``(K * T)`` (or ``(K * R)``) rows after phi; ``segment`` numbers the sets
    ``0 .. K * n_sets - 1``, member k's being ``k * n_sets ..``. With ``pool`` instead, a
    ``(K, n_sets, T)`` matrix of each set's normalised weight on each row of the table ``x``,
    the weighted mean is ``pool @ phi(x)``. Returns ``(K, n_sets, n_outputs)``.
    """

    def __init__(self, modules, activation="relu"):
        super().__init__()
        first = modules[0]
        if any(not all(isinstance(r, type(first.readouts[0])) for r in m.readouts) for m in modules):
            raise ValueError("Stacked members must share their readout.")
        self.n_members = len(modules)
        self.activation = ACTIVATIONS[activation]()
        self.has_embedding = first.embedding is not None
        self.standardise = first.standardise
        self.phi_layers = [f"phi.{n}" for n, m in first.phi.named_children() if isinstance(m, nn.Linear)]
        self.rho_layers = [f"rho.{n}" for n, m in first.rho.named_children() if isinstance(m, nn.Linear)]
        states = [m.state_dict() for m in modules]
        self._names = list(states[0])
        self.stacked = nn.ParameterDict()
        parameters = dict(first.named_parameters())
        for name in self._names:
            value = torch.stack([s[name].detach() for s in states])
            if name in parameters:
                self.stacked[self._key(name)] = nn.Parameter(value.clone())
            else:  # feature_mean / feature_scale: buffers, stacked too (the same for every member)
                self.register_buffer(self._key(name), value.clone())
        self._refresh()

    @staticmethod
    def _key(name):
        return name.replace(".", "__")

    def _refresh(self):
        # the tensors by their AtomSetsModule names: a ParameterDict lookup per layer and step
        # cost about 0.5 ms of a 5-member V0 step on the CPU
        self._by_name = {name: self.stacked[self._key(name)] if self._key(name) in self.stacked
                         else getattr(self, self._key(name)) for name in self._names}

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._refresh()  # .to(device) replaces the buffers
        return out

    def _get(self, name):
        return self._by_name[name]

    def _linear(self, x, name):
        weight, bias = self._get(f"{name}.weight"), self._get(f"{name}.bias")
        if x.dim() == 2:  # rows shared by all members: (T, in) @ (K, in, out)
            return torch.matmul(x, weight.transpose(1, 2)) + bias[:, None, :]
        return torch.baddbmm(bias[:, None, :], x, weight.transpose(1, 2))

    def forward(self, x, weights=None, segment=None, index=None, n_sets=None, pool=None):
        k = self.n_members
        if self.has_embedding:
            table = self._get("embedding.weight")  # (K, n_elements, dim)
            x = table[:, x] if x.dim() == 1 else torch.gather(
                table, 1, x[..., None].expand(-1, -1, table.shape[-1]))
        if self.standardise:
            x = (x - self._get("feature_mean")[:, None, :]) / self._get("feature_scale")[:, None, :]
        for name in self.phi_layers:
            x = self.activation(self._linear(x, name))
        if x.dim() == 2:  # no phi layer: the rows themselves, the same for every member
            x = x.expand(k, *x.shape)
        if pool is not None:  # the weighted mean over a table of rows as one product
            x = torch.bmm(pool, x)
        else:
            x = x.reshape(-1, x.shape[-1]).index_select(0, index)
            total = _segment_sum(x * weights[:, None], segment, k * n_sets)
            x = (total / _segment_sum(weights, segment, k * n_sets)[:, None]).reshape(k, n_sets, -1)
        for name in self.rho_layers:
            x = self.activation(self._linear(x, name))
        return self._linear(x, "output")

    def member_state_dict(self, k):
        """Member k's weights and buffers, keyed as ``AtomSetsModule.state_dict()``."""
        return {name: self._get(name)[k].detach().clone() for name in self._names}

    def named_stacked(self):
        """(name, stacked parameter) pairs, in a fixed order."""
        return [(name, self._get(name)) for name in self._names if self._key(name) in self.stacked]

    def keep(self, members):
        """Keep only ``members`` (a LongTensor of positions in the stack), in that order."""
        for name in self._names:
            key = self._key(name)
            if key in self.stacked:
                self.stacked[key] = nn.Parameter(self.stacked[key].detach().index_select(0, members))
            else:
                setattr(self, key, getattr(self, key).index_select(0, members))
        self.n_members = len(members)
        self._refresh()


class _StackedAdam:
    """Adam / AdamW over stacked parameters, its state indexed along the member axis so a
    member can leave. All members of a stack start together and step together, so they share
    the step count (the bias correction).

    Members with one learning rate, weight decay and optimizer (an ensemble) step with torch's
    own optimizer over the stacked tensors, fused where the estimator's fit fuses it;
    otherwise (selection candidates) ``torch.optim.Adam``'s formulas run here, unfused, with
    per-member learning rate, weight decay and decoupling (AdamW).
    """

    def __init__(self, module, optimizers, lr, weight_decay):
        from ._estimators import _FUSED_ADAM, _fused_supported

        device = next(iter(module.parameters())).device
        self.module = module
        self.torch = None
        if len(set(zip(optimizers, lr, weight_decay))) == 1:
            fused = _FUSED_ADAM and _fused_supported(optimizers[0], device)
            self._make = lambda params: optimizers[0](params, lr=lr[0], weight_decay=weight_decay[0],
                                                      **({"fused": True} if fused else {}))
            self.torch = self._make([p for _, p in module.named_stacked()])
            return
        decoupled = [o is torch.optim.AdamW for o in optimizers]
        self.lr = torch.as_tensor(lr, dtype=torch.float32, device=device)
        self.l2 = torch.as_tensor(np.where(decoupled, 0.0, weight_decay), dtype=torch.float32, device=device)
        self.decay = torch.as_tensor(np.where(decoupled, weight_decay, 0.0), dtype=torch.float32, device=device)
        self.any_l2, self.any_decay = bool((self.l2 > 0).any()), bool((self.decay > 0).any())
        self.betas, self.eps, self.t = (0.9, 0.999), 1e-8, 0  # torch.optim.Adam's defaults
        self.exp_avg = {n: torch.zeros_like(p) for n, p in module.named_stacked()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in module.named_stacked()}

    def zero_grad(self):
        for _, p in self.module.named_stacked():
            p.grad = None

    @torch.no_grad()
    def step(self):
        if self.torch is not None:
            self.torch.step()
            return
        self.t += 1
        beta1, beta2 = self.betas
        correction1, correction2 = 1 - beta1 ** self.t, math.sqrt(1 - beta2 ** self.t)
        for name, p in self.module.named_stacked():
            shape = (-1,) + (1,) * (p.dim() - 1)
            grad = p.grad
            if self.any_l2:
                grad = grad + self.l2.view(shape) * p
            if self.any_decay:
                p.mul_(1 - self.lr.view(shape) * self.decay.view(shape))
            m, v = self.exp_avg[name], self.exp_avg_sq[name]
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / correction2).add_(self.eps)
            p.sub_((self.lr.view(shape) / correction1) * m / denom)

    def keep(self, members, old_params):
        """After ``module.keep(members)``: the state of those members (``old_params``: the
        parameters before, in ``named_stacked`` order)."""
        if self.torch is not None:
            new = self._make([p for _, p in self.module.named_stacked()])
            for old, (_, p) in zip(old_params, self.module.named_stacked()):
                state = self.torch.state.get(old)
                if state:
                    new.state[p] = {k: v.index_select(0, members) if k.startswith("exp_avg") else v
                                    for k, v in state.items()}
            self.torch = new
            return
        for state in (self.exp_avg, self.exp_avg_sq):
            for name in state:
                state[name] = state[name].index_select(0, members)
        self.lr, self.l2, self.decay = (t.index_select(0, members) for t in (self.lr, self.l2, self.decay))


class _DeviceSets:
    """The packed training sets of a ``_PackedDataset`` on the training device, and the gather of a
    stacked batch there: each member's sets in, rows, weights and segment out, no host sync
    (the host supplies each batch's row counts, which it knows from the set lengths)."""

    def __init__(self, dataset, device, rows_per_batch):
        packed = dataset.packed
        self.lengths_host = np.diff(packed.offsets)
        self.starts = torch.as_tensor(packed.offsets[:-1], device=device)
        self.lengths = torch.as_tensor(self.lengths_host, device=device)
        self.weights = dataset.weights.to(device)
        self.device = device
        # phi on the dataset's table of distinct rows when a stacked batch has more rows than it
        # holds (V0, atomic numbers), else on the batch's rows
        self.table = None
        if dataset.index is not None and len(dataset.features) <= rows_per_batch:
            self.table = dataset.features.to(device)
            self.row_index = torch.as_tensor(dataset.index, device=device)
        elif dataset.index is not None:
            self.rows = dataset.features.to(device)[torch.as_tensor(dataset.index, device=device)]
        else:
            self.rows = dataset.features.to(device)
        self.y = torch.as_tensor(dataset.y, device=device)
        self.sample_weight = None if dataset.sample_weight is None else torch.as_tensor(dataset.sample_weight,
                                                                                         device=device)

    def row_counts(self, orders, batch_size):
        """(K, n_batches) rows of each member's batches for the (K, n) set orders ``orders``."""
        starts = np.arange(0, orders.shape[1], batch_size)
        return np.add.reduceat(self.lengths_host[orders], starts, axis=1)

    #: Bytes of pooling matrices built at once: a table-mode epoch is gathered in chunks of
    #: batches (one gather for many steps), each batch a view of its chunk.
    CHUNK_BYTES = 32 << 20

    def batches(self, orders, batch_size):
        """``(module inputs, targets, sample weights)`` of each stacked batch of the (K, n) set orders
        ``orders`` (a host array, moved to the device once)."""
        k, n = orders.shape
        every = torch.as_tensor(orders, device=self.device)
        if self.table is None:
            counts = self.row_counts(orders, batch_size)
            for j, begin in enumerate(range(0, n, batch_size)):
                sets = every[:, begin: begin + batch_size]
                yield (self.batch(sets, counts[:, j]), *self.targets(sets))
            return
        step = max(1, self.CHUNK_BYTES // (4 * k * batch_size * len(self.table))) * batch_size
        for start in range(0, n, step):
            chunk = every[:, start: start + step]
            pool = self.batch(chunk, self.lengths_host[orders[:, start: start + step]].sum(axis=1))["pool"]
            y, weights = self.targets(chunk)
            for begin in range(0, chunk.shape[1], batch_size):
                part = slice(begin, begin + batch_size)
                yield ({"x": self.table, "pool": pool[:, part]}, y[:, part],
                       None if weights is None else weights[:, part])

    def batch(self, sets, n_rows):
        """Module inputs for the (K, B) set indices ``sets`` (a device tensor) whose members' batches
        have ``n_rows`` (K,) rows (host integers)."""
        k, b = sets.shape
        lengths = self.lengths[sets].reshape(-1)
        total = int(n_rows.sum())
        segment = torch.repeat_interleave(torch.arange(k * b, device=self.device), lengths, output_size=total)
        first = torch.cumsum(lengths, 0) - lengths
        position = torch.arange(total, device=self.device) - first.index_select(0, segment)
        rows = self.starts[sets].reshape(-1).index_select(0, segment) + position
        weights = self.weights.index_select(0, rows)
        if self.table is not None:
            # each set's weight on each distinct row: the mean readout is then one batched product
            t = len(self.table)
            cell = segment * t + self.row_index.index_select(0, rows)  # (set, distinct row) of each row
            pool = weights.new_zeros(k * b * t).index_add_(0, cell, weights).view(k, b, t)
            return {"x": self.table, "pool": pool / pool.sum(dim=2, keepdim=True)}
        member = torch.div(segment, b, rounding_mode="floor")
        width = int(n_rows.max())
        within = torch.arange(total, device=self.device) - first.view(k, b)[:, 0].index_select(0, member)
        index = member * width + within
        x = self.rows.new_zeros((k * width, *self.rows.shape[1:])).index_copy_(
            0, index, self.rows.index_select(0, rows)).view(k, width, *self.rows.shape[1:])
        return {"x": x, "weights": weights, "segment": segment, "index": index, "n_sets": b}

    def targets(self, sets):
        return self.y[sets], None if self.sample_weight is None else self.sample_weight[sets]


class _Predictions:
    """Stands in for the net in the estimator's score function, as skorch's cached
    ``EpochScoring`` does: ``forward`` returns the validation predictions already made."""

    def __init__(self, y_pred):
        self.y_pred = y_pred

    def forward(self, X, training=False):
        return self.y_pred


def _member_loss(criterion, y_pred, y_true, sample_weight):
    """Each member's batch loss (K,), as ``_AtomSetsNet.get_loss`` computes it for one net."""
    k, b = y_pred.shape[:2]
    if isinstance(criterion, nn.CrossEntropyLoss):
        loss = criterion(y_pred.reshape(k * b, -1), y_true.reshape(-1)).reshape(k, b, 1)
    else:
        loss = criterion(y_pred, y_true)  # (K, B, n_outputs), elementwise
    if sample_weight is None:
        return loss.reshape(k, -1).mean(dim=1)
    per_sample = loss.reshape(k, b, -1).mean(dim=2)
    return (sample_weight * per_sample).sum(dim=1) / sample_weight.sum(dim=1).clamp_min(
        torch.finfo(sample_weight.dtype).tiny)


def unsupported_data(X):
    """Why the data ``X`` cannot be trained on in a stack (a short reason), or None: descriptor
    columns beside the sets join rho's input, which the stacked module does not have."""
    from ._descriptors import split_descriptors

    try:
        return "X has descriptor columns beside its sets" if split_descriptors(X)[1] is not None else None
    except ValueError:
        return None  # a frame the estimator itself refuses, with its own message


def fit_stacked(estimators, X, y, sample_weight=None):
    """Fit the unfitted ``estimators`` on ``X, y`` together, as one stacked net; returns them.

    The estimators must be stackable (:func:`unsupported` gives None for each) and share
    everything but ``random_state``, ``lr``, ``weight_decay``, ``optimizer`` (Adam/AdamW),
    ``loss``, ``patience``, ``max_epochs`` and ``verbose``. Each comes back an ordinary fitted
    estimator (``net_`` a skorch net holding its own weights, ``history``, ``best_epoch_``,
    ``validation_indices_``), equal to what its own ``fit`` gives up to float32 rounding.
    """
    reason = unsupported_data(X)
    if reason is not None:
        raise ValueError(f"fit_stacked: {reason}; fit the estimators one by one.")
    _check_stack(estimators)
    prepared = []
    for e in estimators:
        twin = next((i for i, other in enumerate(estimators[: len(prepared)]) if _differ_in_seed_only(e, other)), None)
        prepared.append(e._prepare_fit(X, y, sample_weight) if twin is None
                        else _prepare_like(e, estimators[twin], prepared[twin]))
    dataset = prepared[0].dataset  # the members' datasets are equal (same X, y, weights): keep one
    prepared = [fit._replace(dataset=dataset) for fit in prepared]
    first = estimators[0]
    device = torch.device(first.device)
    start = time.perf_counter()
    with torch_threads(first.n_jobs):
        for e, fit in zip(estimators, prepared):
            with torch.random.fork_rng(devices=[]):  # the initialisation skorch gives the net under its seed
                torch.manual_seed(fit.seed)
                fit.net.initialize()
            e.net_ = fit.net
        _train(estimators, prepared, dataset, device)
    seconds = time.perf_counter() - start
    for e, fit in zip(estimators, prepared):
        e._record_validation_split(dataset, fit.y_for_split, fit.missing)
        if e.verbose == 1:
            print(e._fit_summary(seconds) + f" (one stack of {len(estimators)})", flush=True)
    return estimators


def _differ_in_seed_only(a, b):
    pa, pb = a.get_params(deep=False), b.get_params(deep=False)
    return all(_same(pa[name], pb[name]) for name in pa if name not in ("random_state", "verbose"))


def _prepare_like(estimator, twin, fit):
    """``estimator._prepare_fit`` on the data ``twin`` (the same estimator but for its seed) was
    prepared on: what ``fit`` learns before training (the standardisations, classes, feature
    names, the packed dataset) is the same, so it is shared rather than computed again (packing
    100,000 compositions takes seconds); only the seed and the net it configures differ."""
    params = twin.get_params(deep=False)
    vars(estimator).update({k: v for k, v in vars(twin).items() if k not in params and k != "net_"})
    seed = check_random_state(estimator.random_state).randint(np.iinfo(np.int32).max)  # as _prepare_fit draws it
    net_params = fit.net.get_params(deep=False)
    net = estimator._net(net_params["module__n_outputs"], fit.net.criterion, fit.score, seed,
                         stratified=fit.y_for_split is not None, weighted="criterion__reduction" in net_params)
    return fit._replace(net=net, seed=seed)


def _splits(prepared, dataset):
    """Each member's training and validation sets (its skorch ``ValidSplit`` under its seed)."""
    train, valid = [], []
    for fit in prepared:
        if fit.net.train_split is None:
            train.append(np.arange(len(dataset)))
            valid.append(None)
        else:
            t, v = fit.net.get_split_datasets(dataset, fit.y_for_split)
            train.append(np.asarray(t.indices))
            valid.append(v)
    if len({len(t) for t in train}) != 1:
        raise RuntimeError("The members' training splits differ in size; they cannot share batches.")
    return train, valid


def _train(estimators, prepared, dataset, device):
    nets = [fit.net for fit in prepared]
    n = len(nets)
    batch_size = estimators[0].batch_size
    stack = StackedAtomSetsModule([net.module_ for net in nets], estimators[0].activation).to(device)
    adam = _StackedAdam(stack, [e.optimizer for e in estimators], [e.lr for e in estimators],
                        [e.weight_decay for e in estimators])
    criteria = [net.criterion(reduction="none") for net in nets]
    train, valid = _splits(prepared, dataset)
    rngs = [np.random.default_rng(fit.seed) for fit in prepared]  # _SetBatches(shuffle=True, seed=seed)
    mean_rows = dataset.packed.offsets[-1] / max(dataset.packed.n_sets, 1)
    data = _DeviceSets(dataset, device, rows_per_batch=n * batch_size * mean_rows)
    lower = [e._lower_is_better for e in estimators]
    best = [math.inf if lo else -math.inf for lo in lower]
    best_epoch, misses = [0] * n, [0] * n
    best_state = {name: p.detach().clone() for name, p in stack.named_stacked()}
    valid_sets = [None if v is None else np.asarray(v.indices) for v in valid]
    active = list(range(n))  # stack position -> member
    epoch = 0
    while active:
        epoch += 1
        tick = time.perf_counter()
        orders = np.stack([rngs[m].permutation(train[m]) for m in active])
        loss_sum = torch.zeros(len(active), device=device)
        for inputs, y_true, weights in data.batches(orders, batch_size):
            losses = _losses(criteria, active, stack(**inputs), y_true, weights)
            adam.zero_grad()
            losses.sum().backward()
            adam.step()
            loss_sum += losses.detach() * y_true.shape[1]
        train_loss = (loss_sum / orders.shape[1]).cpu().numpy()
        stopped, improved = _end_epoch(estimators, nets, prepared, stack, data, criteria, active, valid,
                                       valid_sets, batch_size, epoch, train_loss, best, best_epoch, misses, lower,
                                       time.perf_counter() - tick)
        if improved:
            at = torch.as_tensor(improved, device=device)
            for name, p in stack.named_stacked():
                best_state[name].index_copy_(0, at, p.detach().index_select(0, at))
        if stopped:
            for position in stopped:
                _finish(estimators[active[position]], nets[active[position]], stack, best_state, position,
                        best_epoch[active[position]], misses[active[position]], best[active[position]])
            keep = [p for p in range(len(active)) if p not in stopped]
            at = torch.as_tensor(keep, device=device, dtype=torch.long)
            old_params = [p for _, p in stack.named_stacked()]
            stack.keep(at)
            adam.keep(at, old_params)
            best_state = {name: t.index_select(0, at) for name, t in best_state.items()}
            active = [active[p] for p in keep]


def _losses(criteria, active, y_pred, y_true, weights):
    kinds = [type(criteria[m]) for m in active]
    if len(set(kinds)) == 1:
        return _member_loss(criteria[active[0]], y_pred, y_true, weights)
    # members with different losses (selection candidates): one criterion per member
    return torch.cat([_member_loss(criteria[m], y_pred[i: i + 1], y_true[i: i + 1],
                                   None if weights is None else weights[i: i + 1]) for i, m in enumerate(active)])


@torch.no_grad()
def _validate(stack, data, criteria, active, valid_sets, batch_size):
    """Validation predictions (K, n_valid, n_outputs) and losses (K,) of the stacked members."""
    orders = np.stack([valid_sets[m] for m in active])
    predictions, loss_sum = [], 0
    for inputs, y_true, weights in data.batches(orders, batch_size):
        y_pred = stack(**inputs)
        loss_sum = loss_sum + _losses(criteria, active, y_pred, y_true, weights) * y_true.shape[1]
        predictions.append(y_pred)
    return torch.cat(predictions, dim=1), loss_sum / orders.shape[1]


def _end_epoch(estimators, nets, prepared, stack, data, criteria, active, valid, valid_sets, batch_size, epoch,
               train_loss, best, best_epoch, misses, lower, seconds):
    """Scores, history and early stopping of one epoch; the stack positions that stop, and those
    whose weights are this epoch's best."""
    bad = [m for i, m in enumerate(active) if not math.isfinite(train_loss[i])]
    if bad:
        m = bad[0]
        raise FloatingPointError(
            f"The training loss became {train_loss[active.index(m)]} in epoch {epoch}: the fit diverged "
            f"(is lr={estimators[m].lr} too large?) or the training data hold non-finite values. No model is returned."
        )
    scored = [i for i, m in enumerate(active) if valid[m] is not None]
    if scored:
        # the members of one stack share validation_fraction: all have a split or none has
        y_pred, valid_loss = _validate(stack, data, criteria, active, valid_sets, batch_size)
        y_pred, valid_loss = y_pred.cpu(), valid_loss.cpu().numpy()
    stopped, improved = [], []
    for i, m in enumerate(active):
        e, net = estimators[m], nets[m]
        net.history.new_epoch()
        net.history.record("epoch", epoch)
        net.history.record("train_loss", float(train_loss[i]))
        if valid[m] is not None:
            v = valid[m]
            y_valid = v.dataset.y[np.asarray(v.indices)]
            score = float(prepared[m].score(_Predictions(y_pred[i]), v, y_valid))
            net.history.record("valid_loss", float(valid_loss[i]))
            net.history.record(e._score_name, score)
            if score < best[m] if lower[m] else score > best[m]:
                best[m], best_epoch[m], misses[m] = score, epoch, 0
                improved.append(i)
            else:
                misses[m] += 1
            done = misses[m] == e.patience or epoch == e.max_epochs
        else:
            best_epoch[m] = epoch
            improved.append(i)
            done = epoch == e.max_epochs
        net.history.record("dur", seconds)
        if done:
            stopped.append(i)
    return stopped, improved


def _finish(estimator, net, stack, best_state, position, best_epoch, misses, best):
    """A member leaves the stack: its best weights into its own net, early stopping's state
    as skorch's ``EarlyStopping`` leaves it."""
    state = stack.member_state_dict(position)
    for name, value in best_state.items():
        state[name] = value[position].clone()
    net.module_.load_state_dict(state)
    callbacks = dict(net.callbacks_)
    if "early_stopping" in callbacks:
        stopping = callbacks["early_stopping"]
        stopping.best_epoch_, stopping.misses_, stopping.dynamic_threshold_ = best_epoch, misses, best
        stopping.best_model_weights_ = None
