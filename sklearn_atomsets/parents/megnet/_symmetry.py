"""Equivalent sites of crystal graphs, found by colour refinement, for exact work reduction.

Message passing gives equal outputs to sites that no layer can tell apart. Colour refinement
(1-dimensional Weisfeiler-Leman on the crystal graph, bonds labelled by their length) finds
such sites: start from (structure, element) and repeatedly split each class by the multiset
of (neighbour's class, bond length) over its bonds, until no class splits. Two sites of one
stable class have the same element and the same multiset of (neighbour class, length), so by
induction every MEGNet block gives them the same atom output and gives their bonds the same
bond outputs; the state update sees each class as often as it has members. Symmetry-
equivalent sites of a crystal end in one class (a symmetry operation maps the graph onto
itself); colour refinement can merge more than spglib's orbits, never less, and it is exact
for the parent either way, since it follows what the network can compute. It needs no
tolerance beyond the bond lengths' own: lengths closer than ``10**-decimals`` A are equal
(see :data:`DEFAULT_DECIMALS` for the measurements behind 1e-6 A).

:func:`reduce_graphs` returns a :class:`ReducedGraphs`: the batch with one representative
site per class and only the representatives' bonds, each site and bond carrying its
multiplicity as a weight, and the maps that spread the results back to every site and bond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._graph import CrystalGraphBatch

__all__ = ["DEFAULT_DECIMALS", "ReducedGraphs", "equivalence_classes", "reduce_graphs"]

#: Bond lengths (A) of one structure closer than ``10**-DEFAULT_DECIMALS`` (1e-6 A) count as
#: equal; no group of equal lengths spans more than that (see ``_length_ids``). Measured on
#: 600 MatBench dielectric crystals (with single linkage across the batch, before issue 32), encoder
#: outputs of the reduced against the full graphs, max |difference| / output scale: 3.6e-6 at
#: 1e-7 A (float32 noise alone), 3.4e-6 at 1e-6 A, 2.2e-5 at 1e-5 A, 1.8e-4 at 1e-4 A. The
#: whole dielectric set's 80,487 sites fall into 40,974 classes at 1e-7 A, 35,300 at 1e-6 A,
#: 33,413 at 1e-5 A: 1e-6 A keeps the outputs at float32 noise and most of the merging. The
#: per-structure, non-chaining grouping gives 35,476 classes at 1e-6 A (35,300 before).
DEFAULT_DECIMALS = 6

#: Refinement rounds before giving up on a batch (it then runs unreduced, which is exact too).
#: Crystals settle in a handful of rounds; each round costs a few passes over the bonds.
MAX_ROUNDS = 32

_MIX = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x):
    """A fixed 64-bit mixing function (splitmix64's finaliser), element-wise on uint64."""
    x = (x + _MIX).astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _dense(keys):
    """Consecutive integer ids 0..k-1 for the distinct values of ``keys``."""
    return np.unique(keys, return_inverse=True)[1].ravel()


@dataclass
class _Bonds:
    """The batch's bonds grouped by sending site (the neighbour search already emits them so)."""

    order: np.ndarray  # positions in the batch, grouped by sending site
    send: np.ndarray
    receive: np.ndarray
    length: np.ndarray  # integer id of the length (see _length_ids): compared exactly
    start: np.ndarray  # first bond of each site in ``order``
    degree: np.ndarray

    @classmethod
    def of(cls, graphs, decimals):
        index1 = graphs.index1
        if len(index1) and np.any(index1[1:] < index1[:-1]):
            order = np.argsort(index1, kind="stable")
        else:
            order = np.arange(len(index1))
        n_atoms = len(graphs.atomic_numbers)
        degree = np.bincount(index1, minlength=n_atoms)
        start = np.zeros(n_atoms, dtype=np.int64)
        np.cumsum(degree[:-1], out=start[1:])
        length = _length_ids(graphs.distances[order], graphs.bond_graph[order], decimals)
        return cls(order, index1[order], graphs.index2[order], length, start, degree)


def _length_ids(distances, graph, decimals):
    """Integer ids of bond lengths, compared exactly by the refinement: two bonds share an id
    only when they belong to one structure and their lengths differ by at most
    ``10**-decimals`` A, so the grouping of one structure's lengths never depends on the
    rest of the batch and no group spans more than the tolerance.

    Within each structure the sorted distinct lengths form runs whose consecutive gaps are
    within the tolerance (rounding to a grid would split two equal lengths that straddle a
    grid line, and a site has dozens of bonds, so it would split many orbits). A run whose
    whole span is within the tolerance is one group; a longer run (a chain of small steps)
    is cut into groups ``floor((length - run start) / tolerance)``, each within the tolerance.
    """
    tolerance = 10.0**-decimals
    # (structure, length) as one exactly ordered key: the bits of a non-negative float32
    # sort like the float
    bits = np.ascontiguousarray(distances, dtype=np.float32).view(np.uint32).astype(np.uint64)
    keys, inverse = np.unique((np.asarray(graph, dtype=np.uint64) << np.uint64(32)) | bits, return_inverse=True)
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    values = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.float32).astype(np.float64)
    owner = keys >> np.uint64(32)
    new_run = np.ones(len(keys), dtype=bool)
    new_run[1:] = (owner[1:] != owner[:-1]) | (np.diff(values) > tolerance)
    run_start = np.flatnonzero(new_run)
    run = np.cumsum(new_run) - 1
    run_end = np.append(run_start[1:], len(keys)) - 1
    chained = (values[run_end] - values[run_start]) > tolerance
    step = np.zeros(len(keys), dtype=np.int64)
    in_chain = chained[run]
    if in_chain.any():
        offset = values[in_chain] - values[run_start[run[in_chain]]]
        step[in_chain] = np.floor(offset / tolerance).astype(np.int64)
    ids = _dense(run.astype(np.int64) * (int(step.max()) + 1) + step)
    return ids[inverse.ravel()]


