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

import argparse
import copy
import json
import os
import platform
import resource
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from encoder_throughput import load_dielectric, timed  # noqa: E402 - the same data and timer as the MEGNet benchmark


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=0, help="structures (default 0: all 4764)")
    parser.add_argument("--batch-size", type=int, default=64, help="structures per forward pass (ours)")
    parser.add_argument("--calculator-limit", type=int, default=0,
                        help="structures for (a), the slowest path (default 0: all); its rate is per structure")
    parser.add_argument("--parent", default="SevenNet-0")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from pymatgen.io.ase import AseAtomsAdaptor

    from sklearn_atomsets import SevenNetEncoder

    warnings.filterwarnings("ignore")  # pymatgen's noble-gas electronegativity, sevenn's accelerator notice
    if args.threads:
        torch.set_num_threads(args.threads)
    structures = load_dielectric(args.n)
    n = len(structures)
    ours = SevenNetEncoder(args.parent, batch_size=args.batch_size)
    model = ours.model_
    calculator = sevenn_calculator(ours)
    print(f"{n} MatBench dielectric structures, parent {args.parent}, batch size {args.batch_size}")
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"python {platform.python_version()}")

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
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
    results = {
        "n_structures": n, "n_structures_calculator": n_a, "batch_size": args.batch_size, "parent": args.parent,
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "structures_per_s": rows, "ratios": ratios, "max_abs_energy_per_atom_difference": e_err,
        "peak_rss_mib": peak_mib, "model_modules": len(model._modules),
        "command": "python benchmarks/sevennet_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "sevennet_throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


def sevenn_calculator(ours):
    """sevenn's ASE calculator on a copy of the same model (the weights sevenn loads for the
    checkpoint; a copy, because the calculator switches its model to unbatched mode)."""
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator(copy.deepcopy(ours.model_), file_type="model_instance", device=ours.device,
                              modal=ours.modal_)


if __name__ == "__main__":
    sys.exit(main())
