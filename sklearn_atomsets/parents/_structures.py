"""What every family does to a structure before its own graph: the checks, the neighbour
list, the per-row errors and the memory budget.

Neighbours: every pair of sites closer than the cutoff (periodic images included, both
directions), found by pymatgen's compiled ``find_points_in_spheres``, the same routine and
tolerance megnet's ``CrystalGraph`` uses (:func:`_one_graph`). The MEGNet family assembles
these lists into its graphs; CHGNet and SevenNet use them to check and count before their
own packages build theirs.

**Row errors are data.** A structure that cannot be encoded is a :class:`RowError`: the
message as text (what is printed) with its parts as fields (position, kind, message), made
where the failure is detected (:class:`GraphConstructionError` carries one) and read as
fields by the featurizers, :class:`~sklearn_atomsets.FailedSet` and the Dask path.

Before the search every structure is checked (see the module constants): finite lattice and
coordinates, at least ``MIN_VOLUME_PER_ATOM`` A^3 per atom, a (reduced) cell at least
``MIN_CELL_WIDTH`` thick, at most ``MAX_BONDS`` estimated bonds and a bounded search grid, so
that no single input takes unbounded time or memory. Where the cell could hold more than
``MAX_BONDS`` pairs at all, atoms closer than ``MIN_DISTANCE`` and the bonds are counted first
without listing any pair (so atoms piled on one point cannot make the search build n^2 pairs);
after the search, atoms closer than ``MIN_DISTANCE`` (0.5 A) are refused by policy. With
``on_error="nan"`` any failure of one structure, whatever its type, becomes that structure's
error, except ``MemoryError``, which depends on the rest of the batch and is raised.

The encoders run structures ``batch_size`` at a time and also cut a batch where the next
structure would take its forward pass over ``MAX_BATCH_BYTES`` (:func:`within_budget`); a
structure that needs more than that alone is refused with its count of bonds.
"""

from __future__ import annotations

import warnings

from scipy.spatial import cKDTree

import numpy as np
from pymatgen.core import IStructure, Structure
from pymatgen.core.periodic_table import DummySpecies
from pymatgen.optimization.neighbors import find_points_in_spheres

__all__ = ["GraphConstructionError", "RowError", "each_structure", "over_budget", "within_budget"]

# megnet.utils.data.get_graphs_within_cutoff
_NUMERICAL_TOL = 1e-8


class RowError(str):
    """Why one input could not be encoded or featurized: the text that is printed, with its
    parts as fields.

    A ``str`` (the message itself, e.g. ``"structure 3 (NaCl): disordered (partially
    occupied) sites; ..."``), so printing it, searching it or writing it to matminer's
    error column works as with any message; code that needs a part reads the field instead
    of parsing the text.

    Attributes
    ----------
    position : int
        Where the input was in the sequence the encoder or featurizer was given.
    kind : str
        The error's type name (``"GraphConstructionError"``, ``"TypeError"``, ...).
    message : str
        What is wrong, without the position (``"disordered (partially occupied) sites; ..."``).
    subject : str
        How the text names the input: ``"structure 3 (NaCl)"`` (an encoder), ``"item 3"``
        (not a structure), ``"row 3"`` (a featurizer's row), ``"index 'mp-1'"`` (a frame's).

    Examples
    --------
    >>> from sklearn_atomsets import RowError
    >>> error = RowError.in_row(2, "TypeError", "expected a Structure, got int.")
    >>> error, error.position, error.kind
    ('row 2: TypeError: expected a Structure, got int.', 2, 'TypeError')
    >>> error.renamed("index 'mp-1'")
    "index 'mp-1': TypeError: expected a Structure, got int."
    """

    def __new__(cls, position, kind, message, subject, *, show_kind=True):
        text = f"{subject}: {kind}: {message}" if show_kind else f"{subject}: {message}"
        self = super().__new__(cls, text)
        self.position, self.kind, self.message, self.subject = int(position), str(kind), str(message), str(subject)
        self._show_kind = bool(show_kind)
        return self

    @classmethod
    def of_structure(cls, i, structure, message, kind="GraphConstructionError"):
        """An encoder's error for structure ``i`` (named by its formula); the kind is in the
        text unless it is a ``GraphConstructionError``, whose message says it all."""
        return cls(i, kind, message, f"structure {i} ({_formula(structure)})",
                   show_kind=kind != "GraphConstructionError")

    @classmethod
    def of_item(cls, i, message):
        """An encoder's error for item ``i``, which is no structure at all."""
        return cls(i, "GraphConstructionError", message, f"item {i}", show_kind=False)

    @classmethod
    def in_row(cls, i, kind, message):
        """A featurizer's error for row ``i`` (matminer's error column: ``"row i: Kind: message"``)."""
        return cls(i, kind, message, f"row {i}")

    def renamed(self, subject, position=None):
        """The same error with the input named ``subject`` (and at ``position``)."""
        return type(self)(self.position if position is None else position, self.kind, self.message, subject,
                          show_kind=self._show_kind)

    def unplaced(self):
        """The text without the position: ``"structure (NaCl): ..."`` (for one structure on its own)."""
        subject = self.subject.split(" ", 2)
        subject = f"{subject[0]} {subject[2]}" if len(subject) == 3 else subject[0]
        return str(self.renamed(subject))

    def __reduce__(self):
        return (_row_error, (self.position, self.kind, self.message, self.subject, self._show_kind))


