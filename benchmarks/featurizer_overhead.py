"""Cost of the matminer wrapper: featurize_dataframe vs the raw encoder, on MatBench dielectric.

    python benchmarks/featurizer_overhead.py [--n N] [--repeats R]

For the readout vector f (MEGNetStructureFeaturizer) and the V1 site sets
(MEGNetSiteSetFeaturizer): the raw ``MEGNetEncoder.encode`` of the same structures and
outputs, then ``featurize_dataframe`` with the cache off (every structure goes through the
encoder). Best of ``--repeats`` runs each; prints structures/s and the wrapper's extra cost
(target < 20%); writes benchmarks/results/featurizer_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "matbench"


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=0, help="structures (default: all 4764)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import pandas as pd
    from matminer.datasets import load_dataset

    from sklearn_atomsets import MEGNetEncoder, MEGNetSiteSetFeaturizer, MEGNetStructureFeaturizer

    df = load_dataset("matbench_dielectric", data_home=os.environ.get("MATMINER_DATA", str(DEFAULT_DATA)))
    df = df.iloc[: args.n or None][["structure"]]
    structures = list(df["structure"])
    n = len(structures)
    encoder = MEGNetEncoder(batch_size=256)
    encoder.encode(structures[:8])
    cases = {
        "f": (MEGNetStructureFeaturizer(layers=("f",), cache=False), ["f"]),
        "V1 sets": (MEGNetSiteSetFeaturizer("V1", cache=False), ["V1"]),
    }
    print(f"{n} MatBench dielectric structures, best of {args.repeats}")
    results = {}
    for name, (featurizer, outputs) in cases.items():
        raw = best_of(args.repeats, lambda: encoder.encode(structures, outputs=outputs))
        wrapped = best_of(args.repeats, lambda: featurizer.featurize_dataframe(df, "structure", pbar=False))
        extra = wrapped / raw - 1
        results[name] = {"raw_s": raw, "featurize_dataframe_s": wrapped, "extra_cost": extra}
        print(f"{name:8s} raw encoder {n / raw:8.1f} structures/s   featurize_dataframe {n / wrapped:8.1f} "
              f"structures/s   wrapper costs {100 * extra:+.1f}%  (target < 20%)")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "featurizer_overhead.json").write_text(json.dumps({
        "n_structures": n, "repeats": args.repeats, "results": results,
        "command": "python benchmarks/featurizer_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
