"""Crystal graphs, built the way megnet's ``CrystalGraph`` builds them, for many structures.

Nodes are sites (atomic numbers), directed edges join every pair of sites closer than the
cutoff (periodic images included, both directions), and bond lengths are expanded on
Gaussians by the encoder. Neighbour search is pymatgen's compiled
``find_points_in_spheres``, the same routine and tolerance megnet uses; the batch is then
assembled with array operations, with no Python loop over bonds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure
from pymatgen.optimization.neighbors import find_points_in_spheres

__all__ = ["CrystalGraphBatch", "GraphConstructionError", "build_graphs"]

# megnet.utils.data.get_graphs_within_cutoff
_NUMERICAL_TOL = 1e-8


class GraphConstructionError(ValueError):
    """A structure cannot be turned into a MEGNet crystal graph."""


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


def _describe(i, structure) -> str:
    try:
        formula = structure.composition.reduced_formula
    except Exception:  # noqa: BLE001 - only used to label an error message
        formula = type(structure).__name__
    return f"structure {i} ({formula})"


def _one_graph(i, structure, cutoff, max_z):
    """Neighbour list of one structure, or a GraphConstructionError that names it."""
    if not isinstance(structure, Structure):
        raise GraphConstructionError(
            f"item {i}: expected a pymatgen Structure, got {type(structure).__name__}."
        )
    label = _describe(i, structure)
    if len(structure) == 0:
        raise GraphConstructionError(f"{label}: empty, it has no sites.")
    occupancies = [site.species for site in structure]
    if any(len(occ) != 1 or next(iter(occ.values())) != 1 for occ in occupancies):
        raise GraphConstructionError(
            f"{label}: disordered (partially occupied) sites; MEGNet crystal graphs need one "
            "element per site (megnet cannot featurize disordered structures either). Order it "
            "first, e.g. with pymatgen's OrderDisorderedStructureTransformation."
        )
    z = np.fromiter((next(iter(occ)).Z for occ in occupancies), dtype=np.int64, count=len(structure))
    bad = (z < 1) | (z > max_z)
    if bad.any():
        species = sorted({str(structure[k].specie) for k in np.flatnonzero(bad)})
        raise GraphConstructionError(
            f"{label}: contains {', '.join(species)}, outside the parent model's element "
            f"embedding (atomic numbers 1..{max_z})."
        )
    lattice = np.ascontiguousarray(structure.lattice.matrix, dtype=float)
    cart = np.ascontiguousarray(structure.cart_coords, dtype=float)
    center, neighbor, _, dist = find_points_in_spheres(
        cart, cart, r=float(cutoff), pbc=np.array([1, 1, 1], dtype=np.int64), lattice=lattice,
        tol=_NUMERICAL_TOL,
    )
    keep = (center != neighbor) | (dist > _NUMERICAL_TOL)
    center, neighbor, dist = center[keep], neighbor[keep], dist[keep]
    isolated = np.setdiff1d(np.arange(len(z)), center)
    if isolated.size:
        raise GraphConstructionError(
            f"{label}: site(s) {isolated.tolist()[:10]} have no neighbour within the cutoff of "
            f"{cutoff} A, so MEGNet has no bond to update them with."
        )
    return z, center.astype(np.int64), neighbor.astype(np.int64), dist.astype(np.float32)


def build_graphs(structures, cutoff, max_atomic_number=94, on_error="raise", offset=0):
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

    Returns
    -------
    graphs : CrystalGraphBatch
        The graphs of the structures that could be converted, in input order.
    ok : ndarray of bool, shape (n_structures,)
        Which inputs are in ``graphs``.
    errors : dict of int -> str
        Reason for every input that is not.
    """
    if on_error not in ("raise", "nan"):
        raise ValueError(f"on_error must be 'raise' or 'nan', got {on_error!r}.")
    parts, errors = [], {}
    ok = np.zeros(len(structures), dtype=bool)
    for i, structure in enumerate(structures):
        try:
            parts.append(_one_graph(i + offset, structure, cutoff, max_atomic_number))
            ok[i] = True
        except GraphConstructionError as exc:
            if on_error == "raise":
                raise
            errors[i] = str(exc)
    n_atoms = np.array([len(p[0]) for p in parts], dtype=np.int64)
    n_bonds = np.array([len(p[1]) for p in parts], dtype=np.int64)
    if not parts:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float32)
        return (
            CrystalGraphBatch(empty_i, empty_f, empty_i, empty_i, empty_i, empty_i, n_atoms, n_bonds),
            ok,
            errors,
        )
    atom_start = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    bond_shift = np.repeat(atom_start, n_bonds)
    graphs = CrystalGraphBatch(
        atomic_numbers=np.concatenate([p[0] for p in parts]),
        distances=np.concatenate([p[3] for p in parts]),
        index1=np.concatenate([p[1] for p in parts]) + bond_shift,
        index2=np.concatenate([p[2] for p in parts]) + bond_shift,
        atom_graph=np.repeat(np.arange(len(parts)), n_atoms),
        bond_graph=np.repeat(np.arange(len(parts)), n_bonds),
        n_atoms=n_atoms,
        n_bonds=n_bonds,
    )
    return graphs, ok, errors
