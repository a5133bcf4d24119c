"""Encoder throughput on MatBench dielectric: megnet per structure, megnet batched, ours.

    python benchmarks/encoder_throughput.py [--n N] [--per-structure-limit M] [--batch-size B]

(a) megnet's ``MEGNetDescriptor``, one structure at a time (how maml featurizes);
(b) megnet's own graph converter + batch generator + one Keras call per batch, asking the
    Keras model for every intermediate output;
(c) this package's PyTorch encoder, every output, and the outputs a featurizer keeps
    (V0..V3, u1..u3, set2set, f; no per-bond outputs).
All three start from pymatgen Structures and include graph construction. Prints
structures/s and the ratios, and writes benchmarks/results/encoder_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "matbench"


def load_dielectric(n):
    from matminer.datasets import load_dataset

    data_home = os.environ.get("MATMINER_DATA", str(DEFAULT_DATA))
    df = load_dataset("matbench_dielectric", data_home=data_home)
    return list(df["structure"].iloc[: n or None])


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=0, help="structures (default: all 4764)")
    parser.add_argument("--per-structure-limit", type=int, default=1000,
                        help="structures for (a), which is slow (0: all)")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)

    from sklearn_atomsets import MEGNetEncoder, load_parent
    from sklearn_atomsets._megnet_backend import MegnetReference, import_megnet

    import_megnet()
    import tensorflow as tf
    import torch
    from megnet.utils.descriptor import MEGNetDescriptor

    tf.keras.utils.disable_interactive_logging()  # no progress bar per Keras predict call

    structures = load_dielectric(args.n)
    n = len(structures)
    parent = load_parent()
    print(f"{n} MatBench dielectric structures, parent {parent.name}, batch size {args.batch_size}")
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"tensorflow {tf.__version__}, python {platform.python_version()}")

    # warm-ups (model loading and first-call overheads are not counted)
    ours = MEGNetEncoder(parent, batch_size=args.batch_size)
    ours.encode(structures[:8])
    reference = MegnetReference(parent)
    reference.run(None, structures[:8])
    descriptor = MEGNetDescriptor(str(parent.path))
    descriptor.get_structure_features(structures[0])

    def per_structure(items):
        for s in items:  # one Keras predict per structure; the other layers hit its cache
            descriptor.get_structure_features(s)
            for level in (1, 2, 3):
                descriptor.get_atom_features(s, level=level)

    def megnet_batched():
        for start in range(0, n, args.batch_size):
            reference.run(None, structures[start : start + args.batch_size])

    keep = ["V0", "V1", "V2", "V3", "u1", "u2", "u3", "set2set_atom", "set2set_bond", "f", "prediction"]
    limit = args.per_structure_limit or n
    subset = structures[:limit]
    t_a, _ = timed(lambda: per_structure(subset))
    t_b, _ = timed(megnet_batched)
    t_c, out = timed(lambda: ours.encode(structures))
    t_d, _ = timed(lambda: ours.encode(structures, outputs=keep))
    t_e, _ = timed(lambda: ours.encode(structures, outputs=["V1"]))
    assert out.ok.all(), out.errors

    rows = {
        "a_megnet_per_structure": len(subset) / t_a,
        "b_megnet_batched": n / t_b,
        "c_ours_all_outputs": n / t_c,
        "c_ours_featurizer_outputs": n / t_d,
        "c_ours_V1_only": n / t_e,
    }
    print(f"\n(a) megnet MEGNetDescriptor per structure: {rows['a_megnet_per_structure']:9.1f} structures/s"
          f"  ({len(subset)} structures, {t_a:.1f} s)")
    print(f"(b) megnet batched through Keras:         {rows['b_megnet_batched']:9.1f} structures/s  ({t_b:.1f} s)")
    print(f"(c) ours, every output:                   {rows['c_ours_all_outputs']:9.1f} structures/s  ({t_c:.1f} s)")
    print(f"(c') ours, featurizer outputs:            {rows['c_ours_featurizer_outputs']:9.1f} structures/s  ({t_d:.1f} s)")
    ratios = {
        "c_over_b": rows["c_ours_all_outputs"] / rows["b_megnet_batched"],
        "c_over_a": rows["c_ours_all_outputs"] / rows["a_megnet_per_structure"],
        "c_featurizer_over_b": rows["c_ours_featurizer_outputs"] / rows["b_megnet_batched"],
        "c_featurizer_over_a": rows["c_ours_featurizer_outputs"] / rows["a_megnet_per_structure"],
    }
    print(f"(c'') ours, V1 only (AtomSets-V1 input):  {rows['c_ours_V1_only']:9.1f} structures/s  ({t_e:.1f} s)")
    print(f"\nratio (c)/(b) = {ratios['c_over_b']:.2f}x   (target 10x)")
    print(f"ratio (c)/(a) = {ratios['c_over_a']:.1f}x   (target 100x)")
    print(f"ratio (c')/(b) = {ratios['c_featurizer_over_b']:.2f}x   (c')/(a) = {ratios['c_featurizer_over_a']:.1f}x")
    results = {
        "n_structures": n, "per_structure_n": len(subset), "batch_size": args.batch_size,
        "structures_per_s": rows, "ratios": ratios, "cpus": os.cpu_count(),
        "command": "python benchmarks/encoder_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "encoder_throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
