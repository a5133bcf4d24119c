"""What the cheaper composition-only protocol costs in accuracy, measured against the full protocol on a subset.

    python benchmarks/composition_protocol.py                       # mp_e_form subset, AtomSets-V0 (resumes)
    python benchmarks/composition_protocol.py --task matbench_mp_gap --n-train 20000 --model AtomSets
    python benchmarks/composition_protocol.py --summary-only        # the summary of what is on disk

The six composition-only MatBench tasks have 10^4-10^5 rows; with the structure tasks' protocol (3 seeds,
patience 200 epochs, cap 2000 epochs, 6 selection candidates) they are most of the plan's hours, because an
epoch's optimizer steps grow with the rows while patience and cap are counted in epochs. The cheaper
protocol (issue 35, item 3) counts patience and cap in optimizer steps instead -- the number of steps the
full protocol gives the reference composition task, expt_gap (4604 rows: 26 steps an epoch at batch 128
after the test fold and the inner 10% are held out, so patience 200 epochs ~ 5200 steps and cap 2000 epochs
~ 52000 steps) -- runs one seed, and keeps of the candidates the L1 loss (chosen in 27 of expt_gap's 30
full-protocol selections for AtomSets and AtomSets-V0) with both readouts.

This script fits both protocols on one official fold of a large task with the training part cut to a random
subset (``--n-train`` rows, drawn with ``numpy.random.default_rng(0)``), scores every candidate on the whole
test fold, and prints per protocol: each seed's validation-selected test MAE (the leaderboard's metric), the
candidates' epochs, and the fit seconds (one thread; measured side by side in one run, so the ratio holds
on a busy machine). The test fold is read only after each fit is done and never chooses anything: the
selection is made on each candidate's inner-validation score exactly as ``select_protocol`` makes it.
Each fitted candidate's record is appended to ``<out>/<task>_<model>_<n_train>.jsonl`` as it is done, so an
interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from estimate_protocol_time import COMPOSITION_PROTOCOL, train_steps  # noqa: E402  (benchmarks/)

OUT = HERE / "results" / "studies" / "composition_protocol"

FULL = {"seeds": (0, 1, 2), "grid": {"loss": ("mse", "mae", "huber"), "readout": ("mean", "set2set")},
        "patience": 200, "max_epochs": 2000}
PATIENCE_STEPS, MAX_STEPS = COMPOSITION_PROTOCOL["patience_steps"], COMPOSITION_PROTOCOL["max_steps"]
CHEAP = {"seeds": (0,), "grid": {"loss": ("mae",), "readout": ("mean", "set2set")}}
steps_per_epoch = train_steps


def epochs_for(steps, n_train):
    return max(1, -(-steps // train_steps(n_train)))


def load(task_name, fold, n_train):
    from sklearn_atomsets.matbench import load_matbench_composition_task

    task = load_matbench_composition_task(task_name)
    X_train, y_train, X_test, y_test = task.split(fold)
    keep = np.sort(np.random.default_rng(0).choice(len(y_train), size=min(n_train, len(y_train)), replace=False))
    return task.info, list(X_train.iloc[keep]), y_train.to_numpy()[keep], list(X_test), y_test.to_numpy()


def run(args):
    from sklearn_atomsets.matbench import MODELS, TrainingSettings, candidate_configs
    from sklearn_atomsets.matbench.selection import _fit_configs

    os.environ.setdefault("MATMINER_DATA", str(HERE.parent.parent / "shared" / "data" / "matbench"))
    import torch

    torch.set_num_threads(1)
    info, X_train, y_train, X_test, y_test = load(args.task, args.fold, args.n_train)
    out = Path(args.out) / f"{args.task}_{args.model}_{args.n_train}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["protocol"], r["seed"], json.dumps(r["config"], sort_keys=True)) for r in _records(out)}
    featurizer = MODELS[args.model].featurizer(info)
    start = time.perf_counter()
    F_train, F_test = featurizer.fit_transform(X_train, y_train), featurizer.transform(X_test)
    print(f"{args.task} fold {args.fold}: {len(y_train)} training rows of the fold (random subset), "
          f"{len(y_test)} test rows; featurized in {time.perf_counter() - start:.0f} s", flush=True)
    n = len(y_train)
    protocols = {"full": (FULL, TrainingSettings(patience=FULL["patience"], max_epochs=FULL["max_epochs"])),
                 "cheap": (CHEAP, TrainingSettings(patience=epochs_for(PATIENCE_STEPS, n),
                                                   max_epochs=epochs_for(MAX_STEPS, n)))}
    for name in args.protocols:
        spec, settings = protocols[name]
        configs = candidate_configs(args.model, info, spec["grid"])
        for seed in spec["seeds"]:
            todo = [c for c in configs if (name, seed, json.dumps(c, sort_keys=True)) not in done]
            if not todo:
                continue
            print(f"{name}: seed {seed}, {len(todo)} candidates, patience {settings.patience} epochs, "
                  f"cap {settings.max_epochs} epochs ({steps_per_epoch(n)} steps an epoch)", flush=True)

            def record(i, model, rec, name=name, seed=seed, settings=settings):
                pred = model.predict(F_test)  # the test fold, read once this candidate is fitted
                row = {"protocol": name, "seed": seed, "config": rec["config"], "n_train": n,
                       "patience": settings.patience, "max_epochs": settings.max_epochs,
                       "steps_per_epoch": steps_per_epoch(n), **{k: rec[k] for k in (
                           "validation_score", "best_epoch", "epochs_run", "hit_cap", "fit_s") if k in rec},
                       "stack": rec.get("stack", 1), "test_mae": float(np.mean(np.abs(pred - y_test)))}
                with open(out, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(f"  {rec['config']}: validation {row['validation_score']:.4g}, test {row['test_mae']:.4g}, "
                      f"best epoch {row['best_epoch']}, {row['epochs_run']} epochs, {row['fit_s']:.0f} s", flush=True)

            _fit_configs(args.model, info, F_train, y_train, todo, settings, seed, on_fitted=record)
    summary(out)


def _records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()] if Path(path).is_file() else []


def summary(path):
    rows = _records(path)
    if not rows:
        print(f"{path}: nothing recorded yet")
        return
    print(f"\n{path.name}: the validation-selected candidate's test MAE per seed (selection on inner validation only)")
    seconds = {}
    for protocol in ("full", "cheap"):
        mine = [r for r in rows if r["protocol"] == protocol]
        if not mine:
            continue
        scores = []
        for seed in sorted({r["seed"] for r in mine}):
            cands = [r for r in mine if r["seed"] == seed]
            best = min(cands, key=lambda r: r["validation_score"])
            scores.append(best["test_mae"])
            print(f"  {protocol:5s} seed {seed}: {len(cands)} candidates, chosen {best['config']}: test MAE "
                  f"{best['test_mae']:.4f} (best epoch {best['best_epoch']}, {best['epochs_run']} epochs; patience "
                  f"{best['patience']}, cap {best['max_epochs']} epochs)")
            if protocol == "full":  # the same seed's selection restricted to the cheap protocol's candidates
                l1 = [r for r in cands if r["config"].get("loss") == "mae"]
                if l1:
                    b = min(l1, key=lambda r: r["validation_score"])
                    print(f"        same fits, L1 candidates only: chosen {b['config']}: test MAE {b['test_mae']:.4f}")
        seconds[protocol] = sum(r["fit_s"] for r in mine)
        spread = f" ± {statistics.stdev(scores):.4f} (seed std)" if len(scores) > 1 else ""
        print(f"  {protocol}: mean test MAE {statistics.mean(scores):.4f}{spread} over {len(scores)} seed(s); "
              f"fit time {seconds[protocol]:.0f} s ({len(mine)} candidate fits)")
    if len(seconds) == 2:
        print(f"  fit time, cheap / full: {seconds['cheap'] / seconds['full']:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="matbench_mp_e_form")
    parser.add_argument("--model", default="AtomSets-V0")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--protocols", nargs="+", default=["cheap", "full"], choices=["cheap", "full"])
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if args.summary_only:
        summary(Path(args.out) / f"{args.task}_{args.model}_{args.n_train}.jsonl")
    else:
        run(args)


if __name__ == "__main__":
    main()
