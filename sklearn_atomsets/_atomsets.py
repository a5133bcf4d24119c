"""The AtomSets deep-sets network (Chen & Ong 2021, Fig. 1c) in PyTorch.

    rows of a set --phi (MLP per row)--> readout over the set --rho (MLP)--> output
                                          [+ descriptors]

Rows are feature vectors (transfer learning: V0..V3 of the frozen MEGNet) or atomic
numbers looked up in a trainable embedding (the paper's non-TL "AtomSets"). Readouts are
the weighted mean (eq. 4) and the weighted set2set (eqs. 5-9: an LSTM whose attention
softmax is weighted by the row weights); both may be used and are then concatenated.

Sets arrive packed: ``features`` holds the rows of all sets in the batch, ``segment[i]``
says which set row i belongs to (sorted), ``weights`` holds the row weights. With ``index``,
``features`` is a table of distinct rows and row i of the batch is ``features[index[i]]``:
phi then runs once per distinct row (an element, say) and its outputs are gathered.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AtomSetsModule", "WeightedMean", "WeightedSet2Set"]

ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU}
READOUTS = ("mean", "set2set")

#: WeightedSet2Set's LSTM cell written out with its exact reductions (see its forward).
#: Off only to measure.
_REDUCED_SET2SET = True


def _segment_sum(x, segment, n):
    return x.new_zeros((n,) + x.shape[1:]).index_add_(0, segment, x)


class WeightedMean(nn.Module):
    """Eq. 4: sum_i w_i x_i / sum_i w_i over the rows of each set."""

    def forward(self, x, weights, segment, n_sets):
        total = _segment_sum(x * weights[:, None], segment, n_sets)
        return total / _segment_sum(weights, segment, n_sets)[:, None]

    def out_features(self, in_features):
        return in_features


class WeightedSet2Set(nn.Module):
    """Eqs. 5-9: set2set readout whose attention is weighted by the row weights.

    q*_t = [h_t, r_t],  h_t = LSTM(q*_{t-1}),  e_i = x_i . h_t[set(i)],
    a_i = w_i exp(e_i) / sum_j w_j exp(e_j),  r_t = sum_i a_i x_i.
    """

    def __init__(self, in_features, n_steps=3):
        super().__init__()
        self.n_steps = n_steps
        self.lstm = nn.LSTMCell(2 * in_features, in_features)  # holds the parameters; see forward

    def forward(self, x, weights, segment, n_sets):
        # The LSTM cell written out (gates i, f, g, o as nn.LSTMCell orders them), with two
        # exact reductions: at t = 1 input and state are zero, so the gates are the biases,
        # the same for every set; later, q*_{t-1} = [h_{t-1}, r_{t-1}] and the state h_{t-1}
        # are the same h, so W_ih q* + W_hh h is one product with [W_ih,h + W_hh, W_ih,r].
        # Same function and gradients (tests/test_atomsets_module.py); a training step of a
        # set2set net about 1.1x faster (benchmarks/training_step_speed.py).
        if not _REDUCED_SET2SET:
            return self._forward_cell(x, weights, segment, n_sets)
        d = x.shape[1]
        lstm = self.lstm
        bias = lstm.bias_ih + lstm.bias_hh
        weight = lstm.weight_ih + nn.functional.pad(lstm.weight_hh, (0, d))
        log_w = torch.log(weights)
        for t in range(self.n_steps):
            if t == 0:
                i, _, g, o = bias[None].chunk(4, 1)
                c = torch.sigmoid(i) * torch.tanh(g)
            else:
                i, f, g, o = torch.addmm(bias, q_star, weight.t()).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)  # (1, d) at t = 1, else (n_sets, d)
            e = (x @ h[0] if t == 0 else (x * h.index_select(0, segment)).sum(-1)) + log_w
            r = self._attend(x, e, segment, n_sets)
            q_star = torch.cat([h.expand(n_sets, d), r], dim=-1)
        return q_star

    @staticmethod
    def _attend(x, e, segment, n_sets):
        """r = sum_i a_i x_i per set, a = softmax of e over the rows of each set."""
        e_max = e.new_full((n_sets,), -torch.inf).scatter_reduce(0, segment, e.detach(), "amax")
        a = torch.exp(e - e_max.index_select(0, segment))
        a = a / _segment_sum(a, segment, n_sets).index_select(0, segment)
        return _segment_sum(x * a[:, None], segment, n_sets)

    def _forward_cell(self, x, weights, segment, n_sets):
        """The same with nn.LSTMCell on zero-initialised state (only to measure the above against)."""
        d = x.shape[1]
        h = x.new_zeros((n_sets, d))
        c = x.new_zeros((n_sets, d))
        q_star = x.new_zeros((n_sets, 2 * d))
        log_w = torch.log(weights)
        for _ in range(self.n_steps):
            h, c = self.lstm(q_star, (h, c))
            r = self._attend(x, (x * h.index_select(0, segment)).sum(-1) + log_w, segment, n_sets)
            q_star = torch.cat([h, r], dim=-1)
        return q_star

    def out_features(self, in_features):
        return 2 * in_features


def _mlp(in_features, widths, activation, dropout):
    layers = []
    for width in widths:
        layers += [nn.Linear(in_features, width), ACTIVATIONS[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_features = width
    return nn.Sequential(*layers), in_features


class AtomSetsModule(nn.Module):
    """phi -> readout(s) -> rho -> output.

    Parameters
    ----------
    n_features : int or None
        Width of the feature rows; ``None`` means rows are atomic numbers, embedded.
    n_outputs : int
        Regression targets, or classes (logits) for classification.
    n_neurons, n_neurons_final : tuple of int
        Widths of phi (per row) and rho (after the readout).
    readout : "mean", "set2set" or a tuple of both
    n_set2set_steps : int
    activation : str
    dropout : float
    n_elements, embedding_dim : int
        Vocabulary and width of the element embedding (embedding mode only).
    feature_mean, feature_scale : array-like of shape (n_features,) or None
        With both, feature rows enter phi as ``(row - feature_mean) / feature_scale`` (fixed
        buffers, saved with the weights; feature mode only).
    n_descriptors : int, default=0
        Width of a fixed-length descriptor vector per set (matminer descriptors, say),
        concatenated to the readout as part of rho's input; ``forward`` then takes
        ``descriptors`` of shape (n_sets, n_descriptors).
    descriptor_mean, descriptor_scale : array-like of shape (n_descriptors,) or None
        With both, descriptors enter rho as ``(d - descriptor_mean) / descriptor_scale``
        (fixed buffers, saved with the weights).
    descriptor_min, descriptor_max : array-like of shape (n_descriptors,) or None
        With both, descriptors are first clipped to ``[descriptor_min, descriptor_max]`` (the
        training range; fixed buffers).
    """

    # modules pickled before descriptors existed (a fitted estimator of an earlier version) have none
    n_descriptors = 0
    standardise_descriptors = False
    clip_descriptors = False

    def __init__(self, n_features=None, n_outputs=1, n_neurons=(64, 64), n_neurons_final=(64, 64),
                 readout="mean", n_set2set_steps=3, activation="relu", dropout=0.0, n_elements=95,
                 embedding_dim=32, feature_mean=None, feature_scale=None, n_descriptors=0,
                 descriptor_mean=None, descriptor_scale=None, descriptor_min=None, descriptor_max=None):
        super().__init__()
        if feature_mean is not None and feature_scale is not None and n_features is None:
            raise ValueError("feature_mean and feature_scale standardise feature rows, not atomic numbers.")
        self.standardise = self._buffer_pair(("feature_mean", feature_mean), ("feature_scale", feature_scale),
                                             n_features)
        if n_features is None:
            self.embedding = nn.Embedding(n_elements, embedding_dim)
            width = embedding_dim
        else:
            self.embedding = None
            width = n_features
        self.phi, width = _mlp(width, n_neurons, activation, dropout)
        names = (readout,) if isinstance(readout, str) else tuple(readout)
        self.readouts = nn.ModuleList(
            WeightedMean() if name == "mean" else WeightedSet2Set(width, n_set2set_steps) for name in names
        )
        width = sum(r.out_features(width) for r in self.readouts)
        self.n_descriptors = int(n_descriptors)
        self.standardise_descriptors = self._buffer_pair(
            ("descriptor_mean", descriptor_mean), ("descriptor_scale", descriptor_scale), self.n_descriptors)
        self.clip_descriptors = self._buffer_pair(
            ("descriptor_min", descriptor_min), ("descriptor_max", descriptor_max), self.n_descriptors)
        width += self.n_descriptors
        self.rho, width = _mlp(width, n_neurons_final, activation, dropout)
        self.output = nn.Linear(width, n_outputs)

    def _buffer_pair(self, first, second, width):
        """Register two fixed float32 buffers of ``width`` values (``(name, value)`` each) that go
        together (both None: none); whether they were given."""
        (name_a, a), (name_b, b) = first, second
        if (a is None) != (b is None):
            raise ValueError(f"{name_a} and {name_b} go together.")
        if a is None:
            return False
        for name, value in (first, second):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32).reshape(width))
        return True

    def forward(self, features, weights, segment, index=None, descriptors=None):
        x = self.embedding(features) if self.embedding is not None else features
        if self.standardise:
            x = (x - self.feature_mean) / self.feature_scale
        x = self.phi(x)
        if index is not None:
            x = x.index_select(0, index)
        n_sets = int(segment[-1]) + 1
        pooled = [r(x, weights, segment, n_sets) for r in self.readouts]
        x = pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=-1)
        if (descriptors is None) != (self.n_descriptors == 0):
            raise ValueError(f"This module takes {self.n_descriptors} descriptors per set; got "
                             f"{'none' if descriptors is None else descriptors.shape[-1]}.")
        if descriptors is not None:
            if self.clip_descriptors:
                descriptors = torch.clamp(descriptors, self.descriptor_min, self.descriptor_max)
            if self.standardise_descriptors:
                descriptors = (descriptors - self.descriptor_mean) / self.descriptor_scale
            x = torch.cat([x, descriptors.to(x.dtype)], dim=-1)
        return self.output(self.rho(x))
