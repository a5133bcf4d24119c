"""SevenNet parent throughput on MatBench dielectric: sevenn's own calculator vs ours.

    python benchmarks/sevennet_throughput.py [--n N] [--calculator-limit M] [--batch-size B] [--threads T]

Measured in one run, on the same structures, after a warm-up:

(a) sevenn's ``SevenNetCalculator`` as an ASE user calls it: one structure at a time,
    energy, forces and stresses (it always computes all three);
(b) ours (``SevenNetEncoder``): every output (V0..V5, f, energy), batched, no gradients,
    the force module never run, with the package's per-row input checks;
(c) ours, ``V1`` only (the pass stops after the first interaction block);
(d) sevenn's graph builder alone (neighbour list and AtomGraphData, the part no batching
    speeds up).

All start from pymatgen Structures. Prints structures/s and the ratios, the largest
difference between our energy per atom and the calculator's, and writes
benchmarks/results/sevennet_throughput.json. --n 0 means all 4764 crystals.
"""

from __future__ import annotations

import copy
import sys

from _throughput import parser, peak_rss_mib, print_header, set_up, timed, write_results


def main(argv=None):
    args = parser(__doc__, "SevenNet-0", "--calculator-limit",
                  "structures for (a), the slowest path (default 0: all); its rate is per structure").parse_args(argv)

    import numpy as np
    from pymatgen.io.ase import AseAtomsAdaptor

    from sklearn_atomsets import SevenNetEncoder

    structures = set_up(args)
    n = len(structures)
    ours = SevenNetEncoder(args.parent, batch_size=args.batch_size)
    model = ours.model_
    calculator = sevenn_calculator(ours)
    print_header(args, n)

    def calculator_energies(structures):
        energies = []
        for structure in structures:
            atoms = AseAtomsAdaptor.get_atoms(structure)
            atoms.calc = calculator
            energies.append(atoms.get_potential_energy() / len(atoms))
        return np.array(energies)

    # warm-ups (model loading and first-call overheads are not counted)
    ours.encode(structures[:8])
    calculator_energies(structures[:2])

    subset = structures[: args.calculator_limit or n]
    n_a = len(subset)
    t_a, reference = timed(lambda: calculator_energies(subset))
    t_b, out = timed(lambda: ours.encode(structures, on_error="nan"))
    t_c, _ = timed(lambda: ours.encode(structures, outputs=["V1"], on_error="nan"))
    t_d, _ = timed(lambda: [ours._graph(i, s) for i, s in enumerate(structures)])
    peak_mib = peak_rss_mib()
    assert out.ok.all(), out.errors
    e_err = float(np.abs(out["prediction"][:n_a, 0] - reference).max())

    rows = {
        "a_sevenn_calculator_efs": n_a / t_a,
        "b_ours_all_outputs": n / t_b,
        "c_ours_V1_only": n / t_c,
        "d_sevenn_graph_builder_only": n / t_d,
    }
    print(f"\n(a) sevenn SevenNetCalculator (E, F, S):  {rows['a_sevenn_calculator_efs']:8.1f} structures/s ({n_a} structures, {t_a:.1f} s)")
    print(f"(b) ours, V0..V5 + f + energy:            {rows['b_ours_all_outputs']:8.1f} structures/s ({t_b:.1f} s)")
    print(f"(c) ours, V1 only:                        {rows['c_ours_V1_only']:8.1f} structures/s ({t_c:.1f} s)")
    print(f"(d) graph building alone (checks + sevenn): {rows['d_sevenn_graph_builder_only']:6.1f} structures/s ({t_d:.1f} s)")
    ratios = {"b_over_a": rows["b_ours_all_outputs"] / rows["a_sevenn_calculator_efs"],
              "c_over_a": rows["c_ours_V1_only"] / rows["a_sevenn_calculator_efs"]}
    print(f"\nratio (b)/(a) = {ratios['b_over_a']:.2f}x   (c)/(a) = {ratios['c_over_a']:.2f}x")
    print(f"max |energy per atom (ours) - (calculator)| = {e_err:.2e} eV/atom")
    print(f"peak RSS of this process: {peak_mib:.0f} MiB")
    write_results("sevennet_throughput", args, argv, {"n_structures": n, "n_structures_calculator": n_a},
                  structures_per_s=rows, ratios=ratios, max_abs_energy_per_atom_difference=e_err,
                  peak_rss_mib=peak_mib, model_modules=len(model._modules))
    return 0


def sevenn_calculator(ours):
    """sevenn's ASE calculator on a copy of the same model (the weights sevenn loads for the
    checkpoint; a copy, because the calculator switches its model to unbatched mode)."""
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator(copy.deepcopy(ours.model_), file_type="model_instance", device=ours.device,
                              modal=ours.modal_)


if __name__ == "__main__":
    sys.exit(main())
