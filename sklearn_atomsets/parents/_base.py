"""What every parent family shares: the family interface, parent records and their errors,
the encoder output, and the encode loop.

* :class:`ParentFamily`: the interface one family implements (see :mod:`sklearn_atomsets.parents`);
* :class:`ParentRecord`: base of the families' parent records (where the weights are, their
  sha256), with :class:`ParentModelNotFoundError` / :class:`ParentModelCorruptError` and
  :func:`file_sha256`;
* :class:`EncoderOutput`: what every family's ``encode`` returns;
* :class:`BatchedEncoder`: the encode loop, done once for every family: the argument checks,
  the choice of outputs, one graph per structure with per-row errors
  (``_structures.each_structure``), batches of ``batch_size`` cut at the memory budget
  (``_structures.within_budget``), and the :class:`EncoderOutput` with NaN rows for the
  structures that could not be encoded. A family implements three narrow hooks:

  - ``_graph(i, structure)``: its graph of one structure and the memory its forward pass
    needs (``(graph, nbytes)``), or a ``GraphConstructionError`` naming the problem;
  - ``_bond_count(graph)``: the bonds of that graph (``EncoderOutput.n_bonds``);
  - ``_runner(widths, site_wanted)``: a function of one batch's graphs and their site counts
    that runs the frozen forward pass, no further than the outputs in ``widths`` need, and
    returns ``{name: array}`` (site and bond layers stacked over the batch's sites and
    bonds, structure outputs one row per structure).
"""

from __future__ import annotations

import hashlib
import pickletools
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from ._structures import each_structure, within_budget

__all__ = [
    "BatchedEncoder",
    "EncoderOutput",
    "ParentFamily",
    "ParentModelCorruptError",
    "ParentModelNotFoundError",
    "ParentRecord",
    "checkpoint_names",
    "file_sha256",
]


class ParentFamily:
    """The interface one family of parents implements (see :mod:`sklearn_atomsets.parents`).

    Subclasses set ``name`` (the family, e.g. ``"chgnet"``), ``label`` (the prefix of
    feature labels, e.g. ``"CHGNet"``) and ``extra`` (the pip extra that installs it, or
    None), and implement the four methods below.
    """

    name: str = ""
    label: str = ""
    extra: str | None = None

    def names(self):
        """The registered parent names of this family."""
        raise NotImplementedError

    def owns(self, parent) -> bool:
        """Whether ``parent`` (a name, a path, a parent record, a live model) is this family's."""
        raise NotImplementedError

    def load(self, parent, **kwargs):
        """The parent record (``name``, ``path``, ``sha256``) of ``parent``."""
        raise NotImplementedError

    def encoder(self, parent, *, batch_size=256, device="cpu"):
        """An encoder for ``parent`` (lazily loaded: nothing heavy happens here)."""
        raise NotImplementedError

    def __repr__(self):
        return f"<parent family {self.name!r}: {', '.join(self.names())}>"


