"""Coverage of the seed ensemble's std on MatBench test folds, before and after calibration.

For each task and fold: V0 element sets of the compositions (the frozen MEGNet's element
embedding, atom fractions as weights), then

- ``own splits``: ``AtomSetsEnsembleRegressor(calibrate=False)``, every member with its own
  inner validation split (the default ensemble), its raw std;
- ``shared split``: ``AtomSetsEnsembleRegressor(calibrate=True)``, the members sharing one
  inner validation split; its raw std (the members' spread) and the calibrated std
  ``std_scale_ * sqrt(std**2 + std_floor_**2)``;
- ``variance scale``: the same ensemble's raw std times ``sqrt(mean(z**2))`` of the standardised
  residuals z on the same shared validation rows (the simple alternative; not the library's);
- ``interval``: the same ensemble's ``predict_interval(X, coverage=p)`` (split-conformal
  quantiles of the shared validation rows' errors in calibrated std), its "within 1 std" and
  "within 2 std" the intervals at the normal's probabilities of 1 and 2 std (0.683, 0.954).

Everything the calibration uses comes from the training part of the fold (its inner
validation rows); the test fold is only predicted and scored. Prints one table (coverage
at 1 and 2 std, pooled over the folds run, nominal 0.683 and 0.954; for the intervals beside it the
coverage's mean ± std were held-out and test rows exchangeable, ``conformal_spread``) and writes
``results/calibration_coverage.json`` and ``results/calibration_coverage.png`` (observed
vs. nominal coverage of central intervals on the test folds).

    MATMINER_DATA=/work/shared/data/matbench python benchmarks/calibration_coverage.py \
        --tasks matbench_steels matbench_jdft2d matbench_expt_gap --folds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

from sklearn_atomsets import (
    AtomSetsEnsembleRegressor,
    AtomSetsRegressor,
    MEGNetElementSetFeaturizer,
    interval_coverage,
    interval_quantile,
)
from sklearn_atomsets.matbench import load_matbench_composition_task

RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = np.linspace(0.05, 0.95, 19)
#: the probabilities of 1 and 2 normal std: what the interval variant is scored at
ONE_TWO = (float(norm.cdf(1) - norm.cdf(-1)), float(norm.cdf(2) - norm.cdf(-2)))


def member(args):
    return AtomSetsRegressor(max_epochs=args.max_epochs, patience=args.patience, batch_size=args.batch_size,
                             validation_fraction=args.validation_fraction, n_jobs=1)


def run_fold(task, sets, fold, args):
    train, test = task.folds[fold]
    y = task.targets.to_numpy(dtype=float)
    X_train, X_test = [sets[i] for i in train], [sets[i] for i in test]
    out = {"y": y[test].tolist()}
    start = time.perf_counter()
    own = AtomSetsEnsembleRegressor(member(args), n_estimators=args.members, random_state=fold).fit(X_train, y[train])
    mean, std = own.predict(X_test, return_std=True)
    out["own"] = {"mean": mean.tolist(), "std": std.tolist()}
    shared = AtomSetsEnsembleRegressor(member(args), n_estimators=args.members, random_state=fold,
                                       calibrate=True).fit(X_train, y[train])
    mean, std = shared.predict(X_test, return_std=True)
    raw = np.stack([e.predict(X_test) for e in shared.estimators_]).std(axis=0)
    # the variance scale, from the same held-out rows of the training part
    rows = shared.validation_indices_
    members = np.stack([e.predict([X_train[i] for i in rows]) for e in shared.estimators_])
    z = (y[train][rows] - members.mean(axis=0)) / members.std(axis=0)
    variance_scale = float(np.sqrt(np.mean(z[np.isfinite(z)] ** 2)))
    out["shared_raw"] = {"mean": mean.tolist(), "std": raw.tolist()}
    out["calibrated"] = {"mean": mean.tolist(), "std": std.tolist()}
    out["variance_scale"] = {"mean": mean.tolist(), "std": (raw * variance_scale).tolist()}
    # predict_interval's half-width, q * calibrated std, from the std predicted above (one predict, not 21)
    out["interval"] = {"mean": mean.tolist(),
                       "halfwidth": [(interval_quantile(shared.calibration_scores_, p) * std).tolist()
                                     for p in (*ONE_TWO, *LEVELS)]}
    out["std_scale"], out["std_floor"] = float(shared.std_scale_), float(shared.std_floor_)
    out["variance_scale_factor"] = variance_scale
    out["n_calibration_rows"] = int(len(rows))
    out["n_test"] = int(len(test))
    out["validation_coverage"] = shared.calibration_coverage_
    out["seconds"] = time.perf_counter() - start
    return out


def conformal_spread(n_calibration, n_test, p):
    """Mean and std of the pooled test coverage that split-conformal intervals at probability ``p`` have
    when the held-out and test rows are exchangeable: per fold (``n_calibration[i]`` held-out rows,
    ``n_test[i]`` test rows) the interval's coverage is Beta(k, n + 1 - k) with k = ceil((n + 1) p)
    (1 where k > n: the quantile is infinite), its test hits beta-binomial; the folds are independent.
    What a run's observed coverage should be compared with before calling it miscalibrated."""
    hits_mean = hits_var = 0.0
    for n, m in zip(n_calibration, n_test):
        k = int(np.ceil((n + 1) * p))
        if k > n:
            hits_mean += m
            continue
        a, b = k, n + 1 - k
        mu, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
        hits_mean += m * mu
        hits_var += m * mu * (1 - mu) + m * (m - 1) * var
    total = float(sum(n_test))
    return hits_mean / total, float(np.sqrt(hits_var)) / total


