"""The encode loop of the families that run another package's own model (CHGNet, SevenNet).

:class:`BatchedEncoder` does, once for those families, what their ``encode`` shares: the
argument checks, the choice of outputs, one graph per structure with per-row errors
(``_graph.each_structure``), batches of ``batch_size`` cut at the memory budget
(``_graph.within_budget``), and the :class:`~sklearn_atomsets.EncoderOutput` with NaN rows
for the structures that could not be encoded. A family implements three narrow hooks:

* ``_graph(i, structure)``: its package's graph of one structure and the memory its forward
  pass needs (``(graph, nbytes)``), or a ``GraphConstructionError`` naming the problem;
* ``_bond_count(graph)``: the bonds of that graph (``EncoderOutput.n_bonds``);
* ``_runner(widths, site_wanted)``: a function of one batch's graphs and their site counts
  that runs the frozen forward pass, no further than the outputs in ``widths`` need, and
  returns ``{name: array}`` (site layers stacked over the batch's sites, structure outputs
  one row per structure).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .._encoder import EncoderOutput
from .._graph import each_structure, within_budget


class BatchedEncoder:
    """Base of the CHGNet and SevenNet encoders (see the module docstring); subclasses set
    ``label``, ``family``, ``site_layers`` and ``output_widths()``, and load their parent in
    ``parent_``."""

    structure_layers = ("f",)

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
        site_wanted = [n for n in widths if n in self.site_layers]
        run = self._runner(widths, site_wanted)

        site, graph_level = defaultdict(list), defaultdict(list)
        n_sites = np.zeros(len(structures), dtype=np.int64)
        n_bonds = np.zeros(len(structures), dtype=np.int64)
        ok = np.zeros(len(structures), dtype=bool)
        errors, batch_counts = {}, []
        built = each_structure(structures, self._graph, on_error, errors, progress=progress)
        # batches of batch_size structures, cut where the next would take one over MAX_BATCH_BYTES
        for batch in within_budget((((i, g), nbytes) for i, (g, nbytes) in built), self.batch_size):
            idx = np.array([i for i, _ in batch], dtype=np.int64)
            graphs = [g for _, g in batch]
            ok[idx] = True
            n_sites[idx] = [len(structures[i]) for i in idx]
            n_bonds[idx] = [self._bond_count(g) for g in graphs]
            batch_counts.append(len(graphs))
            result = run(graphs, n_sites[idx])
            for name in widths:
                (site if name in site_wanted else graph_level)[name].append(result[name])
        structure_level = {}
        for name, width in widths.items():
            level = site if name in site_wanted else graph_level
            if not level.get(name):  # nothing could be encoded
                level[name] = [np.zeros((0, width), dtype=np.float32)]
                batch_counts[:] = [0]
            if level is graph_level:
                full = np.full((len(structures), width), np.nan, dtype=np.float32)
                full[ok] = np.concatenate(graph_level[name])
                structure_level[name] = full
        return EncoderOutput(dict(site), {}, structure_level, n_sites, n_bonds, ok, errors, batch_counts)