def _refine(graphs, bonds):
    """Colour refinement by hashing: each round, a site's new colour is the sum of 64-bit mixed
    (neighbour colour, length) keys over its bonds, combined with its old colour. Stops when
    no class splits. A hash collision can only merge sites wrongly, which :func:`_sorted_twins`
    then detects."""
    n_atoms = len(graphs.atomic_numbers)
    colour = _dense(
        (graphs.atom_graph.astype(np.int64) * 128 + graphs.atomic_numbers) * (int(bonds.degree.max()) + 1)
        + bonds.degree
    )
    n_colours = int(colour.max()) + 1
    span = np.uint64(int(bonds.length.max()) + 1)
    length = bonds.length.astype(np.uint64)
    for _ in range(MAX_ROUNDS):
        if n_colours == n_atoms:
            return colour
        hashed = _splitmix64(colour[bonds.receive].astype(np.uint64) * span + length)
        signature = np.add.reduceat(hashed, bonds.start)
        colour = _dense(signature ^ _splitmix64(colour.astype(np.uint64) + np.uint64(n_atoms)))
        n_new = int(colour.max()) + 1
        if n_new == n_colours:
            return colour
        n_colours = n_new
    return None


def _representatives(colour):
    """Each class's lowest site."""
    rep = np.full(int(colour.max()) + 1, len(colour), dtype=np.int64)
    np.minimum.at(rep, colour, np.arange(len(colour)))
    return rep


def _sorted_twins(colour, rep, bonds, graphs):
    """For each bond (in ``bonds.order``), its twin among the bonds of its site's class
    representative ``rep``, or ``None`` if some site's multiset of (neighbour colour,
    length) differs from its representative's: then ``colour`` is not a stable colouring
    and must not be used.

    Sites of one class have one degree (degree is part of the first colour), so their sorted
    multisets line up position by position; equal multisets everywhere is exactly stability.
    """
    rep_of = rep[colour]
    for label in (bonds.degree, graphs.atomic_numbers, graphs.atom_graph):
        if not np.array_equal(label, label[rep_of]):
            return None
    pair = colour[bonds.receive].astype(np.int64) * (int(bonds.length.max()) + 1) + bonds.length
    within = np.argsort(bonds.send * (int(pair.max()) + 1) + pair, kind="stable")  # by site, then pair
    sorted_pair = pair[within]
    position = np.arange(len(pair)) - bonds.start[bonds.send]
    twin_sorted = bonds.start[rep[colour[bonds.send]]] + position
    if not np.array_equal(sorted_pair, sorted_pair[twin_sorted]):
        return None
    twin = np.empty(len(pair), dtype=np.int64)
    twin[within] = within[twin_sorted]  # bond within[k] has the twin within[twin_sorted[k]]
    return twin