def exchangeable_columns(n_calibration, n_test):
    """The table's ``exchangeable1`` / ``exchangeable2`` entries: :func:`conformal_spread` at ONE_TWO."""
    return {f"exchangeable{i}": conformal_spread(n_calibration, n_test, p) for i, p in zip((1, 2), ONE_TWO)}


def coverage_table(results):
    rows = []
    for name, folds in results.items():
        y = np.concatenate([np.asarray(f["y"]) for f in folds.values()])
        for variant in ("own", "shared_raw", "variance_scale", "calibrated", "interval"):
            mean = np.concatenate([np.asarray(f[variant]["mean"]) for f in folds.values()])
            if variant == "interval":  # half-widths at ONE_TWO, then at LEVELS
                widths = np.concatenate([np.asarray(f[variant]["halfwidth"]) for f in folds.values()], axis=1)
                covered = [float(interval_coverage(y, mean, w)) for w in widths]
                cov1, cov2, curve = covered[0], covered[1], covered[2:]
                spread = exchangeable_columns([f["n_calibration_rows"] for f in folds.values()],
                                              [len(f["y"]) for f in folds.values()])
            else:
                std = np.concatenate([np.asarray(f[variant]["std"]) for f in folds.values()])
                cov1, cov2 = float(interval_coverage(y, mean, std, 1)), float(interval_coverage(y, mean, std, 2))
                curve = [float(interval_coverage(y, mean, std, norm.ppf(0.5 + p / 2))) for p in LEVELS]
                spread = {}
            rows.append({"task": name, "variant": variant, "n_test": len(y), "mae": float(np.abs(y - mean).mean()),
                         "cov1": cov1, "cov2": cov2, "curve": curve, **spread})
    return rows


