"""Training-epoch time of AtomSets: this package (PyTorch + skorch) vs maml's Keras AtomSets.

    python benchmarks/atomsets_epoch_speed.py [--n-materials 100000] [--rows 30] [--features 32]

Synthetic data shaped like Materials Project sets: set sizes drawn from a log-normal with
mean ``--rows`` (1 to 8x the mean), ``--features`` features per row, one float target. Both
models: per-row MLP (64, 64) -> weighted mean -> MLP (64, 64) -> 1, Adam, MSE, batch size
128, no validation. Each trains two epochs; the second is timed (the first includes Keras'
graph tracing). Prints both epoch times and the ratio; writes
benchmarks/results/atomsets_epoch_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def synthetic_sets(n, mean_rows, n_features, seed=0):
    rng = np.random.default_rng(seed)
    sizes = np.clip(np.round(rng.lognormal(np.log(mean_rows) - 0.32, 0.8, size=n)), 1, 8 * mean_rows).astype(int)
    rows = rng.normal(size=(sizes.sum(), n_features)).astype(np.float32)
    pieces = np.split(rows, np.cumsum(sizes)[:-1])
    y = np.array([p[:, 0].mean() for p in pieces], dtype=np.float32)
    return pieces, y, sizes


def ours(pieces, y, batch_size):
    from sklearn_atomsets import AtomSetsRegressor, WeightedSet

    sets = [WeightedSet(p) for p in pieces]
    model = AtomSetsRegressor(max_epochs=2, validation_fraction=None, batch_size=batch_size, random_state=0)
    model.fit(sets, y)
    return float(model.net_.history[-1, "dur"])


def maml_keras(pieces, y, batch_size):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    from maml.models import AtomSets

    tf.keras.utils.disable_interactive_logging()
    model = AtomSets(input_dim=pieces[0].shape[1], is_embedding=False, n_neurons=(64, 64),
                     n_neurons_final=(64, 64), symmetry_func="mean")
    generator = model._get_data_generator(list(pieces), list(y), batch_size=batch_size, is_shuffle=True)
    times = []

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.model.fit(generator, epochs=2, verbose=0, callbacks=[Timer()])
    return times[-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-materials", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    import torch

    pieces, y, sizes = synthetic_sets(args.n_materials, args.rows, args.features)
    print(f"{args.n_materials} materials, {sizes.sum()} rows (set size mean {sizes.mean():.1f}, "
          f"min {sizes.min()}, max {sizes.max()}), {args.features} features, batch size {args.batch_size}")
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads")
    t_ours = ours(pieces, y, args.batch_size)
    print(f"sklearn-atomsets (PyTorch + skorch): {t_ours:7.2f} s per training epoch")
    t_maml = maml_keras(pieces, y, args.batch_size)
    print(f"maml AtomSets (Keras):               {t_maml:7.2f} s per training epoch")
    print(f"ratio maml / ours = {t_maml / t_ours:.1f}x   (target >= 5x; target for ours < 5 s)")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "atomsets_epoch_speed.json").write_text(json.dumps({
        "n_materials": args.n_materials, "rows": int(sizes.sum()), "features": args.features,
        "batch_size": args.batch_size, "ours_s_per_epoch": t_ours, "maml_keras_s_per_epoch": t_maml,
        "ratio": t_maml / t_ours, "cpus": os.cpu_count(),
        "command": "python benchmarks/atomsets_epoch_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
