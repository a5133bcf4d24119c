"""Command line: ``python -m sklearn_atomsets`` (or ``sklearn-atomsets``).

``matbench`` (the default): run models on MatBench tasks with the official folds and print
per-fold scores next to the leaderboard anchors (default: AtomSets-V0 on matbench_steels).
``encode``: run the frozen parent on crystal structures (default: the crystals pymatgen
ships) and print its predictions and the shapes of the AtomSets feature hierarchy.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path


def _pymatgen_structures():
    from pymatgen.core import Structure

    folder = Path(importlib.util.find_spec("pymatgen").submodule_search_locations[0]) / "util" / "structures"
    return [(p.stem, Structure.from_file(p)) for p in sorted(folder.glob("*.json"))]


def encode(args):
    from pymatgen.core import Structure

    from . import MEGNetEncoder

    if args.files:
        named = [(Path(f).name, Structure.from_file(f)) for f in args.files]
    else:
        named = _pymatgen_structures()
    encoder = MEGNetEncoder(args.parent)
    start = time.perf_counter()
    out = encoder.encode([s for _, s in named], on_error="nan")
    seconds = time.perf_counter() - start
    parent = encoder.parent_
    unit = parent.metadata.get("unit", "")
    print(f"parent: {parent.name} ({parent.path}), cutoff {parent.cutoff} A")
    print(f"{'structure':<24} {'sites':>5}  prediction ({unit})")
    for k, (name, structure) in enumerate(named):
        value = "failed: " + out.errors[k] if k in out.errors else f"{out['prediction'][k, 0]: .4f}"
        print(f"{name:<24} {len(structure):>5}  {value}")
    print("\nfeature shapes (first structure that encoded):")
    first = int(out.ok.argmax()) if out.ok.any() else None
    for name in out.names:
        value = out[name][first] if first is not None else None
        print(f"  {name:<13} {'' if value is None else tuple(value.shape)}")
    print(f"\nencoded {out.ok.sum()} of {len(out)} structures in {seconds:.2f} s")
    return 0


def matbench(args):
    from .matbench import MATBENCH_TASKS, MODELS, TrainingSettings, parse_selection, run_matbench_task, summary_lines

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.ensemble < 1:
        print(f"--ensemble should be at least 1, got {args.ensemble}")
        return 2
    for flag, steps in (("--patience-steps", args.patience_steps), ("--max-steps", args.max_steps)):
        if steps is not None and steps < 1:
            print(f"{flag} should be a positive number of optimizer steps, got {steps}")
            return 2
    if args.selected_from is not None:
        if args.select is None or args.ensemble < 2:
            print("--selected-from reuses single-net selections for ensembles grown from the selected net: "
                  "it needs --select and --ensemble K (K > 1)")
            return 2
        missing = [p for p in args.selected_from if not os.path.exists(p)]
        if missing:
            print(f"--selected-from: no such file or folder: {', '.join(missing)}")
            return 2
    settings = TrainingSettings(max_epochs=args.max_epochs, patience=args.patience, loss=args.loss,
                                readout=args.readout, lr=args.lr, weight_decay=args.weight_decay, dropout=args.dropout,
                                lr_schedule=args.lr_schedule, standardize_features=args.standardize_features,
                                ensemble=args.ensemble, threshold=args.threshold,
                                patience_steps=args.patience_steps, max_steps=args.max_steps)
    try:
        selection = None if args.select is None else parse_selection(args.select)
    except ValueError as exc:
        print(exc)
        return 2
    models = None if args.models == ["all"] else args.models
    tasks = args.tasks
    for task in tasks:
        if task not in MATBENCH_TASKS:
            print(f"unknown task {task!r}; choose from {sorted(MATBENCH_TASKS)}")
            return 2
    for name in models or []:
        if name not in MODELS:
            print(f"unknown model {name!r}; choose from {list(MODELS)}")
            return 2
    start = time.perf_counter()
    for task in tasks:
        try:
            result = run_matbench_task(task, models=models, folds=args.folds, settings=settings, out_dir=args.out,
                                       seeds=args.seeds, selection=selection, composition_only=args.composition_only,
                                       selected_from=args.selected_from, resume=args.resume,
                                       feature_cache=args.feature_cache)
        except (FileNotFoundError, ModuleNotFoundError) as exc:
            hint = ""
            if not args.composition_only and MATBENCH_TASKS[task].input == "structure":
                hint = " (its composition-only copy runs with --composition-only)"
            print(f"cannot run {task}: {exc}{hint}")
            return 1
        print("\n".join(summary_lines(result)))
        for note in result["notes"]:
            print(f"  note: {note}")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="sklearn-atomsets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("encode", help="featurize structures with the frozen parent model")
    p.add_argument("files", nargs="*", help="structure files pymatgen can read (default: pymatgen's own)")
    p.add_argument("--parent", default="Eform_MP_2019", help="parent model name or .hdf5 path")
    p.set_defaults(func=encode)
    m = sub.add_parser("matbench", help="MatBench v0.1 tasks on their official folds")
    m.add_argument("--tasks", nargs="+", default=["matbench_steels"])
    m.add_argument("--models", nargs="+", default=["AtomSets-V0"], help="model names, or 'all'")
    m.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    m.add_argument("--max-epochs", type=int, default=2000,
                   help="epoch cap of every network fit (each fit records whether it hit it)")
    m.add_argument("--patience", type=int, default=200)
    m.add_argument("--patience-steps", type=int, default=None, metavar="N",
                   help="patience in optimizer steps instead of epochs: N steps of the task's training folds "
                        "(less the inner 10%%, in minibatches), rounded up to whole epochs; replaces --patience")
    m.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="epoch cap in optimizer steps, turned into epochs the same way; replaces --max-epochs")
    m.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="one run per seed (inner validation split and initialisation)")
    m.add_argument("--select", nargs="*", default=None, metavar="NAME=V1,V2",
                   help="choose each fit's protocol on inner-validation scores among these candidates "
                        "(NAME: loss, readout, lr, weight_decay, dropout, lr_schedule, standardize_features); --select alone: "
                        "loss=mse,mae,huber readout=mean,set2set")
    m.add_argument("--composition-only", action="store_true",
                   help="run on the task's composition-only copy (composition_only/<task>.crabnet.csv.gz)")
    m.add_argument("--lr", type=float, default=1e-3)
    m.add_argument("--weight-decay", type=float, default=0.0)
    m.add_argument("--dropout", type=float, default=0.0)
    m.add_argument("--lr-schedule", default="none", choices=["none", "plateau"],
                   help="'plateau': halve the learning rate when the inner-validation score stalls for patience // 4 "
                        "epochs (down to lr / 100)")
    m.add_argument("--standardize-features", action="store_true",
                   help="standardise the networks' inputs (set rows, f): each feature over the training fold's rows")
    m.add_argument("--loss", default="auto", choices=["auto", "mse", "mae", "huber"],
                   help="regression training loss (classifiers always use cross-entropy)")
    m.add_argument("--readout", default="mean", choices=["mean", "set2set"], help="AtomSets readout")
    m.add_argument("--ensemble", type=int, default=1, metavar="K",
                   help="fit each network model (AtomSets-*, MLP-*) as a seed ensemble of K nets, averaged; its "
                        "inner-validation score is the mean of the members' (each on its own inner split); with "
                        "--select, the configuration is chosen on single nets and the chosen net is the first "
                        "member (K-1 more fits; its score is the chosen net's); the results name it '<model> xK' "
                        "and record K and the members' seeds (default 1: one net)")
    m.add_argument("--selected-from", nargs="+", default=None, metavar="PATH",
                   help="with --select --ensemble K: result files or folders of single-net runs of the same settings "
                        "and grid; a fit whose selection they record (same model, seed and fold) reuses it and fits "
                        "only the chosen configuration again, as the first member; other fits select as usual")
    m.add_argument("--threshold", default="0.5", choices=["0.5", "validation"],
                   help="network classifiers' decision threshold: matbench's 0.5, or the one that maximises "
                        "balanced accuracy (the leaderboard's labels ROC-AUC) on each net's inner validation split; "
                        "the results name such a model '<model> (validation threshold)'")
    m.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    m.add_argument("--out", default=None, help="folder for <task>.json results (written after every fit)")
    m.add_argument("--resume", action="store_true",
                   help="resume an interrupted run: fits that --out's file records for the same model, settings "
                        "and grid (same seed and fold) are kept, not fitted again")
    m.add_argument("--feature-cache", default=None, metavar="DIR",
                   help="folder for the forest baselines' features of a whole task, featurized once and read by "
                        "later runs of other folds or seeds (same inputs, featurizers and versions), and, in its "
                        "parents/ subfolder, the parents' outputs per structure (read by later runs on the same "
                        "structures and parent)")
    m.set_defaults(func=matbench)
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["matbench", *(argv or [])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