def print_table(rows):
    """The coverage table; for the intervals also the coverage that exchangeable held-out and test rows would
    give (mean ± std, :func:`conformal_spread`), what an observed miss is measured against."""
    print("| task | std | n test | MAE | within 1 std | within 2 std | exchangeable: 1 std | 2 std |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        expected = [f"{r[k][0]:.3f} ± {r[k][1]:.3f}" if k in r else "" for k in ("exchangeable1", "exchangeable2")]
        print(f"| {r['task']} | {r['variant']} | {r['n_test']} | {r['mae']:.4g} | {r['cov1']:.3f} | {r['cov2']:.3f} | "
              f"{' | '.join(expected)} |")


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 4), squeeze=False)
    styles = {"own": ("own splits, raw std", "C3"), "shared_raw": ("shared split, raw std", "C1"),
              "variance_scale": ("variance scale", "C2"), "calibrated": ("calibrated (std_scale_, std_floor_)", "C0"),
              "interval": ("predict_interval (conformal)", "C4")}
    for ax, task in zip(axes[0], tasks):
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="ideal")
        for r in rows:
            if r["task"] == task:
                label, colour = styles[r["variant"]]
                ax.plot(LEVELS, r["curve"], "o-", ms=3, color=colour, label=label)
        ax.set_title(f"{task} (test folds, n={next(r['n_test'] for r in rows if r['task'] == task)})", fontsize=9)
        ax.set_xlabel("nominal central-interval probability")
        ax.set_ylabel("observed fraction of test errors inside")
        ax.set_aspect("equal")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["matbench_steels", "matbench_jdft2d", "matbench_expt_gap"])
    parser.add_argument("--folds", nargs="+", type=int, default=[0])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--patience", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--out", default=str(RESULTS / "calibration_coverage"))
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="only redraw one plot (--out.png) from the tables of earlier runs' JSON files")
    args = parser.parse_args()
    if args.combine:
        rows = []
        for path in args.combine:
            run = json.loads(Path(path).read_text())
            for r in run["table"]:
                if r["variant"] == "interval" and "exchangeable1" not in r:  # a run written before the spread
                    folds = run["folds"][r["task"]]
                    if all("n_test" in f for f in folds.values()):
                        n_test = [f["n_test"] for f in folds.values()]
                    else:  # runs before n_test was recorded: the official folds' sizes (the task loaded once)
                        official = load_matbench_composition_task(r["task"]).folds
                        n_test = [len(official[int(k)][1]) for k in folds]
                    r.update(exchangeable_columns([f["n_calibration_rows"] for f in folds.values()], n_test))
                rows.append(r)
        print_table(rows)
        plot(rows, f"{args.out}.png")
        print(f"\nwrote {args.out}.png")
        return
    results = {}
    for name in args.tasks:
        task = load_matbench_composition_task(name)
        sets = [row[0] for row in MEGNetElementSetFeaturizer().transform(list(task.inputs))]
        results[name] = {}
        for fold in args.folds:
            results[name][fold] = run_fold(task, sets, fold, args)
            f = results[name][fold]
            print(f"{name} fold {fold}: std_scale_ {f['std_scale']:.3g}, std_floor_ {f['std_floor']:.3g} "
                  f"(variance scale {f['variance_scale_factor']:.3g}), test MAE {np.abs(np.subtract(f['y'], f['calibrated']['mean'])).mean():.3g}, "
                  f"{f['n_calibration_rows']} calibration rows, {f['seconds']:.0f} s", flush=True)
    rows = coverage_table(results)
    print(f"\nCoverage of the test errors, pooled over folds {args.folds} (nominal: 1 std 0.683, 2 std 0.954); "
          f"{args.members} members, max_epochs {args.max_epochs}, patience {args.patience}, "
          f"validation_fraction {args.validation_fraction}\n")
    print_table(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{args.out}.json", "w") as fh:
        json.dump({"args": vars(args), "table": rows,
                   "folds": {t: {k: {key: v for key, v in f.items() if key in ("std_scale", "std_floor", "variance_scale_factor",
                                                                                  "n_calibration_rows", "n_test",
                                                                                  "validation_coverage", "seconds")}
                                     for k, f in fs.items()} for t, fs in results.items()}}, fh, indent=1)
    plot(rows, f"{args.out}.png")
    print(f"\nwrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