def _row_error(position, kind, message, subject, show_kind):
    return RowError(position, kind, message, subject, show_kind=show_kind)


class GraphConstructionError(ValueError):
    """A structure cannot be turned into a parent's graph; ``row`` is the :class:`RowError`
    (position, kind, message) when the failure was detected for a known input."""

    def __init__(self, message, row=None):
        super().__init__(message)
        self.row = row

    @classmethod
    def of_structure(cls, i, structure, message):
        """The error of structure ``i``, its text naming the structure and its formula."""
        row = RowError.of_structure(i, structure, message)
        return cls(str(row), row)

    @classmethod
    def of_failure(cls, i, structure, exc):
        """Another package's refusal of structure ``i`` (``exc``), its kind kept as a field."""
        row = RowError.of_structure(i, structure, str(exc), kind=type(exc).__name__)
        return cls(str(row), row)

    def __reduce__(self):
        return (type(self), (str(self), self.row))


def _formula(structure) -> str:
    """The structure's reduced formula (its type's name if it has none): built only when an
    error is raised (a formula for every structure costs time and makes pymatgen warn about
    noble gases' electronegativity)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return structure.composition.reduced_formula
    except Exception:  # noqa: BLE001 - only used to label an error message
        return type(structure).__name__


# Physical limits checked before the neighbour search, whose time and memory grow without
# bound on degenerate cells (a nearly flat lattice: ~1/eps^2; coordinates far from the
# origin: with their spread). Inputs beyond them are errors, not slow successes.
#: No known solid is denser than ~1.5-2 A^3/atom (metallic hydrogen at several hundred GPa);
#: 1 A^3 per atom leaves a margin and still refuses zero-volume and nearly flat lattices.
MIN_VOLUME_PER_ATOM = 1.0
#: Smallest distance between opposite faces of the (LLL-reduced) cell. Below it an atom sits
#: within ~this distance of one of its own periodic images; the search would enumerate
#: (2 cutoff / width)^k images. A skewed but legal cell is reduced first, so only a lattice
#: that is really that thin is refused. Thin 2D slabs are fine: their vacuum makes them thick.
MIN_CELL_WIDTH = 0.5
#: Documented error policy: two atoms (or an atom and its image) closer than this are refused.
#: No chemical bond is that short (H2, the shortest, is 0.74 A); such inputs are duplicated
#: sites or wrong units, and MEGNet's bond expansion was never trained there.
MIN_DISTANCE = 0.5
#: Bound on the directed bonds of one structure (estimated from its density before the search,
#: counted after it): about 50,000 atoms at ordinary density, some GB in the encoder.
MAX_BONDS = 4_000_000
#: Bound on the cells of pymatgen's cell-list search, which allocates a grid of cutoff-sized
#: cubes over the Cartesian bounding box of the cell: a 600 A cube. A long needle-shaped cell
#: in a skewed orientation is turned to lie along x first (distances do not change).
MAX_SEARCH_CUBES = 2_000_000
#: Fractional coordinates further than this from the cell have lost their position within the
#: cell to float64 rounding (and would make the neighbour search scan that many cells).
MAX_FRACTIONAL = 1e6
#: Memory budget of one forward pass of a parent (its graphs, activations and outputs), in
#: bytes. Each parent family estimates a structure's need from its counts of atoms and bonds
#: (MEGNet: 2 kB per bond, measured 1.5-1.8 kB; CHGNet: also 4 kB per bond angle); a batch is
#: cut before the structure that would take it over, and a structure that needs more alone is
#: refused. 4 GiB holds a MEGNet structure of about 2 M bonds (some 50,000 atoms).
MAX_BATCH_BYTES = 4 * 2**30


def _too_close(a, b, distance):
    what = f"site {a} and a periodic image of itself" if a == b else f"sites {a} and {b}"
    return (
        f"{what} are {distance:.3g} A apart, closer than {MIN_DISTANCE} A, which no chemical bond "
        "is (duplicated sites or wrong units?)."
    )


def over_budget(nbytes, counts):
    """Why a structure is refused: its forward pass alone needs ``nbytes`` (``counts``: what it
    was estimated from, e.g. ``"2,100,000 bonds"``)."""
    return (
        f"its forward pass would need about {_size(nbytes)} ({counts}), more than the budget of "
        f"{_size(MAX_BATCH_BYTES)} per batch (MAX_BATCH_BYTES)."
    )


def _size(nbytes):
    return f"{nbytes / 2**30:.3g} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.3g} MiB"


def within_budget(items, batch_size, budget=None):
    """Group ``(item, nbytes)`` pairs, in order, into lists of at most ``batch_size`` items
    whose ``nbytes`` add up to at most ``budget`` (default ``MAX_BATCH_BYTES``; an item over
    it on its own makes a batch of one: refusing it is the caller's business).

    ``items`` is read lazily: with a generator, a batch's graphs are built only once the
    previous batch has been handed on, so no more than one batch is alive at a time.
    """
    budget = MAX_BATCH_BYTES if budget is None else budget
    batch, total = [], 0
    for item, nbytes in items:
        if batch and (len(batch) >= batch_size or total + nbytes > budget):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += nbytes
    if batch:
        yield batch


def _check_geometry(structure, cutoff):
    """Refuse impossible cells and coordinates before the neighbour search.

    Returns the lattice matrix and Cartesian coordinates to search with (the LLL-reduced
    lattice when the given cell is too skewed; sites wrapped into the cell when far outside).
    """
    n = len(structure)
    lattice = np.asarray(structure.lattice.matrix, dtype=float)
    if not np.isfinite(lattice).all():
        return f"the lattice has non-finite entries {lattice.tolist()}."
    frac = np.asarray(structure.frac_coords, dtype=float)
    bad = np.flatnonzero(~np.isfinite(frac).all(axis=1))
    if bad.size:
        return f"site(s) {bad.tolist()[:10]} have non-finite (NaN or infinite) coordinates."
    volume = abs(float(np.linalg.det(lattice)))
    if not np.isfinite(volume):
        return f"the cell volume overflows ({volume}); lattice {lattice.tolist()}."
    if not volume / n >= MIN_VOLUME_PER_ATOM:
        return (
            f"the cell volume is {volume:.3g} A^3 for {n} site(s), {volume / n:.3g} A^3 per atom; "
            f"below {MIN_VOLUME_PER_ATOM} A^3 per atom no solid exists (a zero-volume or flat lattice?)."
        )
    far = np.abs(frac).max()
    if far > MAX_FRACTIONAL:
        return (
            f"fractional coordinates up to {far:.3g} cells from the origin; beyond {MAX_FRACTIONAL:.0e} "
            "their place within the cell is lost to rounding."
        )
    cart = np.asarray(structure.cart_coords, dtype=float)
    widths = _widths(lattice, volume)
    if not widths.min() >= MIN_CELL_WIDTH:
        from pymatgen.core import Lattice

        lattice = Lattice(lattice).get_lll_reduced_lattice().matrix
        # the same sites, placed in the reduced cell (else they lie many reduced cells apart)
        frac = np.linalg.solve(lattice.T, cart.T).T
        widths = _widths(lattice, volume)
        if not widths.min() >= MIN_CELL_WIDTH:
            return (
                f"the cell is {widths.min():.3g} A thin (smallest distance between opposite faces of "
                f"the reduced cell); below {MIN_CELL_WIDTH} A every atom is that close to its own image."
            )
    estimated = n * n * (4.0 / 3.0) * np.pi * float(cutoff) ** 3 / volume
    if estimated > MAX_BONDS:
        return (
            f"about {estimated:.3g} bonds within the {cutoff} A cutoff ({n} sites at "
            f"{volume / n:.3g} A^3 per atom), more than the bound of {MAX_BONDS:,} per structure."
        )
    if _far_outside(frac):
        # the search scans every cell between the lowest and highest site: wrap them in
        cart = (frac - np.floor(frac)) @ lattice
    if _search_cubes(lattice, cutoff) > MAX_SEARCH_CUBES:
        # same crystal, rotated so the first vector lies along x (a needle along an axis)
        rotation, _ = np.linalg.qr(lattice.T)
        lattice, cart = lattice @ rotation, cart @ rotation
        cubes = _search_cubes(lattice, cutoff)
        if cubes > MAX_SEARCH_CUBES:
            return (
                f"the cell spans {np.abs(lattice).sum(axis=0).round(1).tolist()} A; the neighbour search "
                f"would allocate {cubes:.3g} cubes of the cutoff, more than the bound of {MAX_SEARCH_CUBES:,}."
            )
    # The density estimate above assumes the atoms spread over the cell; atoms piled up in one
    # part of it have more pairs, which the search would list before they could be counted.
    # Where the cell could hold more than MAX_BONDS pairs at all (n^2 times the images a pair
    # can have within the cutoff), count them first.
    reach = np.floor(float(cutoff) / _widths(lattice, volume)) + 1
    if n * n * float(np.prod(2 * reach + 1)) > MAX_BONDS:
        crowded = _crowding(lattice, cart, cutoff, volume)
        if crowded is not None:
            return crowded
    return lattice, cart


def _crowding(lattice, cart, cutoff, volume):
    """Atoms closer than ``MIN_DISTANCE``, or more than ``MAX_BONDS`` bonds, found without
    listing pairs: a message, or None. Memory grows with the sites and their images within the
    cutoff of the cell, time about as n log n."""
    frac = np.linalg.solve(lattice.T, cart.T).T
    frac -= np.floor(frac)
    inside = frac @ lattice
    # two sites in one cube of side MIN_DISTANCE / sqrt(3) are closer than MIN_DISTANCE (this
    # also keeps the k-d tree below from holding many points at one place, where it is slow)
    _, inverse, counts = np.unique(np.floor(inside / (MIN_DISTANCE / np.sqrt(3))).astype(np.int64),
                                   axis=0, return_inverse=True, return_counts=True)
    if counts.max() > 1:
        a, b = np.flatnonzero(inverse.ravel() == np.argmax(counts))[:2]
        return _too_close(int(a), int(b), float(np.linalg.norm(inside[a] - inside[b])))
    # every image of every site within the cutoff of the cell, one lattice direction at a time
    margin = float(cutoff) / _widths(lattice, volume) + 1e-9
    points = frac
    for axis in range(3):
        k = int(np.floor(margin[axis])) + 1
        shifted = np.concatenate([points + np.eye(3)[axis] * s for s in range(-k, k + 1)])
        points = shifted[(shifted[:, axis] >= -margin[axis]) & (shifted[:, axis] <= 1 + margin[axis])]
    pairs = cKDTree(inside).count_neighbors(cKDTree(points @ lattice), float(cutoff)) - len(frac)
    if pairs > MAX_BONDS:
        return (
            f"{pairs:,} bonds within the {cutoff} A cutoff (counted before the neighbour search), more "
            f"than the bound of {MAX_BONDS:,} per structure."
        )
    return None


def _far_outside(frac):
    return frac.min() < -1 or frac.max() > 2


def wrapped_into_cell(structure):
    """The structure with its sites moved into the cell by lattice vectors where some lie
    further than a cell outside it (the same crystal; the structure itself otherwise, so that
    results for ordinary inputs do not move by a rounding)."""
    frac = np.asarray(structure.frac_coords, dtype=float)
    if not _far_outside(frac):
        return structure
    return Structure(structure.lattice, structure.species_and_occu, frac - np.floor(frac),
                     site_properties=structure.site_properties)


def _search_cubes(lattice, cutoff):
    """Cubes of pymatgen's cell-list grid over the cell's bounding box plus the cutoff margins."""
    extent = np.abs(lattice).sum(axis=0) + 4.0 * float(cutoff)
    return float(np.prod(np.ceil(extent / max(float(cutoff), 1.0))))


def _widths(lattice, volume):
    """Distance between opposite faces of the cell, per lattice vector."""
    # one vectorised cross product (b x c, c x a, a x b): three np.cross calls cost more than
    # the neighbour search of a small cell
    return volume / np.linalg.norm(np.cross(lattice[[1, 2, 0]], lattice[[2, 0, 1]]), axis=1)


def cell_pbc(structure):
    """The structure's periodic boundary conditions, one bool per lattice vector (a lattice
    without the attribute is periodic in all three directions)."""
    return tuple(bool(p) for p in getattr(structure.lattice, "pbc", (True, True, True)))


def _one_graph(i, structure, cutoff, max_z, family="MEGNet"):
    """Neighbour list of one structure, or a GraphConstructionError that names it (``family``:
    the parent family the messages name)."""
    if not isinstance(structure, IStructure):  # Structure and IStructure
        row = RowError.of_item(i, f"expected a pymatgen Structure, got {type(structure).__name__}.")
        raise GraphConstructionError(str(row), row)

    def fail(problem):
        raise GraphConstructionError.of_structure(i, structure, problem)

    if len(structure) == 0:
        fail("empty, it has no sites.")
    pbc = cell_pbc(structure)
    if not all(pbc):
        fail(
            f"pbc={pbc}: not periodic along {', '.join(a for a, p in zip('abc', pbc) if not p)}; the {family} "
            "parent treats every cell as periodic in all three directions (its neighbours cross every face), "
            "so it cannot represent this structure. Put a molecule or slab in a periodic box with vacuum "
            "(pbc=(True, True, True)) if that is what you mean."
        )
    species = []
    for site in structure:
        occupancy = site.species.items()
        if len(occupancy) != 1 or next(iter(occupancy))[1] != 1:
            fail(
                f"disordered (partially occupied) sites; {family} crystal graphs need one element per site"
                + (" (megnet cannot featurize disordered structures either)" if family == "MEGNet" else "")
                + ". Order it first, e.g. with pymatgen's OrderDisorderedStructureTransformation."
            )
        species.append(next(iter(occupancy))[0])
    dummies = sorted({str(sp) for sp in species if isinstance(sp, DummySpecies)})
    if dummies:
        fail(f"contains dummy species {', '.join(dummies)}, which have no element embedding.")
    z = np.fromiter((sp.Z for sp in species), dtype=np.int64, count=len(structure))
    bad = (z < 1) | (z > max_z)
    if bad.any():
        outside = sorted({str(species[k]) for k in np.flatnonzero(bad)})
        fail(
            f"contains {', '.join(outside)}, outside the parent model's element "
            f"embedding (atomic numbers 1..{max_z})."
        )
    checked = _check_geometry(structure, cutoff)
    if isinstance(checked, str):
        fail(checked)
    lattice, cart = (np.ascontiguousarray(a, dtype=float) for a in checked)
    center, neighbor, _, dist = find_points_in_spheres(
        cart, cart, r=float(cutoff), pbc=np.array([1, 1, 1], dtype=np.int64), lattice=lattice,
        tol=_NUMERICAL_TOL,
    )
    keep = (center != neighbor) | (dist > _NUMERICAL_TOL)
    center, neighbor, dist = center[keep], neighbor[keep], dist[keep]
    if len(dist) > MAX_BONDS:
        fail(f"{len(dist):,} bonds within the {cutoff} A cutoff, more than the bound of {MAX_BONDS:,}.")
    if len(dist) and dist.min() < MIN_DISTANCE:
        k = int(np.argmin(dist))
        fail(_too_close(*sorted((int(center[k]), int(neighbor[k]))), dist[k]))
    isolated = np.flatnonzero(np.bincount(center, minlength=len(z)) == 0)
    if isolated.size:
        fail(
            f"site(s) {isolated.tolist()[:10]} have no neighbour within the cutoff of "
            f"{cutoff} A, so {family} has no bond to update them with."
        )
    return z, center.astype(np.int64), neighbor.astype(np.int64), dist.astype(np.float32)


def each_structure(structures, build, on_error, errors, offset=0, progress=None):
    """Yield ``(i, build(i + offset, structure))`` for every structure that can be built, and
    put the :class:`RowError` of every other in ``errors`` (or raise it, with ``on_error="raise"``): any
    failure of one structure is its own error, except ``MemoryError``, which depends on what
    else is alive (the rest of a batch) and is raised, for the caller to retry alone.
    ``progress`` (a progress bar's hook) is called after each structure, built or not, with
    ``offset`` + the number of structures done so far."""
    for i, structure in enumerate(structures):
        failed = True
        try:
            value = build(i + offset, structure)
            failed = False
        except MemoryError:
            raise
        except GraphConstructionError as exc:
            if on_error == "raise":
                raise
            errors[i] = exc.row if exc.row is not None else RowError.of_structure(i + offset, structure, str(exc))
        except Exception as exc:  # noqa: BLE001 - any failure of one structure is its own error
            if on_error == "raise":
                raise
            errors[i] = RowError.of_structure(i + offset, structure, str(exc), kind=type(exc).__name__)
        if progress is not None:
            progress(offset + i + 1)
        if not failed:
            yield i, value
