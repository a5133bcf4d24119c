"""MEGNet's crystal graphs: neighbour lists of many structures as one disjoint graph.

The neighbour search and every check on a structure are shared by all families
(:mod:`sklearn_atomsets.parents._structures`); this module assembles them in megnet's batch
layout (:class:`CrystalGraphBatch`), which the MEGNet encoder and its symmetry reduction take.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._structures import _one_graph, each_structure

__all__ = ["CrystalGraphBatch", "assemble", "build_graphs"]


@dataclass
class CrystalGraphBatch:
    """Several crystal graphs stored as one disjoint graph (megnet's batch layout).

    Attributes
    ----------
    atomic_numbers : ndarray of shape (n_atoms,)
    distances : ndarray of shape (n_bonds,), float32
    index1, index2 : ndarray of shape (n_bonds,)
        Sending and receiving site of each directed bond, as indices into the batch's atoms.
    atom_graph, bond_graph : ndarray
        Which graph (0..n_graphs-1) each atom and bond belongs to; sorted.
    n_atoms, n_bonds : ndarray of shape (n_graphs,)
    """

    atomic_numbers: np.ndarray
    distances: np.ndarray
    index1: np.ndarray
    index2: np.ndarray
    atom_graph: np.ndarray
    bond_graph: np.ndarray
    n_atoms: np.ndarray
    n_bonds: np.ndarray

    @property
    def n_graphs(self) -> int:
        return len(self.n_atoms)


def build_graphs(structures, cutoff, max_atomic_number=94, on_error="raise", offset=0, progress=None):
    """Build the crystal graphs of many structures at once.

    Parameters
    ----------
    structures : sequence of pymatgen Structure
    cutoff : float
        Neighbour cutoff in Angstrom (the parent model's converter setting).
    max_atomic_number : int
        Largest atomic number the parent's element embedding knows.
    on_error : {"raise", "nan"}
        ``"raise"`` stops at the first structure that cannot be converted;
        ``"nan"`` leaves it out of the batch and records the reason.
    offset : int
        Added to item indices in error messages (for callers that work in chunks).
    progress : callable, optional
        Called after each structure (converted or not) with ``offset`` + the number of
        structures done so far: a progress bar's hook.

    Returns
    -------
    graphs : CrystalGraphBatch
        The graphs of the structures that could be converted, in input order.
    ok : ndarray of bool, shape (n_structures,)
        Which inputs are in ``graphs``.
    errors : dict of int -> str
        Reason for every input that is not.

    A ``MemoryError`` is raised even with ``on_error="nan"``: it depends on what else is
    alive, not on the structure.
    """
    if on_error not in ("raise", "nan"):
        raise ValueError(f"on_error must be 'raise' or 'nan', got {on_error!r}.")
    errors = {}
    built = list(each_structure(structures, lambda i, s: _one_graph(i, s, cutoff, max_atomic_number),
                                on_error, errors, offset, progress))
    ok = np.zeros(len(structures), dtype=bool)
    ok[[i for i, _ in built]] = True
    return assemble([part for _, part in built]), ok, errors


def assemble(parts):
    """One CrystalGraphBatch of several structures' neighbour lists (from ``_one_graph``)."""
    n_atoms = np.array([len(p[0]) for p in parts], dtype=np.int64)
    n_bonds = np.array([len(p[1]) for p in parts], dtype=np.int64)
    if not parts:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float32)
        return CrystalGraphBatch(empty_i, empty_f, empty_i, empty_i, empty_i, empty_i, n_atoms, n_bonds)
    atom_start = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    bond_shift = np.repeat(atom_start, n_bonds)
    return CrystalGraphBatch(
        atomic_numbers=np.concatenate([p[0] for p in parts]),
        distances=np.concatenate([p[3] for p in parts]),
        index1=np.concatenate([p[1] for p in parts]) + bond_shift,
        index2=np.concatenate([p[2] for p in parts]) + bond_shift,
        atom_graph=np.repeat(np.arange(len(parts)), n_atoms),
        bond_graph=np.repeat(np.arange(len(parts)), n_bonds),
        n_atoms=n_atoms,
        n_bonds=n_bonds,
    )
