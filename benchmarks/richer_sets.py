"""Richer sets: does appending the parent's readout vector f to every site row help AtomSets?

    python benchmarks/richer_sets.py                 # run what is missing (2 processes), then summarise
    python benchmarks/richer_sets.py --summary-only  # the summary of what is on disk

The model ``AtomSets-V0+V1+f`` reads, per site, the V0 and V1 rows of the frozen MEGNet with the
structure's 96-d readout f appended (the same f on every row of a structure), so phi sees each
site together with the whole-structure feature. It runs with the full protocol of
``run_matbench.sh`` (``--select``: loss and readout chosen per fit on inner validation; 3 seeds,
the 5 official folds, patience 200, epoch cap 2000), one process per seed, into
``results/studies/richer_sets/<task>/seed<S>/``. It is compared per seed and fold with the
full protocol's ``AtomSets-V0+V1`` (same seeds, so the same inner splits and folds), and the
validation-selected row is recomputed with the new model as one more candidate (chosen on the
inner-validation scores only), paired with the table's. Test scores are only reported.
"""

from __future__ import annotations

import copy
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402  (benchmarks/report.py: loading, merging and the validation-selected row)
from study_runs import run_all, study_parser  # noqa: E402  (benchmarks/study_runs.py)

OUT = HERE / "results" / "studies" / "richer_sets"
MODEL, BASE = "AtomSets-V0+V1+f", "AtomSets-V0+V1"
TASKS = ["matbench_jdft2d"]  # the smallest structure task whose full-protocol jobs are all done
SEEDS = (0, 1, 2)
PROTOCOL = ["--select", "--max-epochs", "2000", "--patience", "200", "--threads", "1"]


def _by_fit(model):
    return {(f["seed"], f["fold"]): f for f in model["folds"]}


def _paired(mine, theirs):
    """Per seed, the mean over folds of mine - theirs; and in how many fits mine is lower."""
    return report.paired_by_seed((key[0], f["score"], theirs[key]["score"]) for key, f in mine.items())


def _line(label, model):
    return f"{label}: MAE {model['mean']:.4g} ± {model['seed_std']:.2g} over {model['n_seeds']} seeds"


def compare(study, full):
    """Lines comparing the study's run of :data:`MODEL` on one task (a loaded result) with the full
    protocol's result of that task: the paired difference from :data:`BASE` and the validation-selected
    row recomputed with :data:`MODEL` as one more candidate."""
    task = full["task"]
    mine, base = study["models"][MODEL], full["models"][BASE]
    if set(_by_fit(mine)) != set(_by_fit(base)):
        return [f"{task}: {MODEL} has run {len(mine['folds'])} of the {len(base['folds'])} fits of {BASE} so far"]
    per_seed, better = _paired(_by_fit(mine), _by_fit(base))
    lines = [_line(f"{task} {MODEL}", mine), _line(f"{task} {BASE} (full protocol)", base),
             f"  {MODEL} minus {BASE}: {statistics.fmean(per_seed):+.3g} ± {statistics.stdev(per_seed):.2g} over "
             f"seeds (per seed {', '.join(f'{x:+.3g}' for x in per_seed)}); lower in {better} of "
             f"{len(mine['folds'])} fits"]
    widened = copy.deepcopy(full)
    widened["models"] = {n: m for n, m in widened["models"].items() if not report._is_selected(n)}
    widened["models"][MODEL] = mine
    selected, old = report.validation_selected(widened), full["models"][report.SELECTED]
    per_seed, better = _paired(_by_fit(selected), _by_fit(old))
    picked = sum(f["model"] == MODEL for f in selected["folds"])
    return lines + [
        _line(f"{task} validation-selected with {MODEL} a candidate", selected),
        _line(f"{task} validation-selected of the table", old),
        f"  difference: {statistics.fmean(per_seed):+.3g} ± {statistics.stdev(per_seed):.2g} over seeds; "
        f"{MODEL} chosen in {picked} of {len(selected['folds'])} fits, lower than the table's pick in {better}"]


def summary(out=OUT, seeded=report.SEEDED_RESULTS, plan=report.PLAN):
    lines = []
    table = {r["task"]: r for r in report.load_default_results(seeded, plan=plan) if not r.get("composition_only")}
    for task in TASKS:
        if (out / task).is_dir() and task in table:
            (study,) = [r for r in report.load_results(out / task) if r["task"] == task]
            lines += compare(study, table[task])
    return lines


def main(argv=None):
    parser = study_parser(__doc__, OUT)
    args = parser.parse_args(argv)
    if not args.summary_only:
        run_all([(f"{task} seed {seed}", task, args.out / task / f"seed{seed}",
                  ["--models", MODEL, "--seeds", str(seed), *PROTOCOL]) for task in TASKS for seed in SEEDS],
                args.processes)
    print("\n".join(summary(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
