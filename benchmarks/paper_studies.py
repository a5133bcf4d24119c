"""The AtomSets paper's studies beyond its main table, on the data this machine has.

    python benchmarks/paper_studies.py                       # all four studies
    python benchmarks/paper_studies.py --processes 2         # the same, one process per core
    python benchmarks/paper_studies.py --studies parents     # one of them
    python benchmarks/paper_studies.py --plots-only          # redraw from the JSON files

1. ``convergence`` (paper Figs 2-3): metric vs training-set size, transfer-learned models
   against their counterparts without transfer learning.
2. ``extrapolation`` (paper Fig. 4): the top 10% of target values held out; |error| inside
   and outside the training range.
3. ``parents`` (paper Fig. 5): AtomSets-V1 with features of three different parents.
4. ``structure_only`` (paper Supplementary Table 7): every element replaced by H.

Each study writes ``results/studies/<study>.json`` (settings, per-run scores, wall time)
and ``results/plots/study_<study>.png``; the docs redraw the plots from the JSON files.
Repeats use the official MatBench folds: repeat k trains on (a sample of) fold k's
training part and is scored on fold k's test part, so the test sets are the official ones.
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
RESULTS = HERE / "results" / "studies"
PLOTS = HERE / "results" / "plots"
SHARED_MODELS = HERE.parent.parent / "shared" / "models" / "megnet"

STUDIES = ("convergence", "extrapolation", "parents", "structure_only")

# Training protocol of every fit (the MatBench run's; the paper trains longer).
MAX_EPOCHS, PATIENCE = 500, 100
SIZES = (100, 200, 400, 600, 1000, 2000)
FULL_FOLD_UP_TO = 5000  # the whole training fold is one more point where it is this small,
LARGEST_SAMPLE = 4000  # else a sample of this size
N_REPEATS = 5

# task -> (models compared, composition-only copy?)
CONVERGENCE_TASKS = {
    "matbench_expt_gap": (("AtomSets", "AtomSets-V0"), False),
    "matbench_glass": (("AtomSets", "AtomSets-V0"), False),
    "matbench_log_kvrh": (("AtomSets", "AtomSets-V0"), True),
    "matbench_mp_e_form": (("AtomSets", "AtomSets-V0"), True),
    "matbench_dielectric": (("AtomSets-V0", "MLP-f", "AtomSets-V1"), False),
    "matbench_phonons": (("AtomSets-V0", "MLP-f", "AtomSets-V1"), False),
    "matbench_jdft2d": (("AtomSets-V0", "MLP-f", "AtomSets-V1"), False),
}
# the paper's pairs: a transfer-learned model and the model it should beat
TL_PAIRS = {"AtomSets-V0": "AtomSets", "AtomSets-V1": "MLP-f"}

EXTRAPOLATION_TASKS = {
    "matbench_log_kvrh": (("AtomSets", "AtomSets-V0"), True),
    "matbench_dielectric": (("AtomSets", "AtomSets-V0", "AtomSets-V1"), False),
}
STRUCTURE_TASKS = ("matbench_dielectric", "matbench_phonons", "matbench_jdft2d")
PARENTS = ("Eform_MP_2019", "Eform_MP_2018", "logK_MP_2019")


# -- data and models ------------------------------------------------------------------------
def _task(name, composition_only):
    from sklearn_atomsets.matbench import load_matbench_composition_task, load_matbench_task

    return load_matbench_composition_task(name) if composition_only else load_matbench_task(name)


def _label(name, composition_only):
    return name + (" (composition only)" if composition_only else "")


def _settings(loss):
    from sklearn_atomsets.matbench import TrainingSettings

    return TrainingSettings(max_epochs=MAX_EPOCHS, patience=PATIENCE, loss=loss)


def _featurize(model_name, task, rows=None, **featurizer_params):
    """Features of ``rows`` (default all) with the featurizer of a named benchmark model."""
    from sklearn_atomsets.matbench import make_model

    featurizer = make_model(model_name, task.info, _settings("auto"))[0]
    featurizer.set_params(**featurizer_params)
    inputs = task.inputs if rows is None else task.inputs.iloc[rows]
    return featurizer.fit_transform(list(inputs))


def _fit_score(model_name, task, F, y, train, test, seed, loss):
    """Fit the estimator of a named model on rows ``train`` of features ``F``; score ``test``."""
    from sklearn.metrics import mean_absolute_error, roc_auc_score

    from sklearn_atomsets.matbench import make_model

    model = make_model(model_name, task.info, _settings(loss), seed=seed)[-1]
    start = time.perf_counter()
    model.fit([F[i] for i in train], y[train])
    fit_s = time.perf_counter() - start
    X_test = [F[i] for i in test]
    if task.info.kind == "regression":
        pred = model.predict(X_test)
        return float(mean_absolute_error(y[test], pred)), pred, fit_s
    proba = model.predict_proba(X_test)[:, list(model.classes_).index(True)]
    return float(roc_auc_score(y[test], proba)), proba, fit_s


def _features_by_model(task, models):
    start = time.perf_counter()
    F = {m: _featurize(m, task) for m in models}
    return F, time.perf_counter() - start


# -- 1. convergence with data size -------------------------------------------------------------
def convergence(log, loss, repeats=N_REPEATS, sizes=SIZES, tasks=None):
    out = {"study": "convergence", "sizes": list(sizes), "repeats": repeats, "tasks": {}}
    for name, (models, comp_only) in CONVERGENCE_TASKS.items():
        if tasks and name not in tasks:
            continue
        task = _task(name, comp_only)
        y = task.targets.to_numpy()
        F, featurize_s = _features_by_model(task, models)
        runs = []
        for k in range(repeats):
            train_all, test = task.folds[k]
            points = [n for n in sizes if n < len(train_all)]
            # the largest point: the whole training fold where it is small, else LARGEST_SAMPLE
            points.append(len(train_all) if len(train_all) <= FULL_FOLD_UP_TO else LARGEST_SAMPLE)
            rng = np.random.default_rng(k)
            for n in points:
                train = rng.choice(train_all, size=n, replace=False) if n < len(train_all) else train_all
                for m in models:
                    score, _, fit_s = _fit_score(m, task, F[m], y, train, test, seed=k, loss=loss)
                    size = int(n) if n < len(train_all) else "full fold"
                    runs.append({"repeat": k, "size": size, "n_train": int(n), "model": m, "score": score,
                                 "fit_s": fit_s})
                    log(f"convergence {name} n={n} repeat {k} {m}: {score:.4g} ({fit_s:.1f} s)")
        out["tasks"][_label(name, comp_only)] = {
            "task": name, "composition_only": comp_only, "metric": task.info.metric, "unit": task.info.unit,
            "n_samples": len(y), "models": list(models), "featurize_s": featurize_s, "runs": runs,
            "notes": _notes(name),
        }
    return out


def _notes(task_name):
    """The runner's notes that belong to a task's results (the mp_* leakage note)."""
    from sklearn_atomsets.matbench.results import LEAKAGE_NOTE

    return [LEAKAGE_NOTE] if task_name.startswith("matbench_mp_") else []


def convergence_summary(result):
    """Mean score per (task, model, size) and where each TL model beats its counterpart."""
    lines = []
    for label, t in result["tasks"].items():
        lower = t["metric"] == "mae"
        table = _mean_table(t["runs"])
        sizes = sorted({n for (_, n) in table})
        lines.append(f"{label} ({'MAE' if lower else 'ROC-AUC from probabilities'}, mean over repeats)")
        # files written before notes were recorded get the note from the task's name
        lines += [f"  note: {n}" for n in t.get("notes", _notes(t.get("task", label)))]
        lines.append("  " + f"{'n':>14}" + "".join(f"{n:>9}" for n in sizes))
        for m in t["models"]:
            row = "".join(f"{table[(m, n)][0]:>9.4g}" if (m, n) in table else f"{'':>9}" for n in sizes)
            lines.append(f"  {m:>14}{row}")
        for tl, base in TL_PAIRS.items():
            if tl in t["models"] and base in t["models"]:
                wins = [n for n in sizes if _better(table[(tl, n)][0], table[(base, n)][0], lower)]
                lines.append(f"  {tl} beats {base} at {len(wins)} of {len(sizes)} sizes"
                             + (f" (not at {[n for n in sizes if n not in wins]})" if len(wins) < len(sizes) else ""))
                gap = [(n, _gain(table[(tl, n)][0], table[(base, n)][0], lower)) for n in sizes]
                lines.append("  relative gain of " + tl + " by size: "
                             + ", ".join(f"{n}: {g:+.0%}" for n, g in gap))
    return lines


def _mean_table(runs):
    """{(model, mean training size): (mean score, std, repeats)}; the full folds are one point."""
    groups = {}
    for r in runs:
        groups.setdefault((r["model"], r["size"]), []).append(r)
    table = {}
    for (model, _), rs in groups.items():
        scores = [r["score"] for r in rs]
        n = int(round(np.mean([r["n_train"] for r in rs])))
        table[(model, n)] = (float(np.mean(scores)), float(np.std(scores)), len(scores))
    return table


def _better(a, b, lower):
    return a < b if lower else a > b


def _gain(tl, base, lower):
    """Relative improvement of ``tl`` over ``base`` (positive: better), on error or 1 - AUC."""
    if not lower:
        tl, base = 1 - tl, 1 - base
    return (base - tl) / base


def plot_convergence(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result["tasks"].items())
    cols = 4
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (label, t) in zip(axes.flat, tasks):
        table = _mean_table(t["runs"])
        for m in t["models"]:
            sizes = sorted(n for (mm, n) in table if mm == m)
            mean = np.array([table[(m, n)][0] for n in sizes])
            std = np.array([table[(m, n)][1] for n in sizes])
            ax.plot(sizes, mean, marker="o", ms=3, label=m)
            ax.fill_between(sizes, mean - std, mean + std, alpha=0.2)
        ax.set_xscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("training points")
        ax.set_ylabel(("MAE" + (f" ({t['unit']})" if t["unit"] else "")) if t["metric"] == "mae" else "ROC-AUC from probabilities")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle("Convergence with data size (official fold k's test set, k = 0..4; band: ±1 std)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- 2. extrapolation ---------------------------------------------------------------------------
def extrapolation(log, loss, repeats=N_REPEATS):
    out = {"study": "extrapolation", "repeats": repeats, "tasks": {}}
    for name, (models, comp_only) in EXTRAPOLATION_TASKS.items():
        task = _task(name, comp_only)
        y = task.targets.to_numpy()
        F, featurize_s = _features_by_model(task, models)
        order = np.argsort(y, kind="stable")
        top = order[int(np.ceil(0.9 * len(y))):]  # the 10% largest targets: never trained on
        rest = order[: int(np.ceil(0.9 * len(y)))]
        bottom = order[: len(y) // 2]
        scenarios = {"all below the top 10%": rest, "bottom 50% only": bottom}
        runs = []
        for scenario, pool in scenarios.items():
            for k in range(repeats):
                rng = np.random.default_rng(k)
                shuffled = rng.permutation(pool)
                n_interp = len(pool) // 5  # interpolation test: 20% of the pool
                interp, train = shuffled[:n_interp], shuffled[n_interp:]
                for m in models:
                    test = np.concatenate([interp, top])
                    _, pred, fit_s = _fit_score(m, task, F[m], y, train, test, seed=k, loss=loss)
                    err = np.abs(pred - y[test])
                    run = {"scenario": scenario, "repeat": k, "model": m, "n_train": len(train),
                           "train_max": float(y[train].max()), "mae_interpolation": float(err[:n_interp].mean()),
                           "mae_extrapolation": float(err[n_interp:].mean()), "fit_s": fit_s}
                    if k == 0:  # the points of one repeat, for the |error| vs target plot
                        run["y_test"] = y[test].tolist()
                        run["abs_error"] = err.tolist()
                    runs.append(run)
                    log(f"extrapolation {name} [{scenario}] repeat {k} {m}: interpolation MAE "
                        f"{run['mae_interpolation']:.4g}, extrapolation MAE {run['mae_extrapolation']:.4g}")
        out["tasks"][_label(name, comp_only)] = {
            "task": name, "composition_only": comp_only, "unit": task.info.unit, "models": list(models),
            "top10_threshold": float(y[top].min()), "n_extrapolation": len(top), "featurize_s": featurize_s,
            "runs": runs,
        }
    return out


def extrapolation_summary(result):
    lines = []
    for label, t in result["tasks"].items():
        lines.append(f"{label}: extrapolation set = the {t['n_extrapolation']} targets >= {t['top10_threshold']:.4g}")
        for scenario in dict.fromkeys(r["scenario"] for r in t["runs"]):
            lines.append(f"  trained on {scenario}:")
            for m in t["models"]:
                rs = [r for r in t["runs"] if r["scenario"] == scenario and r["model"] == m]
                i = [r["mae_interpolation"] for r in rs]
                e = [r["mae_extrapolation"] for r in rs]
                lines.append(f"    {m:<12} interpolation MAE {np.mean(i):.4g} ± {np.std(i):.2g}   "
                             f"extrapolation MAE {np.mean(e):.4g} ± {np.std(e):.2g}")
    return lines


def plot_extrapolation(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(label, t, s) for label, t in result["tasks"].items()
              for s in dict.fromkeys(r["scenario"] for r in t["runs"])]
    fig, axes = plt.subplots(len(result["tasks"]), 2, figsize=(10, 3.6 * len(result["tasks"])), squeeze=False)
    for ax, (label, t, scenario) in zip(axes.flat, panels):
        for m in t["models"]:
            r = next(r for r in t["runs"] if r["scenario"] == scenario and r["model"] == m and "y_test" in r)
            ax.scatter(r["y_test"], r["abs_error"], s=4, alpha=0.5, label=m)
            train_max = r["train_max"]
        ax.axvspan(train_max, max(r["y_test"]), color="grey", alpha=0.12, label="outside training range")
        ax.set_yscale("log")
        ax.set_title(f"{label}\ntrained on {scenario}", fontsize=9)
        ax.set_xlabel(f"target ({t['unit']})" if t["unit"] else "target")
        ax.set_ylabel("|error|")
        ax.legend(fontsize=7, markerscale=3)
    fig.suptitle("Extrapolation: |error| vs target value (repeat 0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- 3. parent models and 4. structure only ---------------------------------------------------
def _failed(row):
    """A row the featurizer could not make: None, NaN, or (as matminer leaves it) all NaN."""
    if row is None:
        return True
    if isinstance(row, (list, tuple)):
        return all(_failed(value) for value in row)
    return bool(np.isscalar(row) and np.isnan(row))


def _encoded(F):
    """Which rows of features ``F`` the featurizer could make."""
    return np.array([not _failed(row) for row in F])


def _v1_features(task, log, tag, **featurizer_params):
    start = time.perf_counter()
    F = _featurize("AtomSets-V1", task, **featurizer_params)
    ok = _encoded(F)
    if not ok.all():
        log(f"{tag} {task.name}: {(~ok).sum()} of {len(F)} structures cannot be encoded")
    return F, ok, time.perf_counter() - start


def _v1_on_folds(task, F, keep, loss, log, tag, repeats=N_REPEATS):
    """AtomSets-V1 on the official folds, restricted to the rows in ``keep`` (train and test)."""
    y = task.targets.to_numpy()
    scores = []
    for k in range(repeats):
        train, test = (np.asarray(part) for part in task.folds[k])
        train, test = train[keep[train]], test[keep[test]]
        score, _, fit_s = _fit_score("AtomSets-V1", task, F, y, train, test, seed=k, loss=loss)
        scores.append(score)
        log(f"{tag} {task.name} fold {k}: MAE {score:.4g} ({fit_s:.1f} s)")
    mad = float(np.mean(np.abs(y[keep] - y[keep].mean())))
    return {"folds": scores, "mean": float(np.mean(scores)), "std": float(np.std(scores)), "mad": mad,
            "mad_over_mae": mad / float(np.mean(scores))}


def _dropped(task, keep):
    """The rows left out of a comparison, by MatBench id, so the JSON says what was not scored."""
    return {"n_dropped": int((~keep).sum()), "dropped_ids": [str(i) for i in task.inputs.index[~keep]]}


def parents(log, loss, repeats=N_REPEATS, cache=None):
    """AtomSets-V1 with each parent's features, all on the rows every parent can encode.

    Parents with a 4 A cutoff (Eform_MP_2018, logK_MP_2019) cannot encode crystals with a
    site whose nearest neighbour is farther (megnet fails on them too): those rows leave
    every parent's training and test sets, so the parents are compared on the same data.
    """
    out = {"study": "parents", "model": "AtomSets-V1", "repeats": repeats, "tasks": {}}
    for name in STRUCTURE_TASKS:
        task = _task(name, False)
        features = {p: _v1_features(task, log, f"parent {p}", parent=p) for p in PARENTS}
        keep = np.logical_and.reduce([ok for _, ok, _ in features.values()])
        out["tasks"][name] = {}
        for parent, (F, _, featurize_s) in features.items():
            res = _v1_on_folds(task, F, keep, loss, log, f"parent {parent}", repeats)
            res.update(featurize_s=featurize_s, **_dropped(task, keep))
            out["tasks"][name][parent] = res
            if cache is not None and parent == PARENTS[0]:
                cache[name] = (F, res)
    return out


def parents_summary(result):
    lines = []
    for name, per_parent in result["tasks"].items():
        dropped = next(iter(per_parent.values())).get("n_dropped", 0)
        lines.append(f"{name} (AtomSets-V1, MAE over {result['repeats']} official folds"
                     + (f"; {dropped} structures some parent cannot encode left out for all" if dropped else "") + ")")
        for parent, r in per_parent.items():
            lines.append(f"  {parent:<14} MAE {r['mean']:.4g} ± {r['std']:.2g}   MAD/MAE {r['mad_over_mae']:.3g}")
        best = max(per_parent, key=lambda p: per_parent[p]["mad_over_mae"])
        lines.append(f"  best parent: {best}")
    return lines


def _mad_over_mae_bars(result, variants, title, path):
    """Grouped bars of MAD/MAE per task, one bar per variant (a parent, or elements vs H only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result["tasks"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(variants)
    for j, variant in enumerate(variants):
        values = [result["tasks"][t][variant]["mad_over_mae"] for t in tasks]
        ax.bar(np.arange(len(tasks)) + j * width, values, width, label=variant)
    ax.set_xticks(np.arange(len(tasks)) + width * (len(variants) - 1) / 2, [t.replace("matbench_", "") for t in tasks])
    ax.set_ylabel("MAD / MAE (higher is better)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_parents(result, path):
    parents_ = list(next(iter(result["tasks"].values())))
    _mad_over_mae_bars(result, parents_, "AtomSets-V1 with features from different parents", path)


def structure_only(log, loss, repeats=N_REPEATS, cache=None):
    out = {"study": "structure_only", "model": "AtomSets-V1", "parent": PARENTS[0], "repeats": repeats, "tasks": {}}
    for name in STRUCTURE_TASKS:
        task = _task(name, False)
        F_h, ok_h, featurize_h = _v1_features(task, log, "H only", structure_only=True)
        F, ok, featurize_s = _v1_features(task, log, "elements") if name not in (cache or {}) else (
            cache[name][0], _encoded(cache[name][0]), None)
        keep = ok & ok_h
        earlier = (cache or {}).get(name, (None, {}))[1]
        if earlier.get("dropped_ids") == _dropped(task, keep)["dropped_ids"]:  # the parents run, same rows
            full = earlier
        else:
            full = _v1_on_folds(task, F, keep, loss, log, "elements", repeats)
            full.update(featurize_s=featurize_s, **_dropped(task, keep))
        h_only = _v1_on_folds(task, F_h, keep, loss, log, "H only", repeats)
        h_only.update(featurize_s=featurize_h, **_dropped(task, keep))
        out["tasks"][name] = {"elements": full, "H only": h_only, "mae_ratio": h_only["mean"] / full["mean"]}
    return out


def structure_only_summary(result):
    lines = []
    for name, r in result["tasks"].items():
        lines.append(f"{name}: AtomSets-V1 MAE {r['elements']['mean']:.4g} ± {r['elements']['std']:.2g} with elements, "
                     f"{r['H only']['mean']:.4g} ± {r['H only']['std']:.2g} with every element replaced by H "
                     f"({r['mae_ratio']:.2f}x)")
    return lines


def plot_structure_only(result, path):
    _mad_over_mae_bars(result, ("elements", "H only"), "AtomSets-V1: real elements vs every element replaced by H", path)


SUMMARIES = {"convergence": convergence_summary, "extrapolation": extrapolation_summary,
             "parents": parents_summary, "structure_only": structure_only_summary}
PLOTTERS = {"convergence": plot_convergence, "extrapolation": plot_extrapolation,
            "parents": plot_parents, "structure_only": plot_structure_only}


def load_study(name, folder=RESULTS):
    path = Path(folder) / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _two_processes(args):
    """Run the convergence study and the others side by side, each as this script."""
    import subprocess

    groups = [[s for s in args.studies if s == "convergence"], [s for s in args.studies if s != "convergence"]]
    start = time.perf_counter()
    common = ["--loss", args.loss, "--threads", str(args.threads), "--out", args.out, "--plots", args.plots]
    procs = [subprocess.Popen([sys.executable, __file__, "--studies", *g, *common]) for g in groups if g]
    codes = [p.wait() for p in procs]
    print(f"total wall time {time.perf_counter() - start:.0f} s (two processes)")
    return max(codes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", nargs="+", choices=STUDIES, default=list(STUDIES))
    parser.add_argument("--loss", default="mae", choices=["mse", "mae", "huber"],
                        help="regression training loss (default mae: the metric reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default=str(RESULTS), help="folder for <study>.json")
    parser.add_argument("--plots", default=str(PLOTS), help="folder for study_<study>.png")
    parser.add_argument("--plots-only", action="store_true", help="redraw the plots from existing JSON files")
    parser.add_argument("--processes", type=int, default=1, choices=[1, 2],
                        help="2: convergence in one process, the other studies in a second (one per core)")
    args = parser.parse_args(argv)
    if args.processes == 2 and not args.plots_only:
        return _two_processes(args)
    out, plots = Path(args.out), Path(args.plots)
    out.mkdir(parents=True, exist_ok=True)
    plots.mkdir(parents=True, exist_ok=True)
    if not args.plots_only:
        import torch

        torch.set_num_threads(args.threads)
        if "SKLEARN_ATOMSETS_MODEL_DIR" not in os.environ and SHARED_MODELS.is_dir():
            os.environ["SKLEARN_ATOMSETS_MODEL_DIR"] = str(SHARED_MODELS)  # the three parents, offline
    total = time.perf_counter()
    cache = {}
    for name in args.studies:
        if args.plots_only:
            result = load_study(name, out)
            if result is None:
                print(f"no {out / name}.json to plot")
                continue
        else:
            start = time.perf_counter()
            run = globals()[name]
            kwargs = {"cache": cache} if name in ("parents", "structure_only") else {}
            result = run(lambda msg: print(msg, flush=True), args.loss, **kwargs)
            result.update(loss=args.loss, max_epochs=MAX_EPOCHS, patience=PATIENCE,
                          wall_s=time.perf_counter() - start, threads=args.threads)
            (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        PLOTTERS[name](result, plots / f"study_{name}.png")
        print("\n".join([f"== {name} ({result['wall_s']:.0f} s)", *SUMMARIES[name](result)]), flush=True)
    print(f"total wall time {time.perf_counter() - total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
