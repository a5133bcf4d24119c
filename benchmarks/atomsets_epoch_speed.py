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

Real-data cases (``--cases``; each prints ours with distinct-row merging off and on, and
maml's Keras AtomSets, side by side in one run):

- ``v0``: AtomSets-V0 (MEGNet V0 rows weighted by atom fraction) on the MatBench
  expt_gap compositions, tiled to ``--n-materials``;
- ``z``: the non-TL AtomSets (atomic numbers, trainable embedding) on the same data;
- ``v1``: AtomSets-V1 on the V1 site sets of the MatBench dielectric crystals (the first
  ``--n-structures``; all 4764 by default), tiled to ``--n-materials`` so each crystal keeps
  its symmetry repetition.

    python benchmarks/atomsets_epoch_speed.py --cases v0 z v1 --n-materials 100000

With ``--stacked K`` (default 5) the ``v0`` and ``z`` cases also train a K-member seed
ensemble (``AtomSetsEnsembleRegressor(stacked=True)``: all members in one pass, stacked
weights) and print its epoch time over one net's, measured side by side in the same run,
and member-epochs per second.

"Merging off" is this package before distinct-row sets (``_estimators._MERGE_ROWS``
False): every row goes through phi. The data need ``MATMINER_DATA`` (or ../shared) and,
for ``v1``, the pretrained parent; V1 sets are cached in ``--cache`` between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
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


def ours(pieces, y, batch_size, epochs, n_jobs, weights=None, merge=True):
    from sklearn_atomsets import AtomSetsRegressor, WeightedSet
    from sklearn_atomsets import _estimators

    sets = [WeightedSet(p, None if weights is None else w) for p, w in zip(pieces, weights or pieces)]
    model = AtomSetsRegressor(max_epochs=epochs, validation_fraction=None, batch_size=batch_size,
                              n_jobs=n_jobs, random_state=0)
    switch = _estimators._MERGE_ROWS
    _estimators._MERGE_ROWS = merge
    try:
        start = time.perf_counter()
        model.fit(sets, y)
        total = time.perf_counter() - start
    finally:
        _estimators._MERGE_ROWS = switch
    durations = list(model.net_.history[:, "dur"])
    return float(np.median(durations[1:])), durations, total, model


def ours_stacked(pieces, y, batch_size, epochs, n_jobs, weights=None, n_members=5):
    """An ``n_members`` seed ensemble of the same net trained in one stack (``stacked=True``):
    median seconds per epoch of all members together (the members' shared ``dur``), the
    epochs, the whole fit's seconds (the members share one packing of the data) and the ensemble."""
    from sklearn_atomsets import AtomSetsEnsembleRegressor, AtomSetsRegressor, WeightedSet

    sets = [WeightedSet(p, None if weights is None else w) for p, w in zip(pieces, weights or pieces)]
    net = AtomSetsRegressor(max_epochs=epochs, validation_fraction=None, batch_size=batch_size, n_jobs=n_jobs)
    model = AtomSetsEnsembleRegressor(net, n_estimators=n_members, random_state=0, stacked=True)
    start = time.perf_counter()
    model.fit(sets, y)
    total = time.perf_counter() - start
    durations = list(model.estimators_[0].net_.history[:, "dur"])
    return float(np.median(durations[1:])), durations, total, model


def bare_steps(model, sets, y, batch_size, epochs, n_jobs):
    """The floor under an epoch: the fitted model's own module trained by a bare PyTorch loop
    (Adam, MSE, zero_grad / forward / backward / step per batch) over batches gathered before
    the clock starts: no skorch, no batch gathering. Median seconds per epoch of ``epochs - 1``
    timed epochs (the first is not timed), and steps per epoch."""
    import copy

    import torch

    from sklearn_atomsets._estimators import _PackedDataset
    from sklearn_atomsets._threads import torch_threads

    target = ((y - model.target_mean_) / model.target_scale_).astype(np.float32).reshape(-1, 1)
    dataset = _PackedDataset(model._pack(sets, fitting=False), target)
    order = np.random.default_rng(0).permutation(len(sets))
    batches = [dataset.batch(order[i: i + batch_size]) for i in range(0, len(order), batch_size)]
    module = copy.deepcopy(model.module_).train()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    loss_fn = torch.nn.MSELoss()
    times = []
    with torch_threads(n_jobs):
        for _ in range(epochs):
            start = time.perf_counter()
            for batch in batches:
                optimizer.zero_grad()
                loss = loss_fn(module(**batch.X), batch.y)
                loss.backward()
                optimizer.step()
            times.append(time.perf_counter() - start)
    return float(np.median(times[1:])), len(batches)


def maml_keras(pieces, y, batch_size, epochs, weights=None):
    # maml's Keras 2 code needs tf-keras; read by TensorFlow at import, so set before it
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from maml.models import AtomSets

    tf.keras.utils.disable_interactive_logging()
    embedding = pieces[0].ndim == 1  # atomic numbers: maml's embedding mode
    if embedding:
        pieces = [p[:, None] for p in pieces]
        model = AtomSets(input_dim=None, is_embedding=True, n_neurons=(64, 64), n_neurons_final=(64, 64),
                         symmetry_func="mean")
    else:
        model = AtomSets(input_dim=pieces[0].shape[1], is_embedding=False, n_neurons=(64, 64),
                         n_neurons_final=(64, 64), symmetry_func="mean")
    features = list(pieces) if weights is None else [[p, w] for p, w in zip(pieces, weights)]
    generator = model._get_data_generator(features, list(y), batch_size=batch_size, is_shuffle=True)
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


def _maml_importable():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from maml.models import AtomSets  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: skip maml
        return f"{type(exc).__name__}: {exc}"
    return None


def _tile(n, *columns):
    """Repeat the materials in order until there are ``n`` (each keeps its own rows)."""
    take = np.arange(n) % len(columns[0])
    return [[c[i] for i in take] if isinstance(c, list) else np.asarray(c)[take] for c in columns]


def expt_gap_compositions(n, atomic_numbers):
    """V0 sets (or atomic-number sets) of the MatBench expt_gap compositions, tiled to n."""
    from sklearn_atomsets import MEGNetElementSetFeaturizer, WeightedSet
    from sklearn_atomsets.matbench import load_matbench_task

    task = load_matbench_task("matbench_expt_gap", download=False)
    if atomic_numbers:
        sets = [WeightedSet.from_composition(c) for c in task.inputs]
    else:
        sets = [row[0] for row in MEGNetElementSetFeaturizer().featurize_many(task.inputs, pbar=False)]
    pieces, weights, y = _tile(n, [s.features for s in sets], [s.weights for s in sets],
                               task.targets.to_numpy(np.float32))
    return pieces, weights, y, len(sets)


def dielectric_v1(n, n_structures, cache):
    """V1 site sets of the first n_structures MatBench dielectric crystals, tiled to n."""
    cache = Path(cache)
    if cache.is_file():
        data = np.load(cache)
        lengths, rows, y = data["lengths"], data["rows"], data["y"]
    else:
        from sklearn_atomsets import MEGNetSiteSetFeaturizer
        from sklearn_atomsets.matbench import load_matbench_task

        task = load_matbench_task("matbench_dielectric", download=False)
        print(f"featurizing {len(task.inputs)} dielectric crystals (V1; cached in {cache}) ...", flush=True)
        sets = [row[0] for row in MEGNetSiteSetFeaturizer("V1").featurize_many(task.inputs, pbar=False)]
        lengths = np.array([len(s) for s in sets])
        rows = np.concatenate([s.features for s in sets])
        y = task.targets.to_numpy(np.float32)
        np.savez(cache, lengths=lengths, rows=rows, y=y)
    lengths, y = lengths[:n_structures], y[:n_structures]
    pieces = np.split(rows[: lengths.sum()], np.cumsum(lengths)[:-1])
    pieces, y = _tile(n, pieces, y)
    return pieces, None, y, len(lengths)


def real_case(name, args, n_jobs, maml_problem):
    """Epoch times of one real-data case: merging off, on, and maml; returns a result dict."""
    from sklearn_atomsets import WeightedSet
    from sklearn_atomsets._sets import merge_equal_rows, pack_sets, row_table

    if name == "v1":
        pieces, weights, y, n_source = dielectric_v1(args.n_materials, args.n_structures, args.cache)
        label = f"AtomSets-V1 on dielectric V1 sets ({n_source} crystals tiled)"
    else:
        pieces, weights, y, n_source = expt_gap_compositions(args.n_materials, atomic_numbers=name == "z")
        label = (f"AtomSets ({'atomic numbers, embedding' if name == 'z' else 'V0'}) on expt_gap compositions "
                 f"({n_source} tiled)")
    packed = pack_sets([WeightedSet(p, None if weights is None else w) for p, w in zip(pieces, weights or pieces)])
    start = time.perf_counter()
    merged = merge_equal_rows(packed)
    table = row_table(merged.features)[0]
    t_merge = time.perf_counter() - start
    print(f"\n== {name}: {label}: {len(pieces)} materials, {len(packed.weights)} rows -> {len(merged.weights)} "
          f"after merging equal rows within sets, {len(table)} distinct rows in the whole data set "
          f"(merging + table {t_merge:.2f} s, once per fit)")
    result = {"label": label, "n_materials": len(pieces), "source_materials": n_source,
              "rows": len(packed.weights), "merged_rows": len(merged.weights), "distinct_rows": len(table),
              "merge_s": t_merge}
    for merge in (False, True):
        print(f"[{_load()}] sklearn-atomsets, merging {'on' if merge else 'off'} ...", flush=True)
        t, d, total, model = ours(pieces, y, args.batch_size, args.epochs, n_jobs, weights, merge)
        key = "ours_merged" if merge else "ours_unmerged"
        result.update({f"{key}_s_per_epoch": t, f"{key}_epochs_s": d})
        print(f"  sklearn-atomsets, merging {'on ' if merge else 'off'}: {t:7.3f} s per training epoch "
              f"(epochs: {', '.join(f'{x:.3f}' for x in d)} s; fit {total:.1f} s)")
    if args.stacked and name != "v1":
        k = args.stacked
        single_fit = total
        print(f"[{_load()}] sklearn-atomsets, {k}-member seed ensemble trained stacked (one pass; other jobs on the "
              "machine slow each timing differently: compare the load averages) ...", flush=True)
        cpu = time.process_time()
        t_stack, d, total_stack, _ = ours_stacked(pieces, y, args.batch_size, args.epochs, n_jobs, weights, k)
        cpu_stack = time.process_time() - cpu
        print(f"  stacked ensemble, {k} members: {t_stack:7.3f} s per epoch of all {k} (epochs: "
              f"{', '.join(f'{x:.3f}' for x in d)} s; fit {total_stack:.1f} s, data packed once for all) = "
              f"{t_stack / k:.3f} s per member-epoch")
        # one net again right after, so the stack is bracketed by two single-net timings under
        # (nearly) the same load; the ratio uses their mean
        print(f"[{_load()}] sklearn-atomsets, one net again (merging on) ...", flush=True)
        cpu = time.process_time()
        t_after, d_after, total_after, _ = ours(pieces, y, args.batch_size, args.epochs, n_jobs, weights, True)
        cpu_after = time.process_time() - cpu
        print(f"  sklearn-atomsets, one net after the stack: {t_after:7.3f} s per training epoch (epochs: "
              f"{', '.join(f'{x:.3f}' for x in d_after)} s; fit {total_after:.1f} s)")
        t_one = (result["ours_merged_s_per_epoch"] + t_after) / 2
        single_fit = (single_fit + total_after) / 2
        result.update(stacked_members=k, stacked_s_per_epoch=t_stack, stacked_epochs_s=d, stacked_fit_s=total_stack,
                      one_net_after_s_per_epoch=t_after, single_fit_s=single_fit,
                      ratio_stacked_epoch_over_one_net=t_stack / t_one,
                      ratio_stacked_fit_over_one_net=total_stack / single_fit,
                      member_epochs_per_s_stacked=k / t_stack, member_epochs_per_s_alone=1 / t_one,
                      stacked_fit_cpu_s=cpu_stack, one_net_after_fit_cpu_s=cpu_after)
        print(f"  one net, mean of before and after: {t_one:.3f} s per epoch, fit {single_fit:.1f} s")
        # CPU seconds of this process: less moved by other jobs than wall time (waiting for a core is
        # not counted), though they still share caches and memory bandwidth
        print(f"  CPU time of the whole fit ({args.epochs} epochs, packing included): stacked {cpu_stack:.1f} s, "
              f"one net (after) {cpu_after:.1f} s: ratio {cpu_stack / cpu_after:.2f}x")
        print(f"  ratio stacked {k}-member epoch / one net's epoch = {t_stack / t_one:.2f}x (issue target <= 2x; "
              f"{k} separate fits: {k}x); whole fit: {total_stack / single_fit:.2f}x")
        print(f"  member-epochs per second: stacked {k / t_stack:.2f}, one net alone {1 / t_one:.2f} "
              f"({t_one * k / t_stack:.2f}x)")
    sets = [WeightedSet(p, None if weights is None else w) for p, w in zip(pieces, weights or pieces)]
    floor, steps = bare_steps(model, sets, y, args.batch_size, args.epochs, n_jobs)
    result.update(bare_loop_s_per_epoch=floor, steps_per_epoch=steps)
    print(f"  bare PyTorch loop, same module and batches (merging on; no skorch, batches gathered beforehand): "
          f"{floor:7.3f} s per epoch, {1e3 * floor / steps:.2f} ms per step of {steps}; sklearn-atomsets "
          f"{1e3 * result['ours_merged_s_per_epoch'] / steps:.2f} ms per step")
    result["ratio_unmerged_over_merged"] = result["ours_unmerged_s_per_epoch"] / result["ours_merged_s_per_epoch"]
    print(f"  ratio merging off / on = {result['ratio_unmerged_over_merged']:.2f}x")
    if maml_problem is None:
        print(f"[{_load()}] maml's Keras AtomSets ...", flush=True)
        t, d, steps, n_batches = maml_keras(pieces, y, args.batch_size, args.epochs, weights)
        result.update(maml_keras_s_per_epoch=t, maml_keras_epochs_s=d,
                      ratio_maml_over_merged=t / result["ours_merged_s_per_epoch"])
        print(f"  maml AtomSets (Keras):     {t:7.3f} s per training epoch (epochs: "
              f"{', '.join(f'{x:.3f}' for x in d)} s; {steps[-1]} of {n_batches} batches per epoch)")
        target = ">= 3x" if name == "v1" else ">= 20x"
        print(f"  ratio maml / ours (merging on) = {result['ratio_maml_over_merged']:.2f}x   (issue target {target}); "
              f"maml / bare PyTorch loop = {t / floor:.2f}x")
        if "stacked_s_per_epoch" in result:
            per_member = result["stacked_s_per_epoch"] / result["stacked_members"]
            result["ratio_maml_over_stacked_member_epoch"] = t / per_member
            print(f"  ratio maml net-epoch / our stacked member-epoch = {t / per_member:.2f}x")
    else:
        print(f"  maml's AtomSets not importable, not timed ({maml_problem})")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-materials", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=30, help="mean rows per set")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per model; the first is not timed")
    parser.add_argument("--n-jobs", type=int, default=None, help="the estimator's n_jobs (torch threads; default 1)")
    parser.add_argument("--stacked", type=int, default=5, metavar="K",
                        help="v0, z: also a K-member seed ensemble trained stacked (0: not)")
    parser.add_argument("--skip-maml", action="store_true", help="time only this package")
    parser.add_argument("--cases", nargs="+", default=["synthetic"], choices=["synthetic", "v0", "z", "v1"],
                        help="synthetic sets (default), and/or the real-data cases v0, z, v1 (see above)")
    parser.add_argument("--n-structures", type=int, default=None,
                        help="v1: dielectric crystals to featurize before tiling (default: all 4764)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "sklearn_atomsets_dielectric_v1.npz"),
                        help="v1: file caching the dielectric V1 sets")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")
    if args.cases != ["synthetic"]:
        return main_real(args, argv)

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
    print(f"[{_load()}] training sklearn-atomsets with distinct-row merging off, for comparison ...")
    t_off, d_off, total_off = ours(pieces, y, args.batch_size, args.epochs, args.n_jobs, merge=False)
    print(f"  ... merging off:                   {t_off:7.2f} s per training epoch  (fit incl. packing "
          f"{total_off:.1f} s); ratio off / on = {t_off / t_ours:.2f}x (no repeated rows here: ~1x expected)")
    result = {
        "ours_unmerged_s_per_epoch": t_off, "ours_unmerged_fit_s": total_off, "ours_fit_s": total,
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


def main_real(args, argv):
    import torch
    from joblib import effective_n_jobs

    threads = effective_n_jobs(args.n_jobs)
    print(f"machine: {os.cpu_count()} CPUs; torch {torch.__version__} trains with n_jobs={args.n_jobs} "
          f"({threads} thread{'s' * (threads > 1)}); batch size {args.batch_size}; {args.epochs} epochs each, "
          "the first not timed")
    maml_problem = "--skip-maml" if args.skip_maml else _maml_importable()
    results = {"command": "python benchmarks/atomsets_epoch_speed.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), "cpus": os.cpu_count(), "torch_threads": threads,
        "batch_size": args.batch_size, "epochs": args.epochs, "cases": {}}
    for name in args.cases:
        if name == "synthetic":
            print("(the synthetic case runs alone: python benchmarks/atomsets_epoch_speed.py)")
            continue
        results["cases"][name] = real_case(name, args, args.n_jobs, maml_problem)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "atomsets_epoch_speed_real.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
