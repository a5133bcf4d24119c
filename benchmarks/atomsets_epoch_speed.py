"""Training-epoch time of AtomSets: this package (PyTorch + skorch) vs maml's Keras AtomSets.

    python benchmarks/atomsets_epoch_speed.py [--n-materials 100000] [--rows 30] [--features 32]
                                              [--batch-size 128] [--epochs 3] [--n-jobs N]

Synthetic data shaped like Materials Project sets: set sizes drawn from a log-normal with
mean ``--rows`` (clipped to 1..8x the mean), ``--features`` float features per row, one
float target. Both models are the same network -- per-row MLP (64, 64) -> weighted mean ->
MLP (64, 64) -> 1, Adam, MSE -- trained on the same sets in the same batch size, without a
validation split. Each trains ``--epochs`` epochs; the first is not timed (Keras traces its
graph then), and the median of the others is reported. Ours is timed by skorch's own
per-epoch ``dur`` (so it includes the whole skorch loop); maml's by a Keras callback, which
also counts the optimizer steps to show every batch ran. Prints both epoch times and the
ratio; writes benchmarks/results/atomsets_epoch_speed.json.

Ours runs with the estimator's default ``n_jobs=None`` (one torch thread) unless
``--n-jobs`` says otherwise; TensorFlow uses its own thread pools over all cores. The two
run one after the other; the 1-minute load average is printed before each, since other
jobs on the machine slow both (and torch with several OpenMP threads far more, see the
estimators' ``n_jobs``).
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
    """Feature rows split into sets with a Materials-Project-like size spread."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(np.round(rng.lognormal(np.log(mean_rows) - 0.32, 0.8, size=n)), 1, 8 * mean_rows).astype(int)
    rows = rng.normal(size=(sizes.sum(), n_features)).astype(np.float32)
    pieces = np.split(rows, np.cumsum(sizes)[:-1])
    y = np.add.reduceat(rows[:, 0], np.r_[0, np.cumsum(sizes)[:-1]]) / sizes
    return pieces, y.astype(np.float32), sizes


def _load():
    return f"load average {os.getloadavg()[0]:.2f}"


def ours(pieces, y, batch_size, epochs, n_jobs):
    from sklearn_atomsets import AtomSetsRegressor, WeightedSet

    sets = [WeightedSet(p) for p in pieces]
    model = AtomSetsRegressor(max_epochs=epochs, validation_fraction=None, batch_size=batch_size,
                              n_jobs=n_jobs, random_state=0)
    start = time.perf_counter()
    model.fit(sets, y)
    total = time.perf_counter() - start
    durations = list(model.net_.history[:, "dur"])
    return float(np.median(durations[1:])), durations, total


def maml_keras(pieces, y, batch_size, epochs):
    # maml's Keras 2 code needs tf-keras; read by TensorFlow at import, so set before it
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from maml.models import AtomSets

    tf.keras.utils.disable_interactive_logging()
    model = AtomSets(input_dim=pieces[0].shape[1], is_embedding=False, n_neurons=(64, 64),
                     n_neurons_final=(64, 64), symmetry_func="mean")
    generator = model._get_data_generator(list(pieces), list(y), batch_size=batch_size, is_shuffle=True)
    durations, steps = [], []

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.steps = time.perf_counter(), 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1

        def on_epoch_end(self, epoch, logs=None):
            durations.append(time.perf_counter() - self.start)
            steps.append(self.steps)

    model.model.fit(generator, epochs=epochs, verbose=0, callbacks=[Timer()])
    return float(np.median(durations[1:])), durations, steps, len(generator)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-materials", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=30, help="mean rows per set")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per model; the first is not timed")
    parser.add_argument("--n-jobs", type=int, default=None, help="the estimator's n_jobs (torch threads; default 1)")
    parser.add_argument("--skip-maml", action="store_true", help="time only this package")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")

    import torch

    from joblib import effective_n_jobs

    threads = effective_n_jobs(args.n_jobs)
    pieces, y, sizes = synthetic_sets(args.n_materials, args.rows, args.features)
    print(f"{args.n_materials} materials, {sizes.sum()} rows (set size mean {sizes.mean():.1f}, "
          f"min {sizes.min()}, max {sizes.max()}), {args.features} features, batch size {args.batch_size}")
    print(f"machine: {os.cpu_count()} CPUs; torch {torch.__version__} trains with n_jobs={args.n_jobs} "
          f"({threads} thread{'s' * (threads > 1)})")
    print(f"[{_load()}] training sklearn-atomsets for {args.epochs} epochs ...")
    t_ours, d_ours, total = ours(pieces, y, args.batch_size, args.epochs, args.n_jobs)
    print(f"sklearn-atomsets (PyTorch + skorch): {t_ours:7.2f} s per training epoch  "
          f"(epochs: {', '.join(f'{d:.2f}' for d in d_ours)} s; fit incl. packing {total:.1f} s)")
    result = {
        "n_materials": args.n_materials, "rows": int(sizes.sum()), "features": args.features,
        "batch_size": args.batch_size, "epochs": args.epochs, "torch_threads": threads,
        "ours_s_per_epoch": t_ours, "ours_epochs_s": d_ours, "cpus": os.cpu_count(),
    }
    if not args.skip_maml:
        print(f"[{_load()}] training maml's Keras AtomSets for {args.epochs} epochs ...")
        t_maml, d_maml, steps, n_batches = maml_keras(pieces, y, args.batch_size, args.epochs)
        print(f"maml AtomSets (Keras):               {t_maml:7.2f} s per training epoch  "
              f"(epochs: {', '.join(f'{d:.2f}' for d in d_maml)} s; {steps[-1]} of {n_batches} batches per epoch)")
        print(f"ratio maml / ours = {t_maml / t_ours:.2f}x   (issue targets: >= 5x; ours < 5 s)")
        result.update(maml_keras_s_per_epoch=t_maml, maml_keras_epochs_s=d_maml, ratio=t_maml / t_ours)
    result["command"] = "python benchmarks/atomsets_epoch_speed.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "atomsets_epoch_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
