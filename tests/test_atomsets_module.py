"""The AtomSets network's readouts against a plain, set-by-set writing of the paper's equations."""

from __future__ import annotations

import pytest
import torch

from sklearn_atomsets import _atomsets
from sklearn_atomsets._atomsets import AtomSetsModule, WeightedSet2Set


def _set2set_reference(readout, x, weights, sizes):
    """Eqs. 5-9 one set at a time: q*_t = [h_t, r_t], (h_t, c_t) = LSTM(q*_{t-1}, (h_{t-1}, c_{t-1})) from
    zeros, a_i = w_i exp(x_i . h_t) / sum_j w_j exp(x_j . h_t), r_t = sum_i a_i x_i."""
    out, start = [], 0
    for n in sizes:
        xs, ws = x[start:start + n], weights[start:start + n]
        start += n
        d = xs.shape[1]
        h, c, q = xs.new_zeros((1, d)), xs.new_zeros((1, d)), xs.new_zeros((1, 2 * d))
        for _ in range(readout.n_steps):
            h, c = readout.lstm(q, (h, c))
            a = ws * torch.exp(xs @ h[0])
            r = (a / a.sum()) @ xs
            q = torch.cat([h[0], r])[None]
        out.append(q[0])
    return torch.stack(out)


@pytest.mark.parametrize("reduced", [True, False])
@pytest.mark.parametrize("n_steps", [1, 2, 3, 5])
def test_set2set_equals_the_equations_with_their_gradients(monkeypatch, reduced, n_steps):
    monkeypatch.setattr(_atomsets, "_REDUCED_SET2SET", reduced)
    torch.manual_seed(n_steps)
    sizes = [1, 4, 2, 7, 1, 3]
    x = torch.randn(sum(sizes), 6, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(sum(sizes), dtype=torch.float64) + 0.05
    segment = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    readout = WeightedSet2Set(6, n_steps=n_steps).double()
    ours = readout(x, weights, segment, len(sizes))
    ref = _set2set_reference(readout, x, weights, sizes)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(ref)
    wrt = [x, *readout.parameters()]
    # with one step the LSTM's weights meet only zeros: no gradient (None) is their zero gradient
    grads = torch.autograd.grad((ours * probe).sum(), wrt, allow_unused=True)
    ref_grads = torch.autograd.grad((ref * probe).sum(), wrt)
    for g, r, p in zip(grads, ref_grads, wrt):
        torch.testing.assert_close(torch.zeros_like(p) if g is None else g, r, rtol=1e-10, atol=1e-12)


def test_set2set_net_trains_the_same_with_the_cell_written_out(monkeypatch):
    """A few Adam steps of a whole set2set net in float64: the reduced readout and nn.LSTMCell's
    give the same parameters (up to rounding), so the reduction changes no result."""
    torch.manual_seed(0)
    sizes = torch.randint(1, 6, (40,))
    x = torch.randn(int(sizes.sum()), 5, dtype=torch.float64)
    weights = torch.rand(len(x), dtype=torch.float64) + 0.1
    segment = torch.repeat_interleave(torch.arange(40), sizes)
    y = torch.randn(40, 1, dtype=torch.float64)
    params = {}
    for reduced in (True, False):
        monkeypatch.setattr(_atomsets, "_REDUCED_SET2SET", reduced)
        torch.manual_seed(1)
        net = AtomSetsModule(5, readout=("mean", "set2set")).double()
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(20):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x, weights, segment), y).backward()
            opt.step()
        params[reduced] = [p.detach() for p in net.parameters()]
    for a, b in zip(params[True], params[False]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