def equivalence_classes(graphs: CrystalGraphBatch, decimals: int = DEFAULT_DECIMALS):
    """Stable colour-refinement classes of the sites of a batch of crystal graphs.

    Returns an integer array ``(n_atoms,)`` of class ids, or ``None`` if the refinement did
    not settle within :data:`MAX_ROUNDS` rounds or (astronomically rarely) a hash collision
    left a class that is not stable; the classes returned are checked exactly. Classes never
    span two structures.
    """
    if len(graphs.atomic_numbers) == 0:
        return np.zeros(0, dtype=np.int64)
    bonds = _Bonds.of(graphs, decimals)
    colour = _refine(graphs, bonds)
    if colour is None:
        return None
    twin = _sorted_twins(colour, _representatives(colour), bonds, graphs)
    return None if twin is None else colour


@dataclass
class ReducedGraphs:
    """A batch with one site per equivalence class and only those sites' bonds.

    Attributes
    ----------
    graphs : CrystalGraphBatch
        The reduced batch (``n_atoms`` / ``n_bonds`` count the reduced rows per graph).
    atom_weight, bond_weight : ndarray of float32
        How many sites (bonds) of the full batch each reduced site (bond) stands for.
    atom_index : ndarray of int, shape (n_full_atoms,)
        Row of the reduced batch holding each full site's outputs.
    bond_index : ndarray of int, shape (n_full_bonds,)
        Row of the reduced batch holding each full bond's outputs.
    """

    graphs: CrystalGraphBatch
    atom_weight: np.ndarray
    bond_weight: np.ndarray
    atom_index: np.ndarray
    bond_index: np.ndarray


def reduce_graphs(graphs: CrystalGraphBatch, decimals: int = DEFAULT_DECIMALS, min_gain: float = 0.0):
    """Keep one representative site per colour-refinement class and its bonds.

    Returns ``None`` when nothing would be merged, the refinement gave up, or the reduction
    would keep more than ``1 - min_gain`` of the bonds (the caller then runs the full batch).
    """
    n_atoms = len(graphs.atomic_numbers)
    if n_atoms == 0:
        return None
    bonds = _Bonds.of(graphs, decimals)
    colour = _refine(graphs, bonds)
    if colour is None or colour.max() + 1 == n_atoms:
        return None
    rep = _representatives(colour)
    is_rep = np.zeros(n_atoms, dtype=bool)
    is_rep[rep] = True
    kept = is_rep[graphs.index1]
    if int(kept.sum()) > (1.0 - min_gain) * len(kept):  # decided before the exact check's sort
        return None
    twin = _sorted_twins(colour, rep, bonds, graphs)
    if twin is None:
        return None
    # Classes renumbered in the order of their representatives, so that the reduced atoms
    # stay grouped by graph as the encoder's segment operations expect.
    by_site = np.argsort(rep, kind="stable")
    renumber = np.empty(len(rep), dtype=np.int64)
    renumber[by_site] = np.arange(len(rep))
    atom_class, rep = renumber[colour], rep[by_site]
    multiplicity = np.bincount(atom_class, minlength=len(rep))

    row = np.cumsum(kept) - 1  # reduced row of each kept bond (batch order)
    bond_index = np.empty(len(kept), dtype=np.int64)
    bond_index[bonds.order] = row[bonds.order[twin]]
    index1 = atom_class[graphs.index1[kept]]
    atom_graph = graphs.atom_graph[rep]
    bond_graph = graphs.bond_graph[kept]
    n_graphs = graphs.n_graphs
    reduced = CrystalGraphBatch(
        atomic_numbers=graphs.atomic_numbers[rep],
        distances=graphs.distances[kept],
        index1=index1,
        index2=atom_class[graphs.index2[kept]],
        atom_graph=atom_graph,
        bond_graph=bond_graph,
        n_atoms=np.bincount(atom_graph, minlength=n_graphs),
        n_bonds=np.bincount(bond_graph, minlength=n_graphs),
    )
    return ReducedGraphs(
        graphs=reduced,
        atom_weight=multiplicity.astype(np.float32),
        bond_weight=multiplicity[index1].astype(np.float32),
        atom_index=atom_class,
        bond_index=bond_index,
    )
