"""The frozen MEGNet encoder in pure PyTorch, read straight from megnet's Keras ``.hdf5``.

The ``.hdf5`` holds the Keras functional graph (``model_config``) and the weights. We walk
that graph and run each layer with a PyTorch equivalent, so any megnet MEGNetModel
configuration (number of blocks, unit sizes, set2set steps, dropout) is read, not assumed.
Every intermediate output the AtomSets paper uses is returned by name:

================  ===========  ========================================================
name              level        what it is
================  ===========  ========================================================
``V0``            site         element embedding of each site's atomic number
``V1`` .. ``Vn``  site         atom output of MEGNet block i (megnet's
                               ``MEGNetDescriptor.get_atom_features(level=i)``)
``E1`` .. ``En``  bond         bond output of MEGNet block i
``u1`` .. ``un``  structure    state output of MEGNet block i
``set2set_atom``  structure    set2set readout of the atoms
``set2set_bond``  structure    set2set readout of the bonds
``f``             structure    final readout vector: [set2set_atom, set2set_bond, state]
``output``        structure    the network's raw output
``prediction``    structure    the parent's prediction, with its target scaler undone
================  ===========  ========================================================

Nothing here needs TensorFlow; the weights are frozen (no gradients).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict

import h5py
import numpy as np
import torch
from torch import nn

from .. import _structures
from .._base import BatchedEncoder, EncoderOutput
from .._structures import GraphConstructionError, _one_graph, over_budget
from ._graph import assemble
from ._models import DEFAULT_PARENT, content_sha256, load_parent
from ._symmetry import reduce_graphs

__all__ = ["EncoderOutput", "MEGNET_CITATION", "MEGNetEncoder", "MEGNetModule"]

MEGNET_CITATION = (
    "@article{chen_graph_2019, title={Graph Networks as a Universal Machine Learning Framework for "
    "Molecules and Crystals}, author={Chen, Chi and Ye, Weike and Zuo, Yunxing and Zheng, Chen and "
    "Ong, Shyue Ping}, journal={Chemistry of Materials}, volume={31}, number={9}, pages={3564--3572}, "
    "year={2019}, doi={10.1021/acs.chemmater.9b01294}}"
)

# Positions of megnet's model inputs (megnet.models.megnet.make_megnet_model).
_INPUT_ROLES = ("atom", "bond", "state", "index1", "index2", "atom_graph", "bond_graph")


_LOG2 = math.log(2.0)


def _softplus2(x):
    # megnet.activations.softplus2 = log(exp(x) + 1) - log(2): one fused, overflow-safe
    # kernel and one in-place pass instead of megnet's seven (this is the encoder's hot loop)
    return torch.nn.functional.softplus(x).sub_(_LOG2)


# Bonds are pushed through phi_e in slices small enough for the intermediates to stay in
# the CPU cache; the activations are memory-bound otherwise.
_BOND_CHUNK = 8192


def _linear(x, weight, bias):
    return x @ weight if bias is None else torch.addmm(bias, x, weight)


def _hard_sigmoid(x):
    # Keras 2 definition, the one the parents were trained with
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


_ACTIVATIONS = {
    None: lambda x: x,
    "linear": lambda x: x,
    "softplus2": _softplus2,
    "softplus": torch.nn.functional.softplus,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "swish": lambda x: x * torch.sigmoid(x),
}


def _activation(name):
    if isinstance(name, dict):  # serialised Keras activation: {"class_name": .., "config": ..}
        config = name.get("config")
        name = config.get("name") if isinstance(config, dict) else config or name.get("class_name")
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise NotImplementedError(f"Keras activation {name!r} is not supported.") from None


def _segment_sum(x, index, n):
    out = torch.zeros((n,) + x.shape[1:], dtype=x.dtype, device=x.device)
    return out.index_add_(0, index, x)


def _segment_mean(x, index, n, weight=None):
    if weight is not None:
        return _weighted_segment_mean(x, index, n, weight)
    counts = torch.bincount(index, minlength=n).clamp_min(1).to(x.dtype)
    return _segment_sum(x, index, n) / counts.reshape((-1,) + (1,) * (x.dim() - 1))


def _weighted_segment_sum(x, index, n, weight=None):
    return _segment_sum(x if weight is None else x * weight[:, None], index, n)


def _weighted_segment_mean(x, index, n, weight):
    # each row stands for `weight` equal rows of the full graph (see _symmetry.py)
    total = _segment_sum(weight, index, n).clamp_min(1.0)
    return _segment_sum(x * weight[:, None], index, n) / total[:, None]


class _Dense(nn.Module):
    def __init__(self, config, w):
        super().__init__()
        self.register_buffer("kernel", torch.as_tensor(w["kernel"]))
        self.register_buffer("bias", torch.as_tensor(w["bias"]) if "bias" in w else None)
        self.act = _activation(config.get("activation"))

    def forward(self, x):
        return self.act(_linear(x, self.kernel, self.bias))


class _Embedding(nn.Module):
    def __init__(self, config, w):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(w["embeddings"]))

    def forward(self, z):
        return self.table[z]


class _MEGNetLayer(nn.Module):
    """One MEGNet graph-network block: edge, node and state updates (megnet's MEGNetLayer)."""

    def __init__(self, config, w):
        super().__init__()
        self.act = _activation(config.get("activation"))
        self.reduce = {"mean": _segment_mean, "sum": _weighted_segment_sum}[config.get("pool_method", "mean")]
        for part in ("e", "v", "u"):
            i = 0
            while f"weight_{part}_{i}" in w:
                self.register_buffer(f"w_{part}_{i}", torch.as_tensor(w[f"weight_{part}_{i}"]))
                bias = w.get(f"bias_{part}_{i}")
                self.register_buffer(f"b_{part}_{i}", None if bias is None else torch.as_tensor(bias))
                i += 1
            setattr(self, f"n_{part}", i)

    def _mlp(self, x, part, start=0, out=None):
        # megnet applies the activation between layers; the last layer stays linear
        n = getattr(self, f"n_{part}")
        for i in range(start, n):
            if i:
                x = self.act(x)
            weight, bias = getattr(self, f"w_{part}_{i}"), getattr(self, f"b_{part}_{i}")
            if out is not None and i == n - 1:
                return torch.addmm(bias, x, weight, out=out) if bias is not None else torch.mm(x, weight, out=out)
            x = _linear(x, weight, bias)
        return x

    def _edge_update(self, v, e, u, index1, index2, bond_graph):
        """phi_e on [v_send, v_receive, e, u]. Its first layer is split by input so the
        atom and state parts are projected once per atom / per graph and then gathered,
        instead of multiplying a (n_bonds, 2 d_v + d_e + d_u) concatenation."""
        d_v, d_e = v.shape[1], e.shape[1]
        w = self.w_e_0
        per_state = _linear(u, w[2 * d_v + d_e :], self.b_e_0)
        send, receive = v @ w[:d_v], v @ w[d_v : 2 * d_v]
        w_bond = w[2 * d_v : 2 * d_v + d_e]
        out = e.new_empty((e.shape[0], getattr(self, f"w_e_{self.n_e - 1}").shape[1]))
        for start in range(0, e.shape[0], _BOND_CHUNK):
            sl = slice(start, start + _BOND_CHUNK)
            h = send.index_select(0, index1[sl])
            h += receive.index_select(0, index2[sl])
            h += per_state.index_select(0, bond_graph[sl])
            h = torch.addmm(h, e[sl], w_bond)
            if self.n_e == 1:
                out[sl] = h
            else:
                self._mlp(h, "e", start=1, out=out[sl])
        return out

    def forward(self, v, e, u, index1, index2, atom_graph, bond_graph, n_graphs, atom_weight=None, bond_weight=None):
        """With weights, each atom / bond row stands for that many equal rows of the full
        graph (a symmetry-reduced batch, see _symmetry.py): a site keeps all its own bonds,
        so the atom update is unchanged; the state update weighs rows by multiplicity."""
        e_new = self._edge_update(v, e, u, index1, index2, bond_graph)
        e_to_v = self.reduce(e_new, index1, v.shape[0])
        v_new = self._mlp(torch.cat([e_to_v, v, u[atom_graph]], dim=-1), "v")
        e_to_u = self.reduce(e_new, bond_graph, n_graphs, bond_weight)
        v_to_u = self.reduce(v_new, atom_graph, n_graphs, atom_weight)
        u_new = self._mlp(torch.cat([e_to_u, v_to_u, u], dim=-1), "u")
        return v_new, e_new, u_new


class _Set2Set(nn.Module):
    """megnet's Set2Set readout (Vinyals et al. 2015) as megnet implements it.

    megnet's LSTM never carries its cell state from one step to the next (the state it feeds
    back is always the initial zeros); we do the same, since that is what the parent learned.
    """

    def __init__(self, config, w):
        super().__init__()
        self.T = int(config["T"])
        self.n_hidden = int(config["n_hidden"])
        self.register_buffer("m_weight", torch.as_tensor(w["x_to_m_weight"]))
        self.register_buffer("m_bias", torch.as_tensor(w["x_to_m_bias"]) if "x_to_m_bias" in w else None)
        self.register_buffer("rec_kernel", torch.as_tensor(w["recurrent_kernel"]))
        bias = w.get("recurrent_bias")
        self.register_buffer("rec_bias", None if bias is None else torch.as_tensor(bias))
        self.gate = _activation(config.get("recurrent_activation", "hard_sigmoid"))
        self.cell = _activation(config.get("activation_lstm", "tanh"))

    def forward(self, x, graph, n_graphs, weight=None):
        """With ``weight``, row i stands for weight[i] equal rows: attention w_i exp(e_i)."""
        m = x @ self.m_weight
        if self.m_bias is not None:
            m = m + self.m_bias
        n = self.n_hidden
        q_star = m.new_zeros((n_graphs, 2 * n))
        for _ in range(self.T):
            z = q_star @ self.rec_kernel
            if self.rec_bias is not None:
                z = z + self.rec_bias
            c = self.gate(z[:, :n]) * self.cell(z[:, 2 * n : 3 * n])  # forget gate acts on zeros
            h = self.gate(z[:, 3 * n :]) * self.cell(c)
            e = (m * h[graph]).sum(-1)
            e_max = torch.full((n_graphs,), -torch.inf, dtype=e.dtype, device=e.device)
            e_max = e_max.scatter_reduce(0, graph, e, reduce="amax", include_self=True)
            a = torch.exp(e - e_max[graph])
            if weight is not None:
                a = a * weight
            a = a / _segment_sum(a, graph, n_graphs)[graph]
            r = _segment_sum(m * a[:, None], graph, n_graphs)
            q_star = torch.cat([h, r], dim=-1)
        return q_star


class _GaussianExpansion(nn.Module):
    def __init__(self, config, w):
        super().__init__()
        self.register_buffer("centers", torch.as_tensor(np.ravel(config["centers"]), dtype=torch.float32))
        self.width = float(config["width"])

    def forward(self, d):
        return torch.exp(-((d[:, None] - self.centers[None, :]) ** 2) / self.width**2)


class _Add(nn.Module):
    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class _Concatenate(nn.Module):
    def __init__(self, config, w):
        super().__init__()
        self.axis = config.get("axis", -1)
        if self.axis not in (-1, 2):
            raise NotImplementedError(f"Concatenate along axis {self.axis} is not supported.")

    def forward(self, *xs):
        return torch.cat(xs, dim=-1)


class _Identity(nn.Module):  # Dropout at inference
    def forward(self, x):
        return x


_ROWWISE = ("Dense", "Dropout", "GaussianExpansion")  # act on each row on its own
_LAYERS = {
    "Dense": _Dense,
    "Embedding": _Embedding,
    "MEGNetLayer": _MEGNetLayer,
    "Set2Set": _Set2Set,
    "GaussianExpansion": _GaussianExpansion,
    "Concatenate": _Concatenate,
    "Add": lambda config, w: _Add(),
    "Dropout": lambda config, w: _Identity(),
}


def _as_str(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_keras_hdf5(path):
    """Keras model config and weights of a megnet ``.hdf5`` file, with h5py only.

    Returns ``(config, weights)``: the functional-model config dict and, per layer name, a
    dict from the weight's short name (``kernel``, ``weight_e_0``, ...) to its array.
    """
    with h5py.File(path, "r") as fh:
        if "model_config" not in fh.attrs:
            raise ValueError(f"{path} holds no Keras model config; is it a megnet model file?")
        config = json.loads(_as_str(fh.attrs["model_config"]))
        group = fh["model_weights"] if "model_weights" in fh else fh
        weights = {}
        for name in group:
            layer = group[name]
            names = [_as_str(n) for n in layer.attrs.get("weight_names", [])]
            weights[name] = {n.split("/")[-1].split(":")[0]: np.asarray(layer[n]) for n in names}
    return config, weights


class MEGNetModule(nn.Module):
    """A megnet Keras model re-expressed in PyTorch, returning its intermediate outputs.

    Build it with :meth:`from_hdf5`. ``forward`` takes one disjoint batch graph (megnet's
    layout without the leading batch axis) and returns a dict of named tensors (see the
    module docstring for the names).
    """

    def __init__(self, config, weights):
        super().__init__()
        if config.get("class_name") not in ("Model", "Functional"):
            raise NotImplementedError(f"Only Keras functional models are supported, got {config.get('class_name')}.")
        body = config["config"]
        inputs = [entry[0] for entry in body["input_layers"]]
        if len(inputs) != len(_INPUT_ROLES):
            raise ValueError(f"A megnet model has {len(_INPUT_ROLES)} inputs; this one has {len(inputs)}.")
        self.input_role = dict(zip(inputs, _INPUT_ROLES))
        self.output_ref = tuple(body["output_layers"][0][:3:2])
        self.input_shapes = {}
        self.steps = []  # (layer name, class name, [(source layer, tensor index), ...])
        self.layers = nn.ModuleDict()
        for layer in body["layers"]:
            name, cls, cfg = layer.get("name", layer["config"].get("name")), layer["class_name"], layer["config"]
            if cls == "InputLayer":
                self.input_shapes[self.input_role[name]] = cfg.get("batch_input_shape", cfg.get("batch_shape"))
                continue
            nodes = layer["inbound_nodes"]
            if len(nodes) != 1 or not isinstance(nodes[0], list):
                raise NotImplementedError(f"Layer {name} is shared or saved in an unsupported format.")
            if cls not in _LAYERS:
                raise NotImplementedError(f"Keras layer {cls} ({name}) has no PyTorch equivalent here.")
            self.layers[name] = _LAYERS[cls](cfg, weights.get(name, {}))
            self.steps.append((name, cls, [(src[0], src[2]) for src in nodes[0]]))
        self.steps = self._topological(self.steps)
        self._name_outputs()
        self.plan = self._fuse_rowwise_chains()

    def _fuse_rowwise_chains(self):
        """Group runs of row-wise layers (a Dense feeding only the next Dense) so that they
        run slice by slice over the bonds, keeping intermediates in the CPU cache."""
        consumers = defaultdict(int)
        for _, _, srcs in self.steps:
            for src in srcs:
                consumers[src] += 1
        named = set(self.output_names.values())
        plan, open_chains = [], {}
        for name, cls, srcs in self.steps:
            if cls in _ROWWISE and len(srcs) == 1:
                chain = open_chains.pop(srcs[0][0], None)
                if chain is not None and consumers[srcs[0]] == 1 and srcs[0] not in named:
                    chain[3].append(name)
                    chain[0] = name
                    open_chains[name] = chain
                    continue
            entry = [name, cls, srcs, [name]]
            plan.append(entry)
            if cls in _ROWWISE:
                open_chains[name] = entry
        return [tuple(entry[:3]) + (tuple(entry[3]),) for entry in plan]

    def _rowwise(self, x, members):
        modules = [self.layers[m] for m in members]
        chunks = []
        for start in range(0, max(x.shape[0], 1), _BOND_CHUNK):
            y = x[start : start + _BOND_CHUNK]
            for module in modules:
                y = module(y)
            chunks.append(y)
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]

    def _topological(self, steps):
        done, ordered, pending = set(self.input_role), [], list(steps)
        while pending:
            ready = [s for s in pending if all(src in done for src, _ in s[2])]
            if not ready:
                raise ValueError("The Keras graph has a cycle or an unknown input.")
            for s in ready:
                ordered.append(s)
                done.add(s[0])
                pending.remove(s)
        return ordered

    def _name_outputs(self):
        """Map the paper's names (V0, V1.., u1.., f, set2set_*) onto layer outputs."""
        names = {}
        role = self.input_role
        blocks = [s for s in self.steps if s[1] == "MEGNetLayer"]
        for k, (layer, _, _) in enumerate(blocks, start=1):
            names[f"V{k}"], names[f"E{k}"], names[f"u{k}"] = (layer, 0), (layer, 1), (layer, 2)
        for layer, cls, srcs in self.steps:
            if cls == "Embedding" and role.get(srcs[0][0]) == "atom":
                names["V0"] = (layer, 0)
            elif cls == "Set2Set":
                kind = {"atom_graph": "atom", "bond_graph": "bond"}[role[srcs[1][0]]]
                names[f"set2set_{kind}"] = (layer, 0)
            elif cls == "Concatenate":
                names["f"] = (layer, 0)
        names["output"] = self.output_ref
        order = {"V": 0, "E": 1, "u": 2}
        self.output_names = dict(
            sorted(names.items(), key=lambda kv: (order.get(kv[0][0], 3), kv[0]) if kv[0][1:].isdigit() else (3, ""))
        )

    @classmethod
    def from_hdf5(cls, path):
        config, weights = read_keras_hdf5(path)
        module = cls(config, weights)
        module.requires_grad_(False)
        return module.eval()

    @property
    def atom_input_is_z(self):
        return len(self.input_shapes["atom"]) == 2

    @property
    def bond_input_is_expanded(self):
        return len(self.input_shapes["bond"]) == 3

    @property
    def max_atomic_number(self):
        for layer, cls, srcs in self.steps:
            if cls == "Embedding" and self.input_role.get(srcs[0][0]) == "atom":
                return self.layers[layer].table.shape[0] - 1
        raise NotImplementedError("This megnet model takes atom feature vectors, not atomic numbers.")

    def output_widths(self):
        """Width of every named output, read from the layers' weights and configuration.

        No forward pass: naming the features starts no torch thread pool (so a process that
        forks workers afterwards, as matminer's ``Pool`` does, stays fork-safe) and works
        whatever device the module is on.
        """
        if "_widths" not in self.__dict__:
            bond_shape = self.input_shapes["bond"]
            widths = {
                ("atom", 0): None,  # atomic numbers, embedded by the first layer
                ("bond", 0): bond_shape[-1] if len(bond_shape) == 3 else None,
                ("state", 0): self.input_shapes["state"][-1],
            }
            alias = self.input_role
            for layer, cls, srcs in self.steps:
                module = self.layers[layer]
                inputs = [widths.get((alias.get(src, src), idx)) for src, idx in srcs]
                if cls == "Embedding":
                    out = (module.table.shape[1],)
                elif cls == "Dense":
                    out = (module.kernel.shape[1],)
                elif cls == "GaussianExpansion":
                    out = (module.centers.shape[0],)
                elif cls == "MEGNetLayer":
                    out = tuple(getattr(module, f"w_{part}_{getattr(module, f'n_{part}') - 1}").shape[1]
                                for part in ("v", "e", "u"))
                elif cls == "Set2Set":
                    out = (2 * module.n_hidden,)
                elif cls == "Concatenate":
                    out = (sum(inputs),)
                else:  # Add, Dropout: the shape of their (first) input
                    out = (inputs[0],)
                for i, width in enumerate(out):
                    widths[(layer, i)] = int(width)
            self._widths = {name: widths[ref] for name, ref in self.output_names.items()}
        return self._widths

    def element_embedding(self):
        """The V0 table: row z is the embedding of atomic number z."""
        return self.layers[self.output_names["V0"][0]].table

    @torch.no_grad()
    def forward(self, atom, bond, state, index1, index2, atom_graph, bond_graph, n_graphs, bond_inverse=None,
                outputs=None, atom_weight=None, bond_weight=None):
        """Run the graph. With ``bond_inverse``, ``bond`` holds only the distinct bond rows
        (bond i is row ``bond_inverse[i]``): layers that see nothing but the bond input
        (the bond pre-block, Gaussian expansion) then run once per distinct bond length,
        and rows are spread out to all bonds where the bond meets atoms or states.
        ``atom_weight`` / ``bond_weight``: multiplicities of a symmetry-reduced batch
        (see _symmetry.py), used in every mean over a graph and in set2set's softmax."""
        values = {}
        for role, x in zip(_INPUT_ROLES, (atom, bond, state, index1, index2, atom_graph, bond_graph)):
            values[(role, 0)] = x
        alias = dict(self.input_role)
        distinct = {("bond", 0)} if bond_inverse is not None else set()

        def get(src, idx, spread=True):
            key = (alias.get(src, src), idx)
            if spread and key in distinct:
                values[key] = values[key].index_select(0, bond_inverse)
                distinct.discard(key)
            return values[key]

        wanted = self.output_names if outputs is None else {n: self.output_names[n] for n in outputs}
        needed = self._needed_layers(tuple(wanted))
        for layer, cls, srcs, members in self.plan:
            if layer not in needed:
                continue
            module = self.layers[layer]
            if cls in _ROWWISE:
                in_distinct = (alias.get(srcs[0][0], srcs[0][0]), srcs[0][1]) in distinct
                values[(layer, 0)] = self._rowwise(get(*srcs[0], spread=False), members)
                if in_distinct:
                    distinct.add((layer, 0))
                continue
            args = [get(s, i) for s, i in srcs]
            if cls == "MEGNetLayer":
                out = module(*args[:7], n_graphs, atom_weight, bond_weight)
            elif cls == "Set2Set":
                weight = atom_weight if alias.get(srcs[1][0]) == "atom_graph" else bond_weight
                out = module(args[0], args[1], n_graphs, weight)
            else:
                out = module(*args)
            for i, tensor in enumerate(out if isinstance(out, tuple) else (out,)):
                values[(layer, i)] = tensor
        return {name: get(*ref) for name, ref in wanted.items()}

    def _needed_layers(self, names):
        """Layers the requested outputs depend on (V1 alone needs only the first block)."""
        cache = self.__dict__.setdefault("_needed", {})
        if names not in cache:
            producer = {entry[0]: entry for entry in self.plan}
            needed, todo = set(), [self.output_names[n][0] for n in names]
            while todo:
                layer = todo.pop()
                if layer in needed or layer not in producer:
                    continue
                needed.add(layer)
                todo.extend(src for src, _ in producer[layer][2])
            cache[names] = needed
        return cache[names]


_LEVELS = {"V": "site", "E": "bond"}
_STRUCTURE_ORDER = ("f", "u", "set2set_atom", "set2set_bond")

# A batch is run reduced only when that removes at least this fraction of its bonds. An estimate,
# not a measured break-even: the copy back to every site and bond costs a few per cent of an
# encode, about what a forward pass over 10% fewer bonds saves. (The MatBench sets are far from
# it: dielectric batches keep ~45% of their bonds; crystals without symmetry are not reduced.)
_MIN_GAIN = 0.1

# Forward-pass memory of a MEGNet parent per bond and per site, for the batch budget
# (_structures.MAX_BATCH_BYTES). Peak RSS above an idle encoder, every output, unreduced, one torch
# thread: 1.8 kB per bond at 86,000 bonds and 1.5 kB at 290,000 (Cu supercells, 5 A cutoff); the
# rest of the 2 kB is margin. The symmetry reduction only ever lowers it.
_BYTES_PER_BOND = 2000
_BYTES_PER_ATOM = 1000


def output_level(name):
    """``"site"``, ``"bond"`` or ``"structure"``: how many rows an output has per structure."""
    return _LEVELS.get(name[0], "structure") if name[1:].isdigit() else "structure"


class MEGNetEncoder(BatchedEncoder):
    """Frozen pretrained MEGNet turning crystal structures into AtomSets features.

    Parameters
    ----------
    parent : str, path-like or ParentModel, default="Eform_MP_2019"
        The pretrained parent model (see :func:`load_parent`).
    backend : {"torch", "megnet"}, default="torch"
        ``"torch"``: this package's PyTorch re-implementation (no TensorFlow).
        ``"megnet"``: the original megnet/Keras model (needs the ``[megnet]`` extra); the
        reference the PyTorch path is tested against.
    batch_size : int, default=256
        Structures per forward pass (fewer where the next would take it over the memory
        budget, ``MAX_BATCH_BYTES``).
    device : str or torch.device, default="cpu"
        Torch device for the ``"torch"`` backend (``"cuda"``, ``torch.device("cuda", 1)``, ...).
        Outputs always come back as NumPy arrays on the host.
    symmetry_reduction : bool, default=True
        ``"torch"`` backend: run the network once per class of equivalent sites (colour
        refinement on the crystal graph, bond lengths equal within ``1e-6`` A; see
        ``_symmetry.py``) with multiplicities in every mean and softmax, and copy the
        results back to every site and bond. Exact up to float rounding and that tolerance;
        ``False`` runs every site.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from sklearn_atomsets import MEGNetEncoder
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"],
    ...                                  [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> out = MEGNetEncoder().encode([nacl])
    >>> out["V1"][0].shape, out["f"].shape
    ((8, 32), (1, 96))
    >>> round(float(out["prediction"][0, 0]), 1)  # formation energy, eV/atom
    -2.1
    """

    label = "MEGNet"
    family = "megnet"

    def __init__(self, parent=DEFAULT_PARENT, backend="torch", batch_size=256, device="cpu", symmetry_reduction=True):
        self.parent = parent
        self.backend = backend
        self.batch_size = batch_size
        self.device = device
        self.symmetry_reduction = symmetry_reduction

    # Pickles keep where the weights are, never the weights themselves (BatchedEncoder.__getstate__).

    @property
    def parent_(self):
        if "parent_model_" not in self.__dict__:
            self.parent_model_ = load_parent(self.parent)
        return self.parent_model_

    @property
    def module_(self):
        if self.backend != "torch":
            raise ValueError(f"module_ exists for backend='torch' only (backend={self.backend!r}).")
        if "torch_module_" not in self.__dict__:
            self.torch_module_ = MEGNetModule.from_hdf5(self.parent_.path).to(self.device)
        return self.torch_module_

    def _reference(self):
        if "reference_" not in self.__dict__:
            from ._backend import MegnetReference

            # A live megnet GraphModel is its own reference: no reload through Keras.
            live = self.parent if hasattr(self.parent, "graph_converter") else None
            self.reference_ = MegnetReference(self.parent_, graph_model=live)
        return self.reference_

    def element_embedding(self):
        """``(n_elements, d)`` array whose row z is V0 of atomic number z."""
        return self.module_.element_embedding().cpu().numpy()

    def load(self):
        """Read the weights now (a missing or broken parent fails here, naming the file)."""
        return self._backend()

    def _backend(self):
        if self.backend not in ("torch", "megnet"):
            raise ValueError(f"backend must be 'torch' or 'megnet', got {self.backend!r}.")
        return self.module_ if self.backend == "torch" else self._reference()

    def output_widths(self):
        """Width of every output (``V0`` .. ``Vn``, ``E1`` .. ``En``, ``u1`` .. ``un``, the
        set2set readouts, ``f``, the raw ``output`` and the ``prediction``)."""
        widths = dict(self._backend().output_widths())
        widths["prediction"] = widths["output"]
        return widths

    @property
    def site_layers(self):
        """``("V0", "V1", ...)``: one per MEGNet block, plus the element embedding."""
        return tuple(sorted((n for n in self._backend().output_widths() if output_level(n) == "site"),
                            key=lambda n: int(n[1:])))

    @property
    def bond_layers(self):
        """``("E1", ...)``: the bond outputs of each MEGNet block."""
        return tuple(n for n in self._backend().output_widths() if output_level(n) == "bond")

    @property
    def structure_layers(self):
        """Structure-level features: ``f``, ``u1`` .. ``un``, both set2set readouts."""
        names = [n for n in self._backend().output_widths()
                 if n == "f" or re.match(r"^u\d+$", n) or n.startswith("set2set")]
        return tuple(sorted(names, key=lambda n: (_STRUCTURE_ORDER.index(n.rstrip("0123456789")), n)))

    @property
    def max_atomic_number(self):
        return self._backend().max_atomic_number

    def content_key(self):
        """The sha256 of the weights file (and its converter) as it is now: the feature cache's key."""
        return content_sha256(self.parent_)

    def citations(self):
        return [MEGNET_CITATION]

    def encode(self, structures, on_error="raise", outputs=None, progress=None):
        """Run the parent on structures and return every intermediate output.

        Parameters
        ----------
        structures : sequence of pymatgen Structure
        on_error : {"raise", "nan"}, default="raise"
            What to do with a structure that cannot be encoded (isolated atom, empty,
            disordered, unknown element, not a Structure): raise a ``GraphConstructionError``
            that names it, or record it in ``errors`` (a :class:`RowError`) and return NaN /
            None for it.
        outputs : list of str, optional
            Only these outputs (e.g. ``["V1", "f"]``); default all. Leaving out the bond
            outputs ``E1`` to ``E3`` saves most of the memory on large batches.
        progress : callable, optional
            Called with the number of structures whose graphs are built so far, after each
            one (a progress bar's hook: it moves within a batch, not once per batch).

        Returns
        -------
        EncoderOutput

        Notes
        -----
        Structures go through the network ``batch_size`` at a time, in smaller batches where
        the next structure would take one over the memory budget (``MAX_BATCH_BYTES`` in
        ``parents/_structures.py``, estimated from its bonds and sites); a structure over it
        on its own is refused like any other bad input. The loop is the one every family
        shares (:class:`~sklearn_atomsets.parents._base.BatchedEncoder`); this class gives it
        the MEGNet graph (``_graph``) and forward pass (``_runner``).
        """
        self._backend()  # a bad backend fails before any structure is looked at
        return super().encode(structures, on_error=on_error, outputs=outputs, progress=progress)

    def _graph(self, i, structure):
        part = _one_graph(i, structure, self.parent_.cutoff, self.max_atomic_number)
        nbytes = _BYTES_PER_BOND * len(part[1]) + _BYTES_PER_ATOM * len(part[0])
        if nbytes > _structures.MAX_BATCH_BYTES:
            raise GraphConstructionError.of_structure(
                i, structure, over_budget(nbytes, f"{len(part[0]):,} sites, {len(part[1]):,} bonds"))
        return (part, structure), nbytes

    def _bond_count(self, graph):
        return len(graph[0][1])

    def _runner(self, widths, site_wanted):
        run = self._run_torch if self.backend == "torch" else self._reference().run
        names = [n for n in widths if n != "prediction"]
        if "prediction" in widths and "output" not in names:
            names.append("output")
        parent = self.parent_

        def run_batch(graphs, n_sites):
            out = run(assemble([part for part, _ in graphs]), [structure for _, structure in graphs], names)
            if "prediction" in widths:
                out["prediction"] = parent.inverse_transform_target(out["output"], n_sites).astype(np.float32)
            return out

        return run_batch

    def _run_torch(self, graphs, structures, outputs=None):
        module, parent, dev = self.module_, self.parent_, self.device
        if not module.atom_input_is_z:
            raise NotImplementedError("Parents that take atom feature vectors are not supported.")
        reduced = reduce_graphs(graphs, min_gain=_MIN_GAIN) if self.symmetry_reduction else None
        weights = {}
        if reduced is not None:
            graphs = reduced.graphs
            weights = {name: torch.as_tensor(getattr(reduced, name), device=dev)
                       for name in ("atom_weight", "bond_weight")}
        # Bond features depend on the (float32) length alone, and every length occurs at least
        # twice (i->j and j->i), so they are computed once per distinct length.
        d, inverse = np.unique(graphs.distances, return_inverse=True)
        if module.bond_input_is_expanded:
            # megnet's GaussianDistance: float32 lengths against float64 centres, fed as float32
            bond = np.exp(-((d[:, None].astype(np.float64) - parent.centers[None, :]) ** 2) / parent.width**2)
        else:
            bond = d
        state_dim = module.input_shapes["state"][-1]
        as_long = lambda a: torch.as_tensor(a, dtype=torch.long, device=dev)  # noqa: E731
        out = module(
            as_long(graphs.atomic_numbers),
            torch.as_tensor(bond, dtype=torch.float32, device=dev),
            torch.zeros((graphs.n_graphs, state_dim), dtype=torch.float32, device=dev),
            as_long(graphs.index1),
            as_long(graphs.index2),
            as_long(graphs.atom_graph),
            as_long(graphs.bond_graph),
            graphs.n_graphs,
            bond_inverse=as_long(inverse),
            outputs=outputs,
            **weights,
        )
        out = {name: t.cpu().numpy() for name, t in out.items()}
        if reduced is not None:  # every site and bond gets its class representative's rows
            spread = {"site": reduced.atom_index, "bond": reduced.bond_index}
            for name, value in out.items():
                index = spread.get(output_level(name))
                if index is not None:
                    out[name] = value[index]
        return out