def checkpoint_names(path):
    """The strings a torch checkpoint's pickle holds (its dict keys among them), read from the
    pickle's opcodes without unpickling anything; None for a file that is no torch zip archive.

    Families that share the ``.pth`` suffix tell their checkpoints apart by these names.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if member is None:
                return None
            pickled = archive.read(member)
        return frozenset(arg for op, arg, _ in pickletools.genops(pickled) if isinstance(arg, str))
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return None


class ParentModelNotFoundError(FileNotFoundError):
    """No usable copy of a parent model could be found or downloaded."""


class ParentModelCorruptError(ParentModelNotFoundError):
    """A copy of a registered parent model is there but its sha256 does not match the registry.

    A subclass of :class:`ParentModelNotFoundError` (there is no usable copy), so code that
    catches that keeps working; the message says which file is corrupt and its checksum.
    """


class ParentRecord:
    """Base of every family's parent record (``ParentModel``, ``CHGNetParent``,
    ``SevenNetParent``): a frozen dataclass with at least ``name``, ``path`` (the weights)
    and ``sha256``. Featurizers accept any record as ``parent``."""

    __slots__ = ()


_SHA256_MEMO: dict = {}


def file_sha256(path) -> str:
    """sha256 of a file's content, computed once per file and recomputed only when its size,
    modification time or inode changed (an overwritten file gets its new checksum)."""
    path = Path(path).absolute()
    stat = path.stat()
    signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)
    memo = _SHA256_MEMO.get(path)
    if memo is not None and memo[0] == signature:
        return memo[1]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    _SHA256_MEMO[path] = (signature, digest.hexdigest())
    return digest.hexdigest()


class EncoderOutput:
    """Every intermediate output of the parent for a list of structures.

    ``out["V1"]`` is a list with one ``(n_sites, d)`` array per structure (``None`` where the
    structure failed); ``out["u3"]``, ``out["f"]``, ``out["prediction"]`` are ``(n_structures, d)``
    arrays with NaN rows where it failed. ``errors`` maps failed positions to the reason.
    """

    def __init__(self, site, bond, structure, n_sites, n_bonds, ok, errors, batch_counts):
        # Site and bond outputs stay as the per-batch arrays the encoder produced (dicts of
        # lists; batch_counts[i] structures in batch i): stacking millions of bond rows into
        # one array would cost more than the forward pass.
        self._site, self._bond, self._structure = site, bond, structure
        self.n_sites, self.n_bonds, self.ok, self.errors = n_sites, n_bonds, ok, errors
        self.batch_counts = batch_counts

    @property
    def names(self):
        return [*self._site, *self._bond, *self._structure]

    def __len__(self):
        return len(self.ok)

    def _batches(self, name):
        if name in self._site:
            return self._site[name], self.n_sites
        if name in self._bond:
            return self._bond[name], self.n_bonds
        raise KeyError(f"{name!r} is not a site or bond output; available: {self.names}")

    def packed(self, name):
        """Site or bond output of all successful structures stacked in one array."""
        batches, _ = self._batches(name)
        return np.concatenate(batches) if len(batches) != 1 else batches[0]

    def __getitem__(self, name):
        if name in self._structure:
            return self._structure[name]
        if name not in self._site and name not in self._bond:
            raise KeyError(f"{name!r} is not an encoder output; available: {self.names}")
        batches, counts = self._batches(name)
        counts, pieces, start = counts[self.ok], [], 0
        for batch, k in zip(batches, self.batch_counts):
            if k:
                pieces.extend(np.split(batch, np.cumsum(counts[start : start + k])[:-1]))
            start += k
        pieces = iter(pieces)
        return [next(pieces) if good else None for good in self.ok]

    def __repr__(self):
        return f"EncoderOutput(n_structures={len(self)}, failed={len(self.errors)}, names={self.names})"



class BatchedEncoder:
    """Base of every family's encoder (see the module docstring); subclasses set ``label``,
    ``family``, ``site_layers`` (and ``bond_layers``, outputs with one row per bond) and
    ``output_widths()``, and load their parent in ``parent_``."""

    structure_layers = ("f",)
    bond_layers = ()

    def __getstate__(self):
        # Pickles keep the parent's name or path, never the model.
        return {k: v for k, v in self.__dict__.items() if not k.endswith("_")}

    def encode(self, structures, on_error="raise", outputs=None, progress=None):
        """Run the parent on structures and return the requested outputs.

        Parameters
        ----------
        structures : sequence of pymatgen Structure
        on_error : {"raise", "nan"}, default="raise"
            A structure that cannot be encoded (isolated atom, disordered, element outside
            the model's set, over the memory budget, not a Structure): raise a
            ``GraphConstructionError`` naming it, or record it in ``errors`` and return
            NaN / None for it.
        outputs : list of str, optional
            Only these outputs (default all); the forward pass stops after the last module
            they need.
        progress : callable, optional
            Called with the number of structures whose graphs are built so far, after each
            one (a progress bar's hook).

        Returns
        -------
        EncoderOutput
        """
        if on_error not in ("raise", "nan"):
            raise ValueError(f"on_error must be 'raise' or 'nan', got {on_error!r}.")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}.")
        structures = list(structures)
        widths = self.output_widths()
        if outputs is None:
            outputs = list(widths)
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        unknown = sorted(set(outputs) - set(widths))
        if unknown:
            raise KeyError(f"{unknown} are not encoder outputs; available: {list(widths)}")
        widths = {name: w for name, w in widths.items() if name in outputs}
        site_layers, bond_layers = set(self.site_layers), set(self.bond_layers)
        level_of = {name: "site" if name in site_layers else "bond" if name in bond_layers else "structure"
                    for name in widths}
        run = self._runner(widths, [n for n in widths if level_of[n] == "site"])

        levels = {"site": defaultdict(list), "bond": defaultdict(list), "structure": defaultdict(list)}
        n_sites = np.zeros(len(structures), dtype=np.int64)
        n_bonds = np.zeros(len(structures), dtype=np.int64)
        ok = np.zeros(len(structures), dtype=bool)
        errors, batch_counts = {}, []
        built = each_structure(structures, self._graph, on_error, errors, progress=progress)
        # batches of batch_size structures, cut where the next would take one over MAX_BATCH_BYTES;
        # each batch's graphs are built only once the previous batch is done with
        for batch in within_budget((((i, g), nbytes) for i, (g, nbytes) in built), self.batch_size):
            idx = np.array([i for i, _ in batch], dtype=np.int64)
            graphs = [g for _, g in batch]
            ok[idx] = True
            n_sites[idx] = [len(structures[i]) for i in idx]
            n_bonds[idx] = [self._bond_count(g) for g in graphs]
            batch_counts.append(len(graphs))
            result = run(graphs, n_sites[idx])
            for name in widths:
                levels[level_of[name]][name].append(result[name])
        structure_level = {}
        for name, width in widths.items():
            level = levels[level_of[name]]
            if not level.get(name):  # nothing could be encoded
                level[name] = [np.zeros((0, width), dtype=np.float32)]
                batch_counts[:] = [0]
            if level_of[name] == "structure":
                full = np.full((len(structures), width), np.nan, dtype=np.float32)
                full[ok] = np.concatenate(level[name])  # batches run in input order
                structure_level[name] = full
        return EncoderOutput(dict(levels["site"]), dict(levels["bond"]), structure_level, n_sites, n_bonds, ok,
                             errors, batch_counts)
